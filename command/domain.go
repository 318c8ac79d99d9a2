// Package command is Tally's write side: it validates commands, decides them
// against the per-SKU aggregate, and appends the resulting InventoryEvents to
// the Kafka log through one fenced transactional writer per partition.
//
// The aggregate (this file, errors.go and the decide methods of the kinds)
// is pure: no I/O, no clock, no randomness. Each command kind is declared
// once, in kind_<name>.go (its checks, its decision, its RPC), and
// registered (kind.go); nothing else switches over kinds. The writer
// (writer.go) owns all Kafka I/O, the handler (handler.go and the generic
// path in kind.go) all RPC concerns. This package never imports projector/ or
// query/: the three parts of Tally meet only in gen/ and in the log.
package command

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Command is a validated request to change one SKU's stock.
type Command struct {
	ID    string
	Kind  Kind
	SKU   string
	Store string
	// ToStore is the destination of a transfer.
	ToStore string
	// Quantity is the units moved (> 0), or for an adjustment the signed delta.
	Quantity int64
	// CheckVersion makes the command conditional on the SKU being at
	// ExpectedVersion (0 = the SKU has no events yet).
	CheckVersion     bool
	ExpectedVersion  int64
	OccurredAt       time.Time
	AllowNegative    bool
	AdjustmentReason inventoryv1.AdjustmentReason
	UserID           string
	Reason           string
	Metadata         map[string]string
	// ReservationID names the reservation of reserve, commit and release.
	ReservationID string
	// TTL is how long a reservation holds.
	TTL time.Duration
	// ReorderPoint and TargetLevel are a reorder policy.
	ReorderPoint, TargetLevel int64
	// Args are the arguments only its kind has, set by the kind's check
	// and read by its decide: a kind added later keeps them here rather
	// than adding fields to Command.
	Args Args
}

// Args are a kind's own arguments.
type Args interface {
	// appendFingerprint appends the arguments' canonical encoding (see
	// fingerprintOf) to b.
	appendFingerprint(b []byte) []byte
}

// Reservation is units held at a store for a checkout.
type Reservation struct {
	Store     string
	Quantity  int64
	ExpiresAt time.Time
	// Version is the SKU version that created it.
	Version int64
}

// Level is one store's stock of a SKU.
type Level struct {
	OnHand   int64
	Reserved int64
}

// Available is what can still be sold or reserved.
func (l Level) Available() int64 { return l.OnHand - l.Reserved }

// SKU is the aggregate: all stores' stock of one SKU and its version. Every
// command is decided against it and every event is applied to it.
type SKU struct {
	ID      string
	Version int64
	Stores  map[string]Level
	// Reservations are the active reservations by id.
	Reservations map[string]Reservation
}

// NewSKU returns the empty aggregate of a SKU that has no events.
func NewSKU(id string) *SKU {
	return &SKU{ID: id, Stores: map[string]Level{}, Reservations: map[string]Reservation{}}
}

// Clone returns a deep copy, so a writer can apply events tentatively.
func (s *SKU) Clone() *SKU {
	return &SKU{ID: s.ID, Version: s.Version, Stores: maps.Clone(s.Stores), Reservations: maps.Clone(s.Reservations)}
}

// SystemIDPrefix starts the command ids the writer generates for commands
// of its own (reservation expiry: "tally:expire:<reservation>:<version>").
// Client command ids must not start with it, so a client can never take a
// system command's id in the dedupe window and have it answered "replayed"
// instead of applied.
const SystemIDPrefix = "tally:"

// legacyExpiryPrefix started the writer's expiry ids before SystemIDPrefix.
// Events with such ids stay in the log; clients may not use it either.
const legacyExpiryPrefix = "expire:"

// reservedIDPrefix returns the reserved prefix that id starts with, if any.
func reservedIDPrefix(id string) (string, bool) {
	for _, p := range []string{SystemIDPrefix, legacyExpiryPrefix} {
		if strings.HasPrefix(id, p) {
			return p, true
		}
	}
	return "", false
}

// Expired returns release commands for the reservations that have expired
// at now, oldest first. The writer decides them like any command, so expiry
// is an event in the log, never a clock on the read side.
func (s *SKU) Expired(now time.Time) []*Command {
	var out []*Command
	for id, r := range s.Reservations {
		if !now.Before(r.ExpiresAt) {
			out = append(out, &Command{
				ID:   fmt.Sprintf("%sexpire:%s:%d", SystemIDPrefix, id, r.Version),
				Kind: KindReleaseReservation, SKU: s.ID, ReservationID: id, Reason: "expired",
			})
		}
	}
	slices.SortFunc(out, func(a, b *Command) int {
		return cmp.Compare(s.Reservations[a.ReservationID].Version, s.Reservations[b.ReservationID].Version)
	})
	return out
}

// Decide returns the events that command c produces against the current
// state, or a typed error (*VersionConflictError, *InsufficientStockError).
// It does not change s. recordedAt stamps the events; newID names them.
// What a command produces is its kind's decide (kind_*.go).
func (s *SKU) Decide(c *Command, recordedAt time.Time, newID func() string) ([]*inventoryv1.InventoryEvent, error) {
	if c.CheckVersion && c.ExpectedVersion != s.Version {
		return nil, &VersionConflictError{SKU: s.ID, Expected: c.ExpectedVersion, Current: s.Version}
	}
	k, ok := registry[c.Kind]
	if !ok {
		return nil, &ValidationError{What: "command", Violations: []Violation{{Field: "kind", Description: "unknown command kind"}}}
	}
	occurred := c.OccurredAt
	if occurred.IsZero() {
		occurred = recordedAt
	}
	return k.decide(&decision{s: s, c: c, recordedAt: recordedAt, occurred: occurred,
		version: s.Version, fp: fingerprintOf(c), newID: newID})
}

// decision is one command being decided against a SKU: what a kind's decide
// builds its events with.
type decision struct {
	s                    *SKU
	c                    *Command
	recordedAt, occurred time.Time
	version              int64 // of the last event made so far
	fp                   fingerprint
	newID                func() string
}

// from is the level of the command's store.
func (d *decision) from() Level { return d.s.Stores[d.c.Store] }

// nextR makes the SKU's next event: delta changes on_hand, rdelta
// reserved, at store whose level is lvl.
func (d *decision) nextR(t inventoryv1.EventType, store, counterpart string, delta, rdelta int64, lvl Level) *inventoryv1.InventoryEvent {
	d.version++
	c := d.c
	return &inventoryv1.InventoryEvent{
		EventId:            d.newID(),
		EventType:          t,
		OccurredAt:         timestamppb.New(d.occurred),
		RecordedAt:         timestamppb.New(d.recordedAt),
		SkuId:              d.s.ID,
		StoreId:            store,
		QuantityDelta:      delta,
		UserId:             c.UserID,
		Reason:             c.Reason,
		Metadata:           c.Metadata,
		CommandId:          c.ID,
		SkuVersion:         d.version,
		OnHandAfter:        lvl.OnHand + delta,
		ReservedAfter:      lvl.Reserved + rdelta,
		ReservedDelta:      rdelta,
		ReservationId:      c.ReservationID,
		AllowNegative:      c.AllowNegative && lvl.Available()+delta-rdelta < 0,
		AdjustmentReason:   c.AdjustmentReason,
		CounterpartStoreId: counterpart,
		CommandFingerprint: d.fp[:],
	}
}

// next makes the SKU's next event, which does not change reserved.
func (d *decision) next(t inventoryv1.EventType, store, counterpart string, delta int64, lvl Level) *inventoryv1.InventoryEvent {
	return d.nextR(t, store, counterpart, delta, 0, lvl)
}

// take checks that removing q units from the command's store leaves it
// non-negative (available, so reserved units are never sold twice).
func (d *decision) take(lvl Level, q int64) error {
	if lvl.Available() < q && !d.c.AllowNegative {
		return &InsufficientStockError{SKU: d.s.ID, Store: d.c.Store, Requested: q, Available: lvl.Available()}
	}
	return nil
}

// Apply folds one event into the state. Events must come in version order:
// an event that is not the next version is an *OutOfOrderError, and nothing
// changes.
func (s *SKU) Apply(e *inventoryv1.InventoryEvent) error {
	if e.GetSkuVersion() != s.Version+1 {
		return &OutOfOrderError{SKU: s.ID, Have: s.Version, Got: e.GetSkuVersion()}
	}
	s.Version = e.GetSkuVersion()
	s.Stores[e.GetStoreId()] = Level{OnHand: e.GetOnHandAfter(), Reserved: e.GetReservedAfter()}
	switch e.GetEventType() {
	case inventoryv1.EventType_EVENT_TYPE_RESERVATION_CREATED:
		s.Reservations[e.GetReservationId()] = Reservation{
			Store: e.GetStoreId(), Quantity: e.GetReservedDelta(), ExpiresAt: e.GetReservationExpiresAt().AsTime(), Version: e.GetSkuVersion(),
		}
	case inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED, inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED:
		delete(s.Reservations, e.GetReservationId())
	}
	return nil
}
