package command

import (
	"context"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// KindCommitReservation sells the units a reservation holds.
const KindCommitReservation Kind = 7

type commitReservationKind struct{}

var regCommitReservation = register[inventoryv1.CommitReservationRequest, inventoryv1.CommitReservationResponse](commitReservationKind{})

// CommitReservation implements CommandService.
func (h *Handler) CommitReservation(ctx context.Context, req *connect.Request[inventoryv1.CommitReservationRequest]) (*connect.Response[inventoryv1.CommitReservationResponse], error) {
	return regCommitReservation.unary(ctx, h, req)
}

// FromCommitReservation validates a commit of a reservation.
func FromCommitReservation(r *inventoryv1.CommitReservationRequest, now time.Time) (*Command, error) {
	return regCommitReservation.from(r, now)
}

func (commitReservationKind) kind() Kind { return KindCommitReservation }

func (commitReservationKind) check(r *inventoryv1.CommitReservationRequest, c *checker, cmd *Command) {
	cmd.ReservationID = r.GetReservationId()
	c.id("reservation_id", r.GetReservationId(), true)
}

func (commitReservationKind) decide(d *decision) ([]*inventoryv1.InventoryEvent, error) {
	r, err := d.reservation(true)
	if err != nil {
		return nil, err
	}
	return []*inventoryv1.InventoryEvent{d.nextR(inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED, r.Store, "", -r.Quantity, -r.Quantity, d.s.Stores[r.Store])}, nil
}

func (commitReservationKind) respond(res *Result) *inventoryv1.CommitReservationResponse {
	return &inventoryv1.CommitReservationResponse{Result: res.proto()}
}
