package command

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// check: A transfer names two different stores and a quantity.
func (transferKind) check(r *inventoryv1.TransferStockRequest, c *checker, cmd *Command) {
	c.id("from_store_id", r.GetFromStoreId(), true)
	c.id("to_store_id", r.GetToStoreId(), true)
	if r.GetFromStoreId() != "" && r.GetFromStoreId() == r.GetToStoreId() {
		c.add("to_store_id", "must differ from from_store_id")
	}
	c.quantity("quantity", r.GetQuantity())
	cmd.Store, cmd.ToStore, cmd.Quantity = r.GetFromStoreId(), r.GetToStoreId(), r.GetQuantity()
}

// KindTransfer moves units from one store to another.
const KindTransfer Kind = 5

type transferKind struct{}

// decide: A transfer is two events, out and in, so each store's history is complete and the total stays the same.
func (transferKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	c, from := d.Command, d.From()
	if err := d.Take(from, c.Quantity); err != nil {
		return nil, err
	}
	to := d.SKU.Stores[c.ToStore]
	return []*inventoryv1.InventoryEvent{
		d.Next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, c.Store, c.ToStore, -c.Quantity, from),
		d.Next(inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN, c.ToStore, c.Store, c.Quantity, to),
	}, nil
}

var regTransfer = register[inventoryv1.TransferStockResponse, inventoryv1.TransferStockRequest](KindTransfer, transferKind{})

// TransferStock implements CommandService.
func (h *Handler) TransferStock(ctx context.Context, req *connect.Request[inventoryv1.TransferStockRequest]) (*connect.Response[inventoryv1.TransferStockResponse], error) {
	return regTransfer.unary(ctx, h, req)
}
