package command

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// check: A reorder policy sets a reorder point below its target level, both at most MaxReorderLevel.
func (reorderPolicyKind) check(r *inventoryv1.SetReorderPolicyRequest, c *checker, cmd *Command) {
	c.id("store_id", r.GetStoreId(), true)
	if p := r.GetReorderPoint(); p < 0 || p > MaxReorderLevel {
		c.add("reorder_point", "0 to %d, got %d", MaxReorderLevel, p)
	}
	if t := r.GetTargetLevel(); t <= r.GetReorderPoint() || t > MaxReorderLevel {
		c.add("target_level", "must be above reorder_point (%d) and at most %d, got %d", r.GetReorderPoint(), MaxReorderLevel, t)
	}
	cmd.Store, cmd.ReorderPoint, cmd.TargetLevel = r.GetStoreId(), r.GetReorderPoint(), r.GetTargetLevel()
}

// KindSetReorderPolicy sets a store's reorder point and target level.
const KindSetReorderPolicy Kind = 9

type reorderPolicyKind struct{}

// decide: A reorder policy is an event that moves no units.
func (reorderPolicyKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	e := d.Next(inventoryv1.EventType_EVENT_TYPE_REORDER_POLICY_SET, d.Command.Store, "", 0, d.From())
	e.ReorderPoint, e.TargetLevel = d.Command.ReorderPoint, d.Command.TargetLevel
	return []*inventoryv1.InventoryEvent{e}, nil
}

var regReorderPolicy = register[inventoryv1.SetReorderPolicyResponse, inventoryv1.SetReorderPolicyRequest](KindSetReorderPolicy, reorderPolicyKind{})

// SetReorderPolicy implements CommandService.
func (h *Handler) SetReorderPolicy(ctx context.Context, req *connect.Request[inventoryv1.SetReorderPolicyRequest]) (*connect.Response[inventoryv1.SetReorderPolicyResponse], error) {
	return regReorderPolicy.unary(ctx, h, req)
}
