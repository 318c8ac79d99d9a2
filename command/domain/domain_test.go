package domain_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// The kinds these tests name, with the numbers package command declares
// them with (the fingerprint encoding test depends on them). The kinds'
// decisions are tested in package command, where they are registered.
const (
	kindSale     domain.Kind = 1
	kindTransfer domain.Kind = 5
	kindRelease  domain.Kind = 8
)

func ids() func() string {
	n := 0
	return func() string { n++; return "e" + strconv.Itoa(n) }
}

// receive decides a receipt of q units at store against s by hand and
// applies it.
func receive(t testing.TB, s *domain.SKU, store string, q int64) *inventoryv1.InventoryEvent {
	t.Helper()
	d, err := domain.NewDecision(s, &domain.Command{ID: "r", SKU: s.ID, Store: store, Quantity: q}, t0, ids())
	if err != nil {
		t.Fatal(err)
	}
	e := d.Next(inventoryv1.EventType_EVENT_TYPE_RECEIPT, store, "", q, d.From())
	if err := s.Apply(e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestApplyRejectsOutOfOrderEvents(t *testing.T) {
	built := domain.NewSKU("A")
	receive(t, built, "S1", 1)
	second := receive(t, built, "S1", 2)
	s := domain.NewSKU("A")
	var ooo *domain.OutOfOrderError
	if err := s.Apply(second); !errors.As(err, &ooo) || ooo.Have != 0 || ooo.Got != 2 {
		t.Fatalf("applying version 2 to version 0: %v, want OutOfOrderError", err)
	}
	if s.Version != 0 || len(s.Stores) != 0 {
		t.Fatal("a rejected event changed the state")
	}
}

func TestCloneIsDeep(t *testing.T) {
	s := domain.NewSKU("A")
	receive(t, s, "S1", 5)
	c := s.Clone()
	receive(t, c, "S1", 1)
	if s.Version != 1 || s.Stores["S1"].OnHand != 5 {
		t.Fatalf("applying to a clone changed the original: %+v", s)
	}
}

func TestAStaleExpectedVersionIsAConflict(t *testing.T) {
	s := domain.NewSKU("A")
	receive(t, s, "S1", 5)
	c := &domain.Command{Kind: kindSale, SKU: "A", Store: "S1", Quantity: 1, CheckVersion: true, ExpectedVersion: 0}
	var vc *domain.VersionConflictError
	if _, err := domain.NewDecision(s, c, t0, ids()); !errors.As(err, &vc) || vc.Expected != 0 || vc.Current != 1 {
		t.Fatalf("expected version 0 at version 1: %v, want VersionConflictError", err)
	}
	c.ExpectedVersion = 1
	if _, err := domain.NewDecision(s, c, t0, ids()); err != nil {
		t.Fatalf("expected version 1 at version 1: %v", err)
	}
}

func TestTakeNeverSellsReservedUnitsUnlessNegativeIsAllowed(t *testing.T) {
	s := domain.NewSKU("A")
	lvl := domain.Level{OnHand: 5, Reserved: 3}
	d, _ := domain.NewDecision(s, &domain.Command{Kind: kindSale, SKU: "A", Store: "S1", Quantity: 3}, t0, ids())
	var is *domain.InsufficientStockError
	if err := d.Take(lvl, 3); !errors.As(err, &is) || is.Available != 2 || is.Requested != 3 {
		t.Fatalf("taking 3 of 2 available: %v", err)
	}
	if err := d.Take(lvl, 2); err != nil {
		t.Fatalf("taking 2 of 2 available: %v", err)
	}
	d, _ = domain.NewDecision(s, &domain.Command{Kind: kindSale, SKU: "A", Store: "S1", Quantity: 3, AllowNegative: true}, t0, ids())
	if err := d.Take(lvl, 3); err != nil {
		t.Fatalf("taking 3 of 2 available under allow_negative: %v", err)
	}
	if e := d.Next(inventoryv1.EventType_EVENT_TYPE_SALE, "S1", "", -3, lvl); !e.GetAllowNegative() || e.GetOnHandAfter() != 2 {
		t.Fatalf("a sale below available: %v, want flagged allow_negative", e)
	}
}

func TestEventsOfADecisionFollowTheSKUVersion(t *testing.T) {
	s := domain.NewSKU("A")
	receive(t, s, "S1", 5)
	at := t0.Add(-time.Hour)
	c := &domain.Command{ID: "t", Kind: kindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 2, OccurredAt: at}
	d, err := domain.NewDecision(s, c, t0, ids())
	if err != nil {
		t.Fatal(err)
	}
	out := d.Next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, "S1", "S2", -2, d.From())
	in := d.Next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN, "S2", "S1", 2, s.Stores["S2"])
	fp := domain.FingerprintOf(c)
	for i, e := range []*inventoryv1.InventoryEvent{out, in} {
		if e.GetSkuVersion() != int64(i)+2 || e.GetCommandId() != "t" || !e.GetOccurredAt().AsTime().Equal(at) ||
			!e.GetRecordedAt().AsTime().Equal(t0) || domain.FingerprintOfEvent(e.GetCommandFingerprint()) != fp {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	if s.Version != 1 {
		t.Fatal("deciding changed the state")
	}
}

func TestExpiredReleasesOldestFirstAtTheirExpiry(t *testing.T) {
	s := domain.NewSKU("A")
	receive(t, s, "S1", 5)
	for i, r := range []struct {
		id  string
		ttl time.Duration
	}{{"b", time.Minute}, {"a", 2 * time.Minute}} {
		if err := s.Apply(&inventoryv1.InventoryEvent{
			EventType: inventoryv1.EventType_EVENT_TYPE_RESERVATION_CREATED, SkuVersion: int64(i) + 2,
			StoreId: "S1", OnHandAfter: 5, ReservedAfter: int64(i) + 1, ReservedDelta: 1,
			ReservationId: r.id, ReservationExpiresAt: timestamppb.New(t0.Add(r.ttl)),
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Expired(t0.Add(59*time.Second), kindRelease); len(got) != 0 {
		t.Fatalf("expired before its ttl: %v", got)
	}
	exp := s.Expired(t0.Add(2*time.Minute), kindRelease)
	if len(exp) != 2 || exp[0].ID != "tally:expire:b:2" || exp[1].ID != "tally:expire:a:3" {
		t.Fatalf("expired at their ttl: %v", exp)
	}
	for _, c := range exp {
		if c.Kind != kindRelease || c.SKU != "A" || c.Reason != "expired" {
			t.Fatalf("expiry command %+v", c)
		}
	}
}
