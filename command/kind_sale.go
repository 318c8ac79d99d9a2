package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindSale removes sold units from a store.
const KindSale Kind = 1

type saleKind struct{}

var regSale = register[inventoryv1.RecordSaleRequest, inventoryv1.RecordSaleResponse](saleKind{})

// RecordSale implements CommandService.
func (h *Handler) RecordSale(ctx context.Context, req *connect.Request[inventoryv1.RecordSaleRequest]) (*connect.Response[inventoryv1.RecordSaleResponse], error) {
	return regSale.unary(ctx, h, req)
}

// FromSale validates a sale request. now bounds occurred_at.
func FromSale(r *inventoryv1.RecordSaleRequest, now time.Time) (*Command, error) {
	return regSale.from(r, now)
}

func (saleKind) kind() Kind { return KindSale }

func (saleKind) check(r *inventoryv1.RecordSaleRequest, c *checker, cmd *Command) {
	cmd.Store, cmd.Quantity = r.GetStoreId(), r.GetQuantity()
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
}

func (saleKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	from := d.from()
	if err := d.take(from, d.c.Quantity); err != nil {
		return nil, err
	}
	return []*inventoryv1.InventoryEvent{d.next(inventoryv1.EventType_EVENT_TYPE_SALE, d.c.Store, "", -d.c.Quantity, from)}, nil
}

func (saleKind) respond(res *Result) *inventoryv1.RecordSaleResponse {
	return &inventoryv1.RecordSaleResponse{Result: res.proto()}
}
