package domain_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

func TestFingerprintChangesWithEveryFieldOfTheRequest(t *testing.T) {
	base := func() *domain.Command {
		return &domain.Command{
			ID: "c1", Kind: kindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 3,
			CheckVersion: true, ExpectedVersion: 4, OccurredAt: t0, AllowNegative: true,
			AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED,
			UserID:           "u", Reason: "r", Metadata: map[string]string{"a": "1", "b": "2"},
			ReservationID: "res", TTL: time.Minute, ReorderPoint: 5, TargetLevel: 9,
		}
	}
	want := domain.FingerprintOf(base())
	if want == (domain.Fingerprint{}) {
		t.Fatal("zero fingerprint")
	}
	changes := map[string]func(c *domain.Command){
		"kind":                      func(c *domain.Command) { c.Kind = kindSale },
		"sku":                       func(c *domain.Command) { c.SKU = "B" },
		"store":                     func(c *domain.Command) { c.Store = "S3" },
		"to_store":                  func(c *domain.Command) { c.ToStore = "S3" },
		"quantity":                  func(c *domain.Command) { c.Quantity = 4 },
		"expected_version absent":   func(c *domain.Command) { c.CheckVersion = false },
		"expected_version value":    func(c *domain.Command) { c.ExpectedVersion = 5 },
		"expected_version 0 vs abs": func(c *domain.Command) { c.ExpectedVersion = 0 },
		"allow_negative":            func(c *domain.Command) { c.AllowNegative = false },
		"adjustment_reason":         func(c *domain.Command) { c.AdjustmentReason = inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND },
		"reservation_id":            func(c *domain.Command) { c.ReservationID = "other" },
		"ttl":                       func(c *domain.Command) { c.TTL = 2 * time.Minute },
		"reorder_point":             func(c *domain.Command) { c.ReorderPoint = 6 },
		"target_level":              func(c *domain.Command) { c.TargetLevel = 10 },
		"occurred_at":               func(c *domain.Command) { c.OccurredAt = t0.Add(time.Nanosecond) },
		"occurred_at absent":        func(c *domain.Command) { c.OccurredAt = time.Time{} },
		"user_id":                   func(c *domain.Command) { c.UserID = "v" },
		"reason":                    func(c *domain.Command) { c.Reason = "s" },
		"metadata value":            func(c *domain.Command) { c.Metadata = map[string]string{"a": "1", "b": "3"} },
		"metadata entry":            func(c *domain.Command) { c.Metadata = map[string]string{"a": "1"} },
		// Length prefixes keep neighbouring strings apart.
		"text moved between fields": func(c *domain.Command) { c.UserID, c.Reason = "ur", "" },
	}
	seen := map[domain.Fingerprint]string{want: "base"}
	for name, change := range changes {
		c := base()
		change(c)
		fp := domain.FingerprintOf(c)
		if prev, dup := seen[fp]; dup {
			t.Errorf("%s: same fingerprint as %s", name, prev)
		}
		seen[fp] = name
	}
	// What does not make a different request.
	same := map[string]func(c *domain.Command){
		"command_id":     func(c *domain.Command) { c.ID = "c2" },
		"metadata order": func(c *domain.Command) { c.Metadata = map[string]string{"b": "2", "a": "1"} },
		"occurred_at zone": func(c *domain.Command) {
			c.OccurredAt = c.OccurredAt.In(time.FixedZone("x", 3600))
		},
	}
	for name, change := range same {
		c := base()
		change(c)
		if domain.FingerprintOf(c) != want {
			t.Errorf("%s changed the fingerprint", name)
		}
	}
}

// The encoding of version 1 is fixed: fingerprints stay in the log. A change
// that moves this value breaks every retry across the upgrade.
func TestFingerprintEncodingIsStable(t *testing.T) {
	c := &domain.Command{ID: "c1", Kind: kindSale, SKU: "A", Store: "S1", Quantity: 2, Metadata: map[string]string{"till": "7"}}
	got := domain.FingerprintOf(c)
	const want = "75be0e9fd085ceb601521b5fd7bcd5b5"
	if h := hex.EncodeToString(got[:]); h != want {
		t.Fatalf("fingerprint %s, want %s", h, want)
	}
}

// BenchmarkFingerprint is the cost every decided command pays for it.
func BenchmarkFingerprint(b *testing.B) {
	c := &domain.Command{ID: "c1", Kind: kindSale, SKU: "SKU-000123", Store: "S1", Quantity: 2, UserID: "pos-7",
		Reason: "till sale", Metadata: map[string]string{"till": "7", "order": "A-10023"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = domain.FingerprintOf(c)
	}
}
