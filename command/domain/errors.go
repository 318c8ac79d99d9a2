package domain

import "fmt"

// VersionConflictError means expected_version did not match the SKU.
type VersionConflictError struct {
	SKU      string
	Expected int64
	Current  int64
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("sku %q is at version %d, not the expected %d", e.SKU, e.Current, e.Expected)
}

// InsufficientStockError means a sale, transfer or negative adjustment asked
// for more than the store has available.
type InsufficientStockError struct {
	SKU       string
	Store     string
	Requested int64
	Available int64
}

func (e *InsufficientStockError) Error() string {
	return fmt.Sprintf("sku %q at store %q: %d requested, %d available", e.SKU, e.Store, e.Requested, e.Available)
}

// OutOfOrderError means an event did not carry the SKU's next version: the
// log and the state disagree, which must never happen.
type OutOfOrderError struct {
	SKU  string
	Have int64
	Got  int64
}

func (e *OutOfOrderError) Error() string {
	return fmt.Sprintf("sku %q at version %d cannot apply version %d", e.SKU, e.Have, e.Got)
}

// ReservationExistsError means a reservation with that id is active.
type ReservationExistsError struct {
	SKU, ReservationID string
}

func (e *ReservationExistsError) Error() string {
	return fmt.Sprintf("sku %q already has an active reservation %q", e.SKU, e.ReservationID)
}

// ReservationNotActiveError means the reservation was committed, released,
// expired, or never made.
type ReservationNotActiveError struct {
	SKU, ReservationID string
}

func (e *ReservationNotActiveError) Error() string {
	return fmt.Sprintf("sku %q has no active reservation %q (committed, released, expired or unknown)", e.SKU, e.ReservationID)
}

// QuantityOverflowError means a command would take a store's on_hand or
// reserved units past what an int64 holds. Commands are bounded
// (MaxQuantity), so only a long run of them, or a log not written by
// Tally, can get there; the command is refused rather than wrapping the
// level around to a wrong sign.
type QuantityOverflowError struct {
	SKU   string
	Store string
	// Level is "on_hand" or "reserved".
	Level   string
	Current int64
	Delta   int64
}

func (e *QuantityOverflowError) Error() string {
	return fmt.Sprintf("sku %q at store %q: %s %d %+d is beyond the range of int64", e.SKU, e.Store, e.Level, e.Current, e.Delta)
}
