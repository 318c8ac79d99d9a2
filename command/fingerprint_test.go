package command

import (
	"encoding/hex"
	"testing"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

func TestFingerprintChangesWithEveryFieldOfTheRequest(t *testing.T) {
	base := func() *Command {
		return &Command{
			ID: "c1", Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 3,
			CheckVersion: true, ExpectedVersion: 4, OccurredAt: t0, AllowNegative: true,
			AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED,
			UserID:           "u", Reason: "r", Metadata: map[string]string{"a": "1", "b": "2"},
			ReservationID: "res", TTL: time.Minute, ReorderPoint: 5, TargetLevel: 9,
		}
	}
	want := fingerprintOf(base())
	if want == (fingerprint{}) {
		t.Fatal("zero fingerprint")
	}
	changes := map[string]func(c *Command){
		"kind":                      func(c *Command) { c.Kind = KindSale },
		"sku":                       func(c *Command) { c.SKU = "B" },
		"store":                     func(c *Command) { c.Store = "S3" },
		"to_store":                  func(c *Command) { c.ToStore = "S3" },
		"quantity":                  func(c *Command) { c.Quantity = 4 },
		"expected_version absent":   func(c *Command) { c.CheckVersion = false },
		"expected_version value":    func(c *Command) { c.ExpectedVersion = 5 },
		"expected_version 0 vs abs": func(c *Command) { c.ExpectedVersion = 0 },
		"allow_negative":            func(c *Command) { c.AllowNegative = false },
		"adjustment_reason":         func(c *Command) { c.AdjustmentReason = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND },
		"reservation_id":            func(c *Command) { c.ReservationID = "other" },
		"ttl":                       func(c *Command) { c.TTL = 2 * time.Minute },
		"reorder_point":             func(c *Command) { c.ReorderPoint = 6 },
		"target_level":              func(c *Command) { c.TargetLevel = 10 },
		"occurred_at":               func(c *Command) { c.OccurredAt = t0.Add(time.Nanosecond) },
		"occurred_at absent":        func(c *Command) { c.OccurredAt = time.Time{} },
		"user_id":                   func(c *Command) { c.UserID = "v" },
		"reason":                    func(c *Command) { c.Reason = "s" },
		"metadata value":            func(c *Command) { c.Metadata = map[string]string{"a": "1", "b": "3"} },
		"metadata entry":            func(c *Command) { c.Metadata = map[string]string{"a": "1"} },
		// Length prefixes keep neighbouring strings apart.
		"text moved between fields": func(c *Command) { c.UserID, c.Reason = "ur", "" },
	}
	seen := map[fingerprint]string{want: "base"}
	for name, change := range changes {
		c := base()
		change(c)
		fp := fingerprintOf(c)
		if prev, dup := seen[fp]; dup {
			t.Errorf("%s: same fingerprint as %s", name, prev)
		}
		seen[fp] = name
	}
	// What does not make a different request.
	same := map[string]func(c *Command){
		"command_id":     func(c *Command) { c.ID = "c2" },
		"metadata order": func(c *Command) { c.Metadata = map[string]string{"b": "2", "a": "1"} },
		"occurred_at zone": func(c *Command) {
			c.OccurredAt = c.OccurredAt.In(time.FixedZone("x", 3600))
		},
	}
	for name, change := range same {
		c := base()
		change(c)
		if fingerprintOf(c) != want {
			t.Errorf("%s changed the fingerprint", name)
		}
	}
	// An omitted ttl is the default one.
	a, err := FromRequest(&inventoryv1.ReserveRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ReservationId: "r"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	b := *a
	b.TTL = DefaultReservationTTL
	if fingerprintOf(a) != fingerprintOf(&b) {
		t.Error("an omitted ttl differs from the default one")
	}
}

// The encoding of version 1 is fixed: fingerprints stay in the log. A change
// that moves this value breaks every retry across the upgrade.
func TestFingerprintEncodingIsStable(t *testing.T) {
	c := &Command{ID: "c1", Kind: KindSale, SKU: "A", Store: "S1", Quantity: 2, Metadata: map[string]string{"till": "7"}}
	got := fingerprintOf(c)
	const want = "75be0e9fd085ceb601521b5fd7bcd5b5"
	if h := hex.EncodeToString(got[:]); h != want {
		t.Fatalf("fingerprint %s, want %s", h, want)
	}
}

func TestEveryEventOfACommandCarriesItsFingerprint(t *testing.T) {
	s := NewSKU("A")
	run(t, s, receipt("S1", 5))
	tr := &Command{ID: "t", Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 2}
	evs := run(t, s, tr)
	want := fingerprintOf(tr)
	for _, e := range evs {
		if fingerprintOfEvent(e.GetCommandFingerprint()) != want {
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

// BenchmarkFingerprint is the cost every decided command pays for it.
func BenchmarkFingerprint(b *testing.B) {
	c := &Command{ID: "c1", Kind: KindSale, SKU: "SKU-000123", Store: "S1", Quantity: 2, UserID: "pos-7",
		Reason: "till sale", Metadata: map[string]string{"till": "7", "order": "A-10023"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = fingerprintOf(c)
	}
}
