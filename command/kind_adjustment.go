package command

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// check: An adjustment names a store, a non-zero signed delta and one of the known reasons.
func (adjustmentKind) check(r *inventoryv1.AdjustStockRequest, c *checker, cmd *Command) {
	c.id("store_id", r.GetStoreId(), true)
	switch d := r.GetQuantityDelta(); {
	case d == 0:
		c.add("quantity_delta", "must not be 0")
	case d > MaxQuantity || d < -MaxQuantity:
		c.add("quantity_delta", "at most %d units either way, got %d", MaxQuantity, d)
	}
	if _, ok := inventoryv1.AdjustmentReason_name[int32(r.GetAdjustmentReason())]; !ok || r.GetAdjustmentReason() == inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_UNSPECIFIED {
		c.add("adjustment_reason", "required: one of COUNT_CORRECTION, DAMAGED, SHRINKAGE, EXPIRED, FOUND, OTHER")
	}
	cmd.Store, cmd.Quantity, cmd.AdjustmentReason = r.GetStoreId(), r.GetQuantityDelta(), r.GetAdjustmentReason()
}

// KindAdjustment corrects a store's units by a signed delta, with a reason.
const KindAdjustment Kind = 4

type adjustmentKind struct{}

// decide: An adjustment that removes units is held to what is available, as a sale is.
func (adjustmentKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	from := d.From()
	if d.Command.Quantity < 0 {
		if err := d.Take(from, -d.Command.Quantity); err != nil {
			return nil, err
		}
	}
	return []*inventoryv1.InventoryEvent{d.Next(inventoryv1.EventType_EVENT_TYPE_STOCK_ADJUSTMENT, d.Command.Store, "", d.Command.Quantity, from)}, nil
}

var regAdjustment = register[inventoryv1.AdjustStockResponse, inventoryv1.AdjustStockRequest](KindAdjustment, adjustmentKind{})

// AdjustStock implements CommandService.
func (h *Handler) AdjustStock(ctx context.Context, req *connect.Request[inventoryv1.AdjustStockRequest]) (*connect.Response[inventoryv1.AdjustStockResponse], error) {
	return regAdjustment.unary(ctx, h, req)
}
