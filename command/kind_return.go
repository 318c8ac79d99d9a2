package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindReturn puts returned units back into a store.
const KindReturn Kind = 2

type returnKind struct{}

var regReturn = register[inventoryv1.RecordReturnRequest, inventoryv1.RecordReturnResponse](returnKind{})

// RecordReturn implements CommandService.
func (h *Handler) RecordReturn(ctx context.Context, req *connect.Request[inventoryv1.RecordReturnRequest]) (*connect.Response[inventoryv1.RecordReturnResponse], error) {
	return regReturn.unary(ctx, h, req)
}

// FromReturn validates a return request.
func FromReturn(r *inventoryv1.RecordReturnRequest, now time.Time) (*Command, error) {
	return regReturn.from(r, now)
}

func (returnKind) kind() Kind { return KindReturn }

func (returnKind) check(r *inventoryv1.RecordReturnRequest, c *checker, cmd *Command) {
	cmd.Store, cmd.Quantity = r.GetStoreId(), r.GetQuantity()
	c.id("store_id", r.GetStoreId(), true)
	c.quantity("quantity", r.GetQuantity())
}

func (returnKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	return []*inventoryv1.InventoryEvent{d.next(inventoryv1.EventType_EVENT_TYPE_RETURN, d.c.Store, "", d.c.Quantity, d.from())}, nil
}

func (returnKind) respond(res *Result) *inventoryv1.RecordReturnResponse {
	return &inventoryv1.RecordReturnResponse{Result: res.proto()}
}
