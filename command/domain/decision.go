package domain

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Decision is one command being decided against a SKU: what a kind's decide
// reads the state from and builds its events with. A kind's decide must not
// change SKU or Command.
type Decision struct {
	// SKU is the state the command is decided against.
	SKU *SKU
	// Command is the command being decided.
	Command *Command
	// RecordedAt stamps the events.
	RecordedAt time.Time

	occurred time.Time
	version  int64 // of the last event made so far
	fp       Fingerprint
	newID    func() string
	err      error // the first *QuantityOverflowError of NextR or Sub
}

// Err is the first *QuantityOverflowError met while making the events: a
// decision with one must not be appended. The caller of a kind's decide
// checks it, so no kind can forget to.
func (d *Decision) Err() error { return d.err }

// add is a+b at store, or a+b wrapped and d.err set when that overflows.
func (d *Decision) add(store, level string, a, b int64) int64 {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		if d.err == nil {
			d.err = &QuantityOverflowError{SKU: d.SKU.ID, Store: store, Level: level, Current: a, Delta: b}
		}
	}
	return s
}

// Sub is a-b, a quantity computed from the command's store's level a (a
// count's variance), with an overflow recorded like NextR's.
func (d *Decision) Sub(level string, a, b int64) int64 {
	if b == math.MinInt64 {
		d.add(d.Command.Store, level, a, math.MaxInt64)
		return d.add(d.Command.Store, level, a+math.MaxInt64, 1)
	}
	return d.add(d.Command.Store, level, a, -b)
}

// NewDecision starts deciding c against s: its events will be stamped
// recordedAt (and occurred_at, unless c has its own) and named by newID. A
// command that expects another version than s has is refused here with a
// *VersionConflictError, before its kind sees it.
func NewDecision(s *SKU, c *Command, recordedAt time.Time, newID func() string) (*Decision, error) {
	if c.CheckVersion && c.ExpectedVersion != s.Version {
		return nil, &VersionConflictError{SKU: s.ID, Expected: c.ExpectedVersion, Current: s.Version}
	}
	occurred := c.OccurredAt
	if occurred.IsZero() {
		occurred = recordedAt
	}
	return &Decision{SKU: s, Command: c, RecordedAt: recordedAt, occurred: occurred,
		version: s.Version, fp: FingerprintOf(c), newID: newID}, nil
}

// From is the level of the command's store.
func (d *Decision) From() Level { return d.SKU.Stores[d.Command.Store] }

// NextR makes the SKU's next event: delta changes on_hand, rdelta
// reserved, at store whose level is lvl. Levels that would overflow make
// the decision's Err.
func (d *Decision) NextR(t inventoryv1.EventType, store, counterpart string, delta, rdelta int64, lvl Level) *inventoryv1.InventoryEvent {
	d.version++
	c := d.Command
	onHand, reserved := d.add(store, "on_hand", lvl.OnHand, delta), d.add(store, "reserved", lvl.Reserved, rdelta)
	return &inventoryv1.InventoryEvent{
		EventId:            d.newID(),
		EventType:          t,
		OccurredAt:         timestamppb.New(d.occurred),
		RecordedAt:         timestamppb.New(d.RecordedAt),
		SkuId:              d.SKU.ID,
		StoreId:            store,
		QuantityDelta:      delta,
		UserId:             c.UserID,
		Reason:             c.Reason,
		Metadata:           c.Metadata,
		CommandId:          c.ID,
		SkuVersion:         d.version,
		OnHandAfter:        onHand,
		ReservedAfter:      reserved,
		ReservedDelta:      rdelta,
		ReservationId:      c.ReservationID,
		AllowNegative:      c.AllowNegative && onHand < reserved,
		AdjustmentReason:   c.AdjustmentReason,
		CounterpartStoreId: counterpart,
		CommandFingerprint: d.fp[:],
		Actor:              c.Actor,
	}
}

// Next makes the SKU's next event, which does not change reserved.
func (d *Decision) Next(t inventoryv1.EventType, store, counterpart string, delta int64, lvl Level) *inventoryv1.InventoryEvent {
	return d.NextR(t, store, counterpart, delta, 0, lvl)
}

// Take checks that removing q units from the command's store leaves it
// non-negative (available, so reserved units are never sold twice), unless
// the command allows negative stock; else it is an *InsufficientStockError.
func (d *Decision) Take(lvl Level, q int64) error {
	if lvl.Available() < q && !d.Command.AllowNegative {
		return &InsufficientStockError{SKU: d.SKU.ID, Store: d.Command.Store, Requested: q, Available: lvl.Available()}
	}
	return nil
}
