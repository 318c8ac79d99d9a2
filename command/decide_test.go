package command

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func ids() func() string {
	n := 0
	return func() string { n++; return "e" + strconv.Itoa(n) }
}

// run decides and applies commands in order, failing on any error.
func run(t testing.TB, s *SKU, cmds ...*Command) []*inventoryv1.InventoryEvent {
	t.Helper()
	var all []*inventoryv1.InventoryEvent
	next := ids()
	for _, c := range cmds {
		evs, err := decide(s, c, t0, next)
		if err != nil {
			t.Fatalf("decide %+v: %v", c, err)
		}
		for _, e := range evs {
			if err := s.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, evs...)
	}
	return all
}

func receipt(store string, q int64) *Command {
	return &Command{ID: "r-" + store + strconv.FormatInt(q, 10), Kind: KindReceipt, SKU: "A", Store: store, Quantity: q}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		setup   []*Command
		cmd     *Command
		wantErr error
		// want: store -> on_hand after, when no error
		want       map[string]int64
		wantEvents int
		wantFlag   bool
	}{
		{name: "receipt adds", cmd: receipt("S1", 5), want: map[string]int64{"S1": 5}, wantEvents: 1},
		{name: "sale within stock", setup: []*Command{receipt("S1", 5)},
			cmd:  &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 5},
			want: map[string]int64{"S1": 0}, wantEvents: 1},
		{name: "sale beyond stock is rejected", setup: []*Command{receipt("S1", 5)},
			cmd:     &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 6},
			wantErr: &InsufficientStockError{SKU: "A", Store: "S1", Requested: 6, Available: 5}},
		{name: "offline sale beyond stock is recorded and flagged", setup: []*Command{receipt("S1", 5)},
			cmd:  &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 6, AllowNegative: true},
			want: map[string]int64{"S1": -1}, wantEvents: 1, wantFlag: true},
		{name: "return adds", setup: []*Command{receipt("S1", 1)},
			cmd:  &Command{Kind: KindReturn, SKU: "A", Store: "S1", Quantity: 2},
			want: map[string]int64{"S1": 3}, wantEvents: 1},
		{name: "negative adjustment beyond stock is rejected", setup: []*Command{receipt("S1", 2)},
			cmd:     &Command{Kind: KindAdjustment, SKU: "A", Store: "S1", Quantity: -3},
			wantErr: &InsufficientStockError{SKU: "A", Store: "S1", Requested: 3, Available: 2}},
		{name: "positive adjustment adds", setup: []*Command{receipt("S1", 2)},
			cmd:  &Command{Kind: KindAdjustment, SKU: "A", Store: "S1", Quantity: 3},
			want: map[string]int64{"S1": 5}, wantEvents: 1},
		{name: "transfer moves stock in two events", setup: []*Command{receipt("S1", 4)},
			cmd:  &Command{Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 3},
			want: map[string]int64{"S1": 1, "S2": 3}, wantEvents: 2},
		{name: "transfer beyond stock is rejected", setup: []*Command{receipt("S1", 2)},
			cmd:     &Command{Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 3},
			wantErr: &InsufficientStockError{SKU: "A", Store: "S1", Requested: 3, Available: 2}},
		{name: "expected version matches", setup: []*Command{receipt("S1", 2)},
			cmd:  &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 1, CheckVersion: true, ExpectedVersion: 1},
			want: map[string]int64{"S1": 1}, wantEvents: 1},
		{name: "expected version 0 on a new SKU", cmd: &Command{Kind: KindReceipt, SKU: "A", Store: "S1", Quantity: 1, CheckVersion: true},
			want: map[string]int64{"S1": 1}, wantEvents: 1},
		{name: "expected version conflict", setup: []*Command{receipt("S1", 2), receipt("S1", 3)},
			cmd:     &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 1, CheckVersion: true, ExpectedVersion: 1},
			wantErr: &VersionConflictError{SKU: "A", Expected: 1, Current: 2}},
		// Validation bounds a command's quantity (MaxQuantity); decide does
		// not rely on it: no level ever wraps around.
		{name: "receipt of MaxInt64 onto 1 unit overflows and is refused", setup: []*Command{receipt("S1", 1)},
			cmd:     receipt("S1", math.MaxInt64),
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: 1, Delta: math.MaxInt64}},
		{name: "return onto MaxInt64 overflows", setup: []*Command{receipt("S1", math.MaxInt64)},
			cmd:     &Command{Kind: KindReturn, SKU: "A", Store: "S1", Quantity: 1},
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: math.MaxInt64, Delta: 1}},
		{name: "offline sale below MinInt64 overflows", setup: []*Command{{ID: "s", Kind: KindSale, SKU: "A", Store: "S1", Quantity: math.MaxInt64, AllowNegative: true}},
			cmd:     &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 2, AllowNegative: true},
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: -math.MaxInt64, Delta: -2}},
		{name: "transfer into a full store is refused whole", setup: []*Command{receipt("S1", 1), receipt("S2", math.MaxInt64)},
			cmd:     &Command{Kind: KindTransfer, SKU: "A", Store: "S1", ToStore: "S2", Quantity: 1},
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S2", Level: "on_hand", Current: math.MaxInt64, Delta: 1}},
		{name: "count whose variance overflows is refused", setup: []*Command{{ID: "s", Kind: KindSale, SKU: "A", Store: "S1", Quantity: math.MaxInt64, AllowNegative: true}},
			cmd:     &Command{Kind: KindCountStock, SKU: "A", Store: "S1", Args: countArgs{counted: 5}},
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: 5, Delta: math.MaxInt64}},
		{name: "positive adjustment onto MaxInt64 overflows", setup: []*Command{receipt("S1", math.MaxInt64)},
			cmd:     &Command{Kind: KindAdjustment, SKU: "A", Store: "S1", Quantity: 1},
			wantErr: &QuantityOverflowError{SKU: "A", Store: "S1", Level: "on_hand", Current: math.MaxInt64, Delta: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := domain.NewSKU("A")
			run(t, s, tt.setup...)
			before := s.Clone()
			evs, err := decide(s, tt.cmd, t0, ids())
			if tt.wantErr != nil {
				if err == nil || err.Error() != tt.wantErr.Error() || fmt.Sprintf("%T", err) != fmt.Sprintf("%T", tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != tt.wantEvents {
				t.Fatalf("%d events, want %d", len(evs), tt.wantEvents)
			}
			if s.Version != before.Version {
				t.Fatal("decide changed the state")
			}
			flagged := false
			for i, e := range evs {
				if e.GetSkuVersion() != before.Version+int64(i)+1 {
					t.Errorf("event %d version %d, want %d", i, e.GetSkuVersion(), before.Version+int64(i)+1)
				}
				flagged = flagged || e.GetAllowNegative()
				if err := s.Apply(e); err != nil {
					t.Fatal(err)
				}
			}
			for store, want := range tt.want {
				if got := s.Stores[store].OnHand; got != want {
					t.Errorf("on_hand at %s = %d, want %d", store, got, want)
				}
			}
			if flagged != tt.wantFlag {
				t.Errorf("allow_negative flag = %v, want %v", flagged, tt.wantFlag)
			}
		})
	}
}

// FuzzAggregate decides random command sequences and checks the invariants
// every projection relies on.
func FuzzAggregate(f *testing.F) {
	f.Add([]byte{2, 0, 5, 0, 0, 1, 3, 0, 4, 0, 2, 1})
	f.Add([]byte{0, 1, 9, 1, 4, 2, 7, 0, 3, 0, 250, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := domain.NewSKU("A")
		stores := []string{"S0", "S1", "S2"}
		next := ids()
		var version int64
		for i := 0; i+4 <= len(data); i += 4 {
			b := data[i : i+4]
			c := &Command{
				ID:            strconv.Itoa(i),
				Kind:          kinds()[int(b[0])%len(kinds())],
				ReservationID: "r" + strconv.Itoa(int(b[2])%3),
				TTL:           time.Minute,
				ReorderPoint:  int64(b[2] % 8),
				TargetLevel:   int64(b[2]%8) + 5,
				SKU:           "A",
				Store:         stores[int(b[1])%3],
				ToStore:       stores[(int(b[1])+1+int(b[1]>>4)%2)%3],
				Quantity:      int64(b[2]%16) + 1,
				AllowNegative: b[3]&1 == 1,
			}
			if b[3]&8 == 8 && b[3]&16 == 16 {
				// Beyond MaxQuantity: decide must refuse overflow, not wrap.
				c.Quantity = math.MaxInt64 - int64(b[2])
			}
			if c.Kind == KindAdjustment && b[3]&2 == 2 {
				c.Quantity = -c.Quantity
			}
			if c.Kind == KindCountStock {
				c.Args = countArgs{counted: int64(b[2] % 32), threshold: int64(b[3] >> 4)}
			}
			if b[3]&4 == 4 {
				c.CheckVersion, c.ExpectedVersion = true, int64(b[3]>>3)
			}
			totalBefore := total(s)
			evs, err := decide(s, c, t0, next)
			var vc *VersionConflictError
			var is *InsufficientStockError
			var qo *QuantityOverflowError
			switch {
			case errors.As(err, &vc):
				if vc.Current != s.Version || c.ExpectedVersion == s.Version {
					t.Fatalf("bad conflict %+v at version %d", vc, s.Version)
				}
				continue
			case errors.As(err, &is):
				if (c.AllowNegative && c.Kind != KindReserve) || is.Available >= is.Requested {
					t.Fatalf("rejected %+v although allowed or available: %+v", c, is)
				}
				continue
			case errors.As(err, new(*ReservationExistsError)), errors.As(err, new(*ReservationNotActiveError)):
				continue
			case errors.As(err, &qo):
				if sum, ok := addChecked(qo.Current, qo.Delta); ok {
					t.Fatalf("refused as overflow although %d%+d = %d: %+v", qo.Current, qo.Delta, sum, c)
				}
				continue
			case err != nil:
				t.Fatal(err)
			}
			for _, e := range evs {
				version++
				if e.GetSkuVersion() != version {
					t.Fatalf("version %d, want %d (gap or repeat)", e.GetSkuVersion(), version)
				}
				before := s.Stores[e.GetStoreId()]
				if e.GetOnHandAfter() != before.OnHand+e.GetQuantityDelta() {
					t.Fatalf("on_hand_after %d != %d%+d", e.GetOnHandAfter(), before.OnHand, e.GetQuantityDelta())
				}
				if e.GetReservedAfter() < 0 || e.GetReservedAfter() != before.Reserved+e.GetReservedDelta() {
					t.Fatalf("reserved %d -> %d with delta %d", before.Reserved, e.GetReservedAfter(), e.GetReservedDelta())
				}
				if e.GetQuantityDelta()-e.GetReservedDelta() < 0 && e.GetOnHandAfter()-e.GetReservedAfter() < 0 && !e.GetAllowNegative() {
					t.Fatalf("available stock went negative without the allow_negative flag: %v", e)
				}
				if err := s.Apply(e); err != nil {
					t.Fatal(err)
				}
			}
			if c.Kind == KindTransfer && total(s) != totalBefore {
				t.Fatalf("transfer changed total stock %d -> %d", totalBefore, total(s))
			}
		}
	})
}

// addChecked is a+b and whether it fits an int64.
func addChecked(a, b int64) (int64, bool) {
	s := a + b
	return s, !((b > 0 && s < a) || (b < 0 && s > a))
}

func total(s *SKU) int64 {
	var n int64
	for _, l := range s.Stores {
		n += l.OnHand
	}
	return n
}

func TestReservations(t *testing.T) {
	s := domain.NewSKU("A")
	run(t, s, receipt("S1", 5))
	hold := &Command{ID: "h", Kind: KindReserve, SKU: "A", Store: "S1", Quantity: 3, ReservationID: "cart-1", TTL: time.Minute}
	run(t, s, hold)
	if l := s.Stores["S1"]; l.OnHand != 5 || l.Reserved != 3 || l.Available() != 2 {
		t.Fatalf("after reserving 3 of 5: %+v", l)
	}
	var is *InsufficientStockError
	if _, err := decide(s, &Command{Kind: KindSale, SKU: "A", Store: "S1", Quantity: 3}, t0, ids()); !errors.As(err, &is) || is.Available != 2 {
		t.Fatalf("a sale of reserved units: %v, want InsufficientStock with 2 available", err)
	}
	if _, err := decide(s, &Command{Kind: KindReserve, SKU: "A", Store: "S1", Quantity: 1, ReservationID: "cart-1", TTL: time.Minute}, t0, ids()); !errors.As(err, new(*ReservationExistsError)) {
		t.Fatalf("a second reservation with the same id: %v", err)
	}
	if got := s.Expired(t0.Add(59*time.Second), KindReleaseReservation); len(got) != 0 {
		t.Fatalf("expired before its ttl: %v", got)
	}
	exp := s.Expired(t0.Add(time.Minute), KindReleaseReservation)
	if len(exp) != 1 || exp[0].ReservationID != "cart-1" || exp[0].Reason != "expired" || exp[0].ID != "tally:expire:cart-1:2" {
		t.Fatalf("expired at its ttl: %v", exp)
	}
	// Committing at or after expiry fails even before the release lands.
	if _, err := decide(s, &Command{Kind: KindCommitReservation, SKU: "A", ReservationID: "cart-1"}, t0.Add(time.Minute), ids()); !errors.As(err, new(*ReservationNotActiveError)) {
		t.Fatalf("commit of an expired reservation: %v", err)
	}
	evs := run(t, s, &Command{ID: "c", Kind: KindCommitReservation, SKU: "A", ReservationID: "cart-1"})
	if l := s.Stores["S1"]; l.OnHand != 2 || l.Reserved != 0 || evs[0].GetQuantityDelta() != -3 {
		t.Fatalf("after committing: %+v", l)
	}
	if _, err := decide(s, &Command{Kind: KindReleaseReservation, SKU: "A", ReservationID: "cart-1"}, t0, ids()); !errors.As(err, new(*ReservationNotActiveError)) {
		t.Fatalf("release of a committed reservation: %v", err)
	}
}
