// Package command is Tally's write side: it validates commands, decides them
// against the per-SKU aggregate, and appends the resulting InventoryEvents to
// the Kafka log through one fenced transactional writer per partition.
//
// The aggregate (this file and errors.go) is pure: no I/O, no clock, no
// randomness. The writer (writer.go) owns all Kafka I/O, the handler
// (handler.go) all RPC concerns. This package never imports projector/ or
// query/: the three parts of Tally meet only in gen/ and in the log.
package command

import (
	"maps"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Kind is the kind of a command.
type Kind int

// The commands Tally accepts.
const (
	KindSale Kind = iota + 1
	KindReturn
	KindReceipt
	KindAdjustment
	KindTransfer
)

func (k Kind) String() string {
	switch k {
	case KindSale:
		return "sale"
	case KindReturn:
		return "return"
	case KindReceipt:
		return "receipt"
	case KindAdjustment:
		return "adjustment"
	case KindTransfer:
		return "transfer"
	}
	return "unknown"
}

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
}

// NewSKU returns the empty aggregate of a SKU that has no events.
func NewSKU(id string) *SKU { return &SKU{ID: id, Stores: map[string]Level{}} }

// Clone returns a deep copy, so a writer can apply events tentatively.
func (s *SKU) Clone() *SKU {
	return &SKU{ID: s.ID, Version: s.Version, Stores: maps.Clone(s.Stores)}
}

// Decide returns the events that command c produces against the current
// state, or a typed error (*VersionConflictError, *InsufficientStockError).
// It does not change s. recordedAt stamps the events; newID names them.
func (s *SKU) Decide(c *Command, recordedAt time.Time, newID func() string) ([]*inventoryv1.InventoryEvent, error) {
	if c.CheckVersion && c.ExpectedVersion != s.Version {
		return nil, &VersionConflictError{SKU: s.ID, Expected: c.ExpectedVersion, Current: s.Version}
	}
	occurred := c.OccurredAt
	if occurred.IsZero() {
		occurred = recordedAt
	}
	version := s.Version
	next := func(t inventoryv1.EventType, store, counterpart string, delta int64, lvl Level) *inventoryv1.InventoryEvent {
		version++
		return &inventoryv1.InventoryEvent{
			EventId:            newID(),
			EventType:          t,
			OccurredAt:         timestamppb.New(occurred),
			RecordedAt:         timestamppb.New(recordedAt),
			SkuId:              s.ID,
			StoreId:            store,
			QuantityDelta:      delta,
			UserId:             c.UserID,
			Reason:             c.Reason,
			Metadata:           c.Metadata,
			CommandId:          c.ID,
			SkuVersion:         version,
			OnHandAfter:        lvl.OnHand + delta,
			ReservedAfter:      lvl.Reserved,
			AllowNegative:      c.AllowNegative && lvl.Available()+delta < 0,
			AdjustmentReason:   c.AdjustmentReason,
			CounterpartStoreId: counterpart,
		}
	}
	from := s.Stores[c.Store]
	// take checks that removing q units from a store leaves it non-negative
	// (available, so reserved units are never sold twice).
	take := func(lvl Level, q int64) error {
		if lvl.Available() < q && !c.AllowNegative {
			return &InsufficientStockError{SKU: s.ID, Store: c.Store, Requested: q, Available: lvl.Available()}
		}
		return nil
	}
	switch c.Kind {
	case KindSale:
		if err := take(from, c.Quantity); err != nil {
			return nil, err
		}
		return []*inventoryv1.InventoryEvent{next(inventoryv1.EventType_EVENT_TYPE_SALE, c.Store, "", -c.Quantity, from)}, nil
	case KindReturn:
		return []*inventoryv1.InventoryEvent{next(inventoryv1.EventType_EVENT_TYPE_RETURN, c.Store, "", c.Quantity, from)}, nil
	case KindReceipt:
		return []*inventoryv1.InventoryEvent{next(inventoryv1.EventType_EVENT_TYPE_RECEIPT, c.Store, "", c.Quantity, from)}, nil
	case KindAdjustment:
		if c.Quantity < 0 {
			if err := take(from, -c.Quantity); err != nil {
				return nil, err
			}
		}
		return []*inventoryv1.InventoryEvent{next(inventoryv1.EventType_EVENT_TYPE_STOCK_ADJUSTMENT, c.Store, "", c.Quantity, from)}, nil
	case KindTransfer:
		if err := take(from, c.Quantity); err != nil {
			return nil, err
		}
		to := s.Stores[c.ToStore]
		return []*inventoryv1.InventoryEvent{
			next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, c.Store, c.ToStore, -c.Quantity, from),
			next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN, c.ToStore, c.Store, c.Quantity, to),
		}, nil
	}
	return nil, &ValidationError{Violations: []Violation{{Field: "kind", Description: "unknown command kind"}}}
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
	return nil
}
