// Package command is Tally's write side: it validates commands, decides them
// against the per-SKU aggregate, and appends the resulting InventoryEvents to
// the Kafka log through one fenced transactional writer per partition.
//
// The aggregate is package command/domain, which is pure (no I/O, no clock,
// no randomness) and knows no kind. Each command kind is declared once, in
// kind_<name>.go here (its Kind constant, its checks, its decide on a
// domain.Decision, its RPC), and registered (kind.go); nothing else switches
// over kinds. decide (this file) puts the two together. The writer
// (writer.go) owns all Kafka I/O, the handler (handler.go and the generic
// path in kind.go) all RPC concerns. This package never imports projector/ or
// query/: the three parts of Tally meet only in gen/ and in the log.
package command

import (
	"time"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// The aggregate's types, declared in package domain.
type (
	// Command is a validated request to change one SKU's stock.
	Command = domain.Command
	// Kind is the kind of a command; see kind.go.
	Kind = domain.Kind
	// Args are a kind's own arguments.
	Args = domain.Args
	// SKU is the aggregate: all stores' stock of one SKU and its version.
	SKU = domain.SKU
	// Level is one store's stock of a SKU.
	Level = domain.Level
	// Reservation is units held at a store for a checkout.
	Reservation = domain.Reservation
)

// SystemIDPrefix starts the command ids the writer generates for commands
// of its own; client command ids must not start with it.
const SystemIDPrefix = domain.SystemIDPrefix

// decide returns the events that command c produces against s, or a typed
// error (*VersionConflictError, *InsufficientStockError, …). It does not
// change s. recordedAt stamps the events; newID names them. What a command
// produces is its kind's decide (kind_*.go).
func decide(s *SKU, c *Command, recordedAt time.Time, newID func() string) ([]*inventoryv1.InventoryEvent, error) {
	d, err := domain.NewDecision(s, c, recordedAt, newID)
	if err != nil {
		return nil, err
	}
	k, ok := registry[c.Kind]
	if !ok {
		return nil, &ValidationError{What: "command", Violations: []Violation{{Field: "kind", Description: "unknown command kind"}}}
	}
	events, err := k.decide(d)
	if err == nil {
		err = d.Err()
	}
	if err != nil {
		return nil, err
	}
	return events, nil
}

// Decide is what a partition writer does with a command it accepts: the
// events c produces against s, stamped recordedAt and named by newID, or
// the typed error that refuses it. It does not change s; apply the events
// (s.Apply) to go on. Tools that build a log without a writer (the soak of
// `tally bench --soak`) use it so that their events are the writer's.
func Decide(s *SKU, c *Command, recordedAt time.Time, newID func() string) ([]*inventoryv1.InventoryEvent, error) {
	return decide(s, c, recordedAt, newID)
}
