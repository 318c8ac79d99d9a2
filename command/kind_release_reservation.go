package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindReleaseReservation gives back the units a reservation holds, unsold.
const KindReleaseReservation Kind = 8

type releaseReservationKind struct{}

var regReleaseReservation = register[inventoryv1.ReleaseReservationRequest, inventoryv1.ReleaseReservationResponse](releaseReservationKind{})

// ReleaseReservation implements CommandService.
func (h *Handler) ReleaseReservation(ctx context.Context, req *connect.Request[inventoryv1.ReleaseReservationRequest]) (*connect.Response[inventoryv1.ReleaseReservationResponse], error) {
	return regReleaseReservation.unary(ctx, h, req)
}

// FromReleaseReservation validates a release of a reservation.
func FromReleaseReservation(r *inventoryv1.ReleaseReservationRequest, now time.Time) (*Command, error) {
	return regReleaseReservation.from(r, now)
}

func (releaseReservationKind) kind() Kind { return KindReleaseReservation }

func (releaseReservationKind) check(r *inventoryv1.ReleaseReservationRequest, c *checker, cmd *Command) {
	cmd.ReservationID = r.GetReservationId()
	c.id("reservation_id", r.GetReservationId(), true)
}

func (releaseReservationKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	r, err := d.reservation(false)
	if err != nil {
		return nil, err
	}
	e := d.nextR(inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED, r.Store, "", 0, -r.Quantity, d.s.Stores[r.Store])
	if e.Reason == "" {
		e.Reason = "released"
	}
	return []*inventoryv1.InventoryEvent{e}, nil
}

func (releaseReservationKind) respond(res *Result) *inventoryv1.ReleaseReservationResponse {
	return &inventoryv1.ReleaseReservationResponse{Result: res.proto()}
}
