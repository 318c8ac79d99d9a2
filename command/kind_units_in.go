package command

import (
	"context"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// unitsIn is a kind that only adds units to a store: a return, a receipt.
// Its request has a store_id and a quantity.
type unitsIn[Req any] struct{ event inventoryv1.EventType }

func (unitsIn[Req]) check(r *Req, c *checker, cmd *Command) {
	c.storeQuantity(any(r).(storeQuantityRequest), cmd)
}

func (k unitsIn[Req]) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	return []*inventoryv1.InventoryEvent{d.Next(k.event, d.Command.Store, "", d.Command.Quantity, d.From())}, nil
}

// The kinds that add units to a store.
const (
	// KindReturn puts returned units back into a store.
	KindReturn Kind = 2
	// KindReceipt adds received units to a store.
	KindReceipt Kind = 3
)

var (
	regReturn  = register[inventoryv1.RecordReturnResponse](KindReturn, unitsIn[inventoryv1.RecordReturnRequest]{inventoryv1.EventType_EVENT_TYPE_RETURN})
	regReceipt = register[inventoryv1.ReceiveStockResponse](KindReceipt, unitsIn[inventoryv1.ReceiveStockRequest]{inventoryv1.EventType_EVENT_TYPE_RECEIPT})
)

// RecordReturn implements CommandService.
func (h *Handler) RecordReturn(ctx context.Context, req *connect.Request[inventoryv1.RecordReturnRequest]) (*connect.Response[inventoryv1.RecordReturnResponse], error) {
	return regReturn.unary(ctx, h, req)
}

// ReceiveStock implements CommandService.
func (h *Handler) ReceiveStock(ctx context.Context, req *connect.Request[inventoryv1.ReceiveStockRequest]) (*connect.Response[inventoryv1.ReceiveStockResponse], error) {
	return regReceipt.unary(ctx, h, req)
}
