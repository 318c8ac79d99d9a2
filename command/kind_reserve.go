package command

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// check: A reservation names a store, its id and a quantity; its ttl is optional (DefaultReservationTTL).
func (reserveKind) check(r *inventoryv1.ReserveRequest, c *checker, cmd *Command) {
	cmd.Store, cmd.Quantity, cmd.ReservationID, cmd.TTL = r.GetStoreId(), r.GetQuantity(), r.GetReservationId(), DefaultReservationTTL
	c.id("store_id", r.GetStoreId(), true)
	c.id("reservation_id", r.GetReservationId(), true)
	c.quantity("quantity", r.GetQuantity())
	if r.GetTtl() != nil {
		if err := r.GetTtl().CheckValid(); err != nil {
			c.add("ttl", "not a valid duration")
		} else if d := r.GetTtl().AsDuration(); d < MinReservationTTL || d > MaxReservationTTL {
			c.add("ttl", "%s to %s, got %s", MinReservationTTL, MaxReservationTTL, d)
		} else {
			cmd.TTL = d
		}
	}
}

// KindReserve holds units at a store for a checkout, for a while.
const KindReserve Kind = 6

type reserveKind struct{}

// decide: A reservation holds available units and never more, allow_negative or not; it expires ttl after it is recorded.
func (reserveKind) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	c, from := d.Command, d.From()
	if _, exists := d.SKU.Reservations[c.ReservationID]; exists {
		return nil, &ReservationExistsError{SKU: d.SKU.ID, ReservationID: c.ReservationID}
	}
	// Never beyond what is available, allow_negative or not.
	if from.Available() < c.Quantity {
		return nil, &InsufficientStockError{SKU: d.SKU.ID, Store: c.Store, Requested: c.Quantity, Available: from.Available()}
	}
	e := d.NextR(inventoryv1.EventType_EVENT_TYPE_RESERVATION_CREATED, c.Store, "", 0, c.Quantity, from)
	e.ReservationExpiresAt = timestamppb.New(d.RecordedAt.Add(c.TTL))
	return []*inventoryv1.InventoryEvent{e}, nil
}

func (reserveKind) respond(_ *Command, res *Result, out *inventoryv1.ReserveResponse) {
	out.ExpiresAt = timestamppb.New(res.ExpiresAt)
}

var regReserve = register[inventoryv1.ReserveResponse, inventoryv1.ReserveRequest](KindReserve, reserveKind{})

// Reserve implements CommandService.
func (h *Handler) Reserve(ctx context.Context, req *connect.Request[inventoryv1.ReserveRequest]) (*connect.Response[inventoryv1.ReserveResponse], error) {
	return regReserve.unary(ctx, h, req)
}
