package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindReceipt adds received units to a store.
const KindReceipt Kind = 3

type receiptKind struct{}

var regReceipt = register[inventoryv1.ReceiveStockRequest, inventoryv1.ReceiveStockResponse](receiptKind{})

// ReceiveStock implements CommandService.
func (h *Handler) ReceiveStock(ctx context.Context, req *connect.Request[inventoryv1.ReceiveStockRequest]) (*connect.Response[inventoryv1.ReceiveStockResponse], error) {
	return regReceipt.unary(ctx, h, req)
}

// FromReceipt validates a receipt request.
func FromReceipt(r *inventoryv1.ReceiveStockRequest, now time.Time) (*Command, error) {
	return regReceipt.from(r, now)
}

func (receiptKind) kind() Kind { return KindReceipt }

func (receiptKind) check(r *inventoryv1.ReceiveStockRequest, c *checker, cmd *Command) {
	cmd.Store, cmd.Quantity = r.GetStoreId(), r.GetQuantity()
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
}

func (receiptKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	return []*inventoryv1.InventoryEvent{d.next(inventoryv1.EventType_EVENT_TYPE_RECEIPT, d.c.Store, "", d.c.Quantity, d.from())}, nil
}

func (receiptKind) respond(res *Result) *inventoryv1.ReceiveStockResponse {
	return &inventoryv1.ReceiveStockResponse{Result: res.proto()}
}
