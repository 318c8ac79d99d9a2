package command

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// check: A sale names a store and the quantity sold.
func (saleKind) check(r *inventoryv1.RecordSaleRequest, c *checker, cmd *Command) {
	c.storeQuantity(r, cmd)
}

// KindSale removes sold units from a store.
const KindSale Kind = 1

type saleKind struct{}

// decide: A sale takes units off on_hand, never more than are available unless the command allows negative stock.
func (saleKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	from := d.From()
	if err := d.Take(from, d.Command.Quantity); err != nil {
		return nil, err
	}
	return []*inventoryv1.InventoryEvent{d.Next(inventoryv1.EventType_EVENT_TYPE_SALE, d.Command.Store, "", -d.Command.Quantity, from)}, nil
}

var regSale = register[inventoryv1.RecordSaleResponse, inventoryv1.RecordSaleRequest](KindSale, saleKind{})

// RecordSale implements CommandService.
func (h *Handler) RecordSale(ctx context.Context, req *connect.Request[inventoryv1.RecordSaleRequest]) (*connect.Response[inventoryv1.RecordSaleResponse], error) {
	return regSale.unary(ctx, h, req)
}
