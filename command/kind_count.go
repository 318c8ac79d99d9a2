package command

import (
	"context"
	"encoding/binary"
	"fmt"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindCountStock records a cycle count: the counted units replace on_hand.
const KindCountStock Kind = 10

type countKind struct{}

// countArgs are a count's own arguments.
type countArgs struct {
	counted, threshold int64
}

// AppendFingerprint implements domain.Args.
func (a countArgs) AppendFingerprint(b []byte) []byte {
	return binary.AppendVarint(binary.AppendVarint(b, a.counted), a.threshold)
}

// check: A count names a store and 0 to MaxQuantity counted units, and a
// variance threshold of 0 to MaxQuantity.
func (countKind) check(r *inventoryv1.CountStockRequest, c *checker, cmd *Command) {
	c.id("store_id", r.GetStoreId(), true)
	if q := r.GetCountedQuantity(); q < 0 || q > MaxQuantity {
		c.add("counted_quantity", "0 to %d, got %d", MaxQuantity, q)
	}
	if t := r.GetVarianceThreshold(); t < 0 || t > MaxQuantity {
		c.add("variance_threshold", "0 to %d, got %d", MaxQuantity, t)
	}
	cmd.Store, cmd.Args = r.GetStoreId(), countArgs{counted: r.GetCountedQuantity(), threshold: r.GetVarianceThreshold()}
}

// decide: A count is a fact about the shelves and is never refused for
// stock: the counted units become on_hand whatever the books said, reserved
// stays (available goes negative when fewer units than are reserved were
// found), and the event carries the variance and whether it needs review.
func (countKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	a, _ := d.Command.Args.(countArgs) // zero: a Command built without check counts 0
	from := d.From()
	variance := d.Sub("on_hand", a.counted, from.OnHand)
	if b := d.Command.MaxChange; b > 0 && max(variance, -variance) > b {
		// Found or lost more units than the caller may adjust: an admin's
		// count, like an adjustment that large.
		return nil, &PermissionError{Subject: d.Command.Actor, Roles: d.Command.Roles, What: fmt.Sprintf("a count that moves on_hand by %d units (more than --max-adjustment %d)", variance, b), Need: "admin"}
	}
	e := d.Next(inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED, d.Command.Store, "", variance, from)
	e.VarianceThreshold, e.VarianceFlagged = a.threshold, flagged(variance, a.threshold)
	// Fewer units than are reserved: recorded, and like any event that
	// leaves available below zero, flagged allow_negative.
	e.AllowNegative = e.GetOnHandAfter() < e.GetReservedAfter()
	return []*inventoryv1.InventoryEvent{e}, nil
}

// flagged: the variance is more than threshold units either way.
func flagged(variance, threshold int64) bool { return max(variance, -variance) > threshold }

func (countKind) respond(cmd *Command, res *Result, out *inventoryv1.CountStockResponse) {
	a, _ := cmd.Args.(countArgs)
	out.Variance, out.VarianceFlagged = res.Delta, flagged(res.Delta, a.threshold)
}

var regCount = register[inventoryv1.CountStockResponse, inventoryv1.CountStockRequest](KindCountStock, countKind{})

// CountStock implements CommandService.
func (h *Handler) CountStock(ctx context.Context, req *connect.Request[inventoryv1.CountStockRequest]) (*connect.Response[inventoryv1.CountStockResponse], error) {
	return regCount.unary(ctx, h, req)
}
