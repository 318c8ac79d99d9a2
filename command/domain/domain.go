// Package domain is Tally's SKU aggregate: the state of one SKU (its stores'
// levels, its reservations, its version), how an event changes it (Apply),
// and what deciding a command against it builds on (Decision, the typed
// errors, the fingerprint of a command).
//
// It is pure: no I/O, no clock, no randomness, no logging. It imports only
// the standard library's pure packages, gen/ and protobuf, and a test keeps
// it that way. It does not know the command kinds: each kind is declared in
// its own file in package command (its checks, its decide built on a
// Decision, its RPC) and registered there, so adding a kind never touches
// this package. Package command owns everything around the aggregate:
// validation, the registry of kinds, the writer's Kafka I/O and the RPCs.
package domain

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Kind is the kind of a command. Its values are declared by the kinds
// themselves, one constant in each kind's file in package command; they are
// written into command fingerprints and never change.
type Kind int

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
	// Actor is who sent it (the token's subject), recorded on its events.
	// Not part of the fingerprint: a retry is the same command whoever
	// sends it.
	Actor string
	// Roles are the caller's roles, named by the refusals decide makes.
	Roles string
	// Granted are the stores the caller may act on; nil: every store.
	// A kind whose store is only known from the state (a reservation's)
	// checks it in decide. Not part of the fingerprint either.
	Granted []string
	// MaxChange bounds the units by which a kind whose change is only
	// known from the state (a count) may move on_hand: the caller's
	// --max-adjustment when it is not an admin; 0: no bound.
	MaxChange int64
	// Args are the arguments only its kind has, set by the kind's check
	// and read by its decide: a kind added later keeps them here rather
	// than adding fields to Command.
	Args Args
}

// Args are a kind's own arguments.
type Args interface {
	// AppendFingerprint appends the arguments' canonical encoding (see
	// FingerprintOf) to b.
	AppendFingerprint(b []byte) []byte
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

// Available is what can still be sold or reserved: on hand less reserved,
// held at the bounds of int64 where the difference would overflow.
func (l Level) Available() int64 {
	a := l.OnHand - l.Reserved
	switch {
	case l.Reserved > 0 && a > l.OnHand:
		return math.MinInt64
	case l.Reserved < 0 && a < l.OnHand:
		return math.MaxInt64
	}
	return a
}

// SKU is the aggregate: all stores' stock of one SKU and its version. Every
// command is decided against it and every event is applied to it.
type SKU struct {
	ID      string
	Version int64
	Stores  map[string]Level
	// Reservations are the active reservations by id; nil when there are
	// none (most SKUs, most of the time: an empty map would cost every SKU
	// of a writer's partition its header, BenchmarkWriterStateMemory).
	Reservations map[string]Reservation
}

// NewSKU returns the empty aggregate of a SKU that has no events.
func NewSKU(id string) *SKU {
	return &SKU{ID: id, Stores: map[string]Level{}}
}

// Reserve records an active reservation.
func (s *SKU) Reserve(id string, r Reservation) {
	if s.Reservations == nil {
		s.Reservations = map[string]Reservation{}
	}
	s.Reservations[id] = r
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

// Expired returns commands of kind release for the reservations that have
// expired at now, oldest first; release is the kind that gives a
// reservation's units back. The writer decides them like any command, so
// expiry is an event in the log, never a clock on the read side.
func (s *SKU) Expired(now time.Time, release Kind) []*Command {
	var out []*Command
	for id, r := range s.Reservations {
		if !now.Before(r.ExpiresAt) {
			out = append(out, &Command{
				ID:   fmt.Sprintf("%sexpire:%s:%d", SystemIDPrefix, id, r.Version),
				Kind: release, SKU: s.ID, ReservationID: id, Reason: "expired",
			})
		}
	}
	slices.SortFunc(out, func(a, b *Command) int {
		return cmp.Compare(s.Reservations[a.ReservationID].Version, s.Reservations[b.ReservationID].Version)
	})
	return out
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
		s.Reserve(e.GetReservationId(), Reservation{
			Store: e.GetStoreId(), Quantity: e.GetReservedDelta(), ExpiresAt: e.GetReservationExpiresAt().AsTime(), Version: e.GetSkuVersion(),
		})
	case inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED, inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED:
		delete(s.Reservations, e.GetReservationId())
		if len(s.Reservations) == 0 {
			s.Reservations = nil
		}
	}
	return nil
}
