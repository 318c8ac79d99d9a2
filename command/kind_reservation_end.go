package command

import (
	"context"
	"slices"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// reservationEnd is a kind that ends a reservation: a commit sells the
// units it holds, a release gives them back unsold.
type reservationEnd[Req any] struct {
	event inventoryv1.EventType
	// sells takes the units off on_hand, and refuses an expired reservation
	// even before the writer's release event for it lands; a release of it
	// is fine.
	sells bool
	// reason is the event's reason when the command gives none.
	reason string
}

func (reservationEnd[Req]) check(r *Req, c *checker, cmd *Command) {
	cmd.ReservationID = any(r).(interface{ GetReservationId() string }).GetReservationId()
	c.id("reservation_id", cmd.ReservationID, true)
}

func (k reservationEnd[Req]) decide(d *domain.Decision) ([]*inventoryv1.InventoryEvent, error) {
	r, ok := d.SKU.Reservations[d.Command.ReservationID]
	if g := d.Command.Granted; ok && g != nil && !slices.Contains(g, r.Store) {
		// A reservation at a store the caller's token does not grant is
		// not the caller's: answered as if there were none, so a token
		// of one store cannot end, or even find, another store's.
		ok = false
	}
	if !ok || (k.sells && !d.RecordedAt.Before(r.ExpiresAt)) {
		return nil, &ReservationNotActiveError{SKU: d.SKU.ID, ReservationID: d.Command.ReservationID}
	}
	var sold int64
	if k.sells {
		sold = -r.Quantity
	}
	e := d.NextR(k.event, r.Store, "", sold, -r.Quantity, d.SKU.Stores[r.Store])
	if e.Reason == "" {
		e.Reason = k.reason
	}
	return []*inventoryv1.InventoryEvent{e}, nil
}

// The kinds that end a reservation.
const (
	// KindCommitReservation sells the units a reservation holds.
	KindCommitReservation Kind = 7
	// KindReleaseReservation gives back the units a reservation holds.
	KindReleaseReservation Kind = 8
)

var (
	regCommitReservation = register[inventoryv1.CommitReservationResponse](KindCommitReservation, reservationEnd[inventoryv1.CommitReservationRequest]{
		event: inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED, sells: true})
	regReleaseReservation = register[inventoryv1.ReleaseReservationResponse](KindReleaseReservation, reservationEnd[inventoryv1.ReleaseReservationRequest]{
		event: inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED, reason: "released"})
)

// CommitReservation implements CommandService.
func (h *Handler) CommitReservation(ctx context.Context, req *connect.Request[inventoryv1.CommitReservationRequest]) (*connect.Response[inventoryv1.CommitReservationResponse], error) {
	return regCommitReservation.unary(ctx, h, req)
}

// ReleaseReservation implements CommandService.
func (h *Handler) ReleaseReservation(ctx context.Context, req *connect.Request[inventoryv1.ReleaseReservationRequest]) (*connect.Response[inventoryv1.ReleaseReservationResponse], error) {
	return regReleaseReservation.unary(ctx, h, req)
}
