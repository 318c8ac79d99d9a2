package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindTransfer moves units from one store to another.
const KindTransfer Kind = 5

type transferKind struct{}

var regTransfer = register[inventoryv1.TransferStockRequest, inventoryv1.TransferStockResponse](transferKind{})

// TransferStock implements CommandService.
func (h *Handler) TransferStock(ctx context.Context, req *connect.Request[inventoryv1.TransferStockRequest]) (*connect.Response[inventoryv1.TransferStockResponse], error) {
	return regTransfer.unary(ctx, h, req)
}

// FromTransfer validates a transfer request.
func FromTransfer(r *inventoryv1.TransferStockRequest, now time.Time) (*Command, error) {
	return regTransfer.from(r, now)
}

func (transferKind) kind() Kind { return KindTransfer }

func (transferKind) check(r *inventoryv1.TransferStockRequest, c *checker, cmd *Command) {
	cmd.Store, cmd.ToStore, cmd.Quantity = r.GetFromStoreId(), r.GetToStoreId(), r.GetQuantity()
	c.id("from_store_id", r.GetFromStoreId(), true)
	c.id("to_store_id", r.GetToStoreId(), true)
	if r.GetFromStoreId() != "" && r.GetFromStoreId() == r.GetToStoreId() {
		c.add("to_store_id", "must differ from from_store_id")
	}
	c.quantity("quantity", r.GetQuantity())
}

func (transferKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	c, from := d.c, d.from()
	if err := d.take(from, c.Quantity); err != nil {
		return nil, err
	}
	to := d.s.Stores[c.ToStore]
	return []*inventoryv1.InventoryEvent{
		d.next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, c.Store, c.ToStore, -c.Quantity, from),
		d.next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN, c.ToStore, c.Store, c.Quantity, to),
	}, nil
}

func (transferKind) respond(res *Result) *inventoryv1.TransferStockResponse {
	return &inventoryv1.TransferStockResponse{Result: res.proto()}
}
