package command

import (
	"errors"
	"fmt"
	"time"

	"github.com/tally-oss/tally/command/domain"
	"github.com/tally-oss/tally/internal/apierr"
)

// ErrUnavailable means the log could not take the command. Nothing of the
// command was applied unless a retry with the same command_id says so.
var ErrUnavailable = errors.New("inventory log unavailable")

// UnavailableError is an ErrUnavailable whose reason the client is told:
// something about the cluster it or an operator can act on.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return e.Reason }

// Unwrap makes it an ErrUnavailable.
func (e *UnavailableError) Unwrap() error { return ErrUnavailable }

// ErrShuttingDown means the writer is draining and takes no new commands.
var ErrShuttingDown = fmt.Errorf("%w: shutting down", ErrUnavailable)

// Violation is one problem with one field of a command.
type Violation = apierr.Violation

// ValidationError lists every problem found in a command's input (What is
// "command").
type ValidationError = apierr.InvalidError

// The aggregate's typed errors, declared in package domain.
type (
	// VersionConflictError means expected_version did not match the SKU.
	VersionConflictError = domain.VersionConflictError
	// InsufficientStockError means a command asked for more than the store
	// has available.
	InsufficientStockError = domain.InsufficientStockError
	// OutOfOrderError means an event did not carry the SKU's next version.
	OutOfOrderError = domain.OutOfOrderError
	// ReservationExistsError means a reservation with that id is active.
	ReservationExistsError = domain.ReservationExistsError
	// ReservationNotActiveError means the reservation was committed,
	// released, expired, or never made.
	ReservationNotActiveError = domain.ReservationNotActiveError
	// QuantityOverflowError means a command would take on_hand or reserved
	// beyond the range of int64.
	QuantityOverflowError = domain.QuantityOverflowError
)

// NotOwnerError means this instance does not write the SKU's partition.
type NotOwnerError struct {
	Partition int32
	// Owner is the address of the instance that does, when known.
	Owner string
}

func (e *NotOwnerError) Error() string {
	if e.Owner != "" {
		return fmt.Sprintf("partition %d is written by %s", e.Partition, e.Owner)
	}
	return fmt.Sprintf("partition %d has no writer here yet", e.Partition)
}

// Unwrap makes a NotOwnerError an ErrUnavailable: the client should retry,
// at the owner when one is named.
func (e *NotOwnerError) Unwrap() error { return ErrUnavailable }

// CommandIDReusedError means a command_id the SKU already accepted came back
// with a different request: neither a retry (which would be answered with
// the original result) nor a new command (which needs a new id).
type CommandIDReusedError struct {
	SKU, CommandID string
}

func (e *CommandIDReusedError) Error() string {
	return fmt.Sprintf("command_id %q was already used for sku %q by a different request; a retry must resend the original request, a new command needs a new command_id", e.CommandID, e.SKU)
}

// CommandTooOldError means a command_id the dedupe window does not hold
// came with an occurred_at from before the window's horizon: it may be a
// retry of a command accepted so long ago that the window no longer
// remembers it, and applying it could count it twice.
type CommandTooOldError struct {
	SKU, CommandID string
	OccurredAt     time.Time
	// RememberedSince is the horizon: every command recorded after it is
	// remembered.
	RememberedSince time.Time
}

func (e *CommandTooOldError) Error() string {
	return fmt.Sprintf("command_id %q too old to verify: sku %q remembers the command ids it accepted since %s, and this command occurred at %s, so it cannot be told from a retry of one accepted before; if it is new, send it with a current occurred_at (the original time in reason or metadata), or raise --dedupe-window",
		e.CommandID, e.SKU, e.RememberedSince.UTC().Format(time.RFC3339), e.OccurredAt.UTC().Format(time.RFC3339))
}
