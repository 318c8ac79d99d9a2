package command

import (
	"testing"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// An omitted ttl is the default one: fingerprints are of the command as
// applied.
func TestOmittedTTLFingerprintsAsTheDefault(t *testing.T) {
	a, err := FromRequest(&inventoryv1.ReserveRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ReservationId: "r"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	b := *a
	b.TTL = DefaultReservationTTL
	if domain.FingerprintOf(a) != domain.FingerprintOf(&b) {
		t.Error("an omitted ttl differs from the default one")
	}
}

func TestEveryEventOfACommandCarriesItsFingerprint(t *testing.T) {
	s := domain.NewSKU("A")
	run(t, s, receipt("S1", 5))
	tr := &Command{ID: "t", Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 2}
	evs := run(t, s, tr)
	want := domain.FingerprintOf(tr)
	for _, e := range evs {
		if domain.FingerprintOfEvent(e.GetCommandFingerprint()) != want {
			t.Fatalf("event %d fingerprint %x, want %x", e.GetSkuVersion(), e.GetCommandFingerprint(), want)
		}
	}
	r := resultOf(evs)
	if _, err := r.replay(tr); err != nil {
		t.Fatalf("identical retry: %v", err)
	}
	other := *tr
	other.Quantity = 3
	if _, err := r.replay(&other); err == nil {
		t.Fatal("retry with another quantity replayed")
	}
	// Events from before fingerprints match any retry.
	for _, e := range evs {
		e.CommandFingerprint = nil
	}
	if res, err := resultOf(evs).replay(&other); err != nil || !res.Replayed {
		t.Fatalf("retry of a command without fingerprint: %v %v", res, err)
	}
}
