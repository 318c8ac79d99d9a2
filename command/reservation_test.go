package command_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

func TestTwoCheckoutsRaceForTheLastUnit(t *testing.T) {
	sku := uniq("last")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 1)
	var wg sync.WaitGroup
	codesSeen := make([]codes.Code, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, ReservationId: uniq("cart")})
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	ok, failed := 0, 0
	for _, c := range codesSeen {
		switch c {
		case codes.OK:
			ok++
		case codes.FailedPrecondition:
			failed++
		}
	}
	if ok != 1 || failed != 1 {
		t.Fatalf("outcomes %v: want exactly one reservation and one FailedPrecondition", codesSeen)
	}
	// The reserved unit cannot be sold either.
	_, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("sale of a reserved unit: %v, want FailedPrecondition", err)
	}
}

func TestExpiredReservationReturnsItsStock(t *testing.T) {
	sku := uniq("exp")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 4)
	r, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 3, ReservationId: "cart", Ttl: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.GetResult().GetStores()[0]; st.GetAvailable() != 1 || st.GetReserved() != 3 {
		t.Fatalf("after reserving: %v", st)
	}
	if d := r.GetExpiresAt().AsTime().Sub(time.Now()); d <= 0 || d > 2*time.Second {
		t.Fatalf("expires_at %v is not about 1s ahead", r.GetExpiresAt().AsTime())
	}
	// The writer releases it with an event once the ttl passes.
	released := awaitRelease(t, sku)
	if released.GetReason() != "expired" || released.GetReservedAfter() != 0 || released.GetReservedDelta() != -3 || released.GetReservationId() != "cart" {
		t.Fatalf("release event %v", released)
	}
	sale, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 4})
	if err != nil {
		t.Fatalf("selling all 4 after the expiry: %v", err)
	}
	if sale.GetResult().GetStores()[0].GetOnHand() != 0 {
		t.Fatalf("after the sale: %v", sale.GetResult())
	}
	_, err = g.CommitReservation(t.Context(), &inventoryv1.CommitReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "cart"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("commit of an expired reservation: %v, want FailedPrecondition", err)
	}
}

// awaitRelease waits for the writer to release a reservation of sku and
// returns the release event.
func awaitRelease(t testing.TB, sku string) *inventoryv1.InventoryEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the expired reservation was never released")
		}
		time.Sleep(100 * time.Millisecond)
		for _, e := range readEvents(t, shared.brokers, sku) {
			if e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED {
				return e
			}
		}
	}
}

// The writer's own release of an expired reservation has a command id of its
// own; a client that sent a command with that id first made the release a
// "replay" that was never written, and the units stayed reserved for good.
func TestClientCannotTakeTheExpiryReleasesCommandID(t *testing.T) {
	sku := uniq("forge")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 4)
	r, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 3, ReservationId: "cartZ", Ttl: durationpb.New(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	v := r.GetResult().GetSkuVersion()
	for _, id := range []string{fmt.Sprintf("expire:cartZ:%d", v), fmt.Sprintf("tally:expire:cartZ:%d", v)} {
		_, err := g.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 1})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("receipt with command_id %q: %v, want InvalidArgument", id, err)
		}
		if vs := grpcViolations(t, err); vs["command_id"] == "" {
			t.Fatalf("command_id %q: field violations %v, want command_id", id, vs)
		}
		a, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{{Kind: &inventoryv1.Command_ReleaseReservation{
			ReleaseReservation: &inventoryv1.ReleaseReservationRequest{CommandId: id, SkuId: sku, ReservationId: "cartZ"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if e := a.GetOutcomes()[0].GetError(); e.GetCode() != "invalid_argument" || e.GetFieldViolations()[0].GetField() != "commands[0].release_reservation.command_id" {
			t.Fatalf("batch release with command_id %q: %v", id, a.GetOutcomes()[0])
		}
	}
	released := awaitRelease(t, sku)
	if want := fmt.Sprintf("tally:expire:cartZ:%d", v); released.GetCommandId() != want || released.GetReason() != "expired" {
		t.Fatalf("release %v, want command_id %s, reason expired", released, want)
	}
	sale, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 4})
	if err != nil {
		t.Fatalf("selling all 4 after the expiry: %v", err)
	}
	if st := sale.GetResult().GetStores()[0]; st.GetOnHand() != 0 || st.GetReserved() != 0 {
		t.Fatalf("after the sale: %v", st)
	}
}

func TestCommitAndReleaseReservations(t *testing.T) {
	sku := uniq("res")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)
	for _, id := range []string{"a", "b"} {
		if _, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 2, ReservationId: id}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := g.CommitReservation(t.Context(), &inventoryv1.CommitReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.GetResult().GetStores()[0]; st.GetOnHand() != 8 || st.GetReserved() != 2 || st.GetAvailable() != 6 {
		t.Fatalf("after committing a: %v", st)
	}
	rel, err := g.ReleaseReservation(t.Context(), &inventoryv1.ReleaseReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if st := rel.GetResult().GetStores()[0]; st.GetOnHand() != 8 || st.GetReserved() != 0 {
		t.Fatalf("after releasing b: %v", st)
	}
	_, err = g.CommitReservation(t.Context(), &inventoryv1.CommitReservationRequest{CommandId: uniq("c"), SkuId: sku, ReservationId: "b"})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("commit of a released reservation: %v, want FailedPrecondition with ReservationNotActive", err)
	}
	if d, ok := st.Details()[0].(*inventoryv1.ReservationNotActive); !ok || d.GetReservationId() != "b" {
		t.Fatalf("detail %v", st.Details()[0])
	}
	_, err = g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, ReservationId: "x", Ttl: durationpb.New(48 * time.Hour)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 48h reservation: %v, want InvalidArgument", err)
	}
}

// Servers before the "tally:" namespace accepted client commands with
// "expire:" ids. A SKU whose log already holds such a forged id gets its
// reservation released all the same, because the writer's ids moved.
func TestReservationBehindAnOldForgedExpiryIDIsReleased(t *testing.T) {
	k := singlePartition(t)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	w, err := command.OpenWriter(t.Context(), command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger(), Now: now, ExpiryInterval: 20 * time.Millisecond}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	sku := uniq("legacy")
	do := func(c *command.Command) *command.Result {
		t.Helper()
		res, err := w.Do(t.Context(), c)
		if err != nil {
			t.Fatalf("%s: %v", c.ID, err)
		}
		return res
	}
	do(&command.Command{ID: "r1", Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: 4})
	res := do(&command.Command{ID: "hold", Kind: command.KindReserve, SKU: sku, Store: "S1", Quantity: 3, ReservationID: "cartZ", TTL: time.Minute})
	// What an old server let through validation.
	do(&command.Command{ID: fmt.Sprintf("expire:cartZ:%d", res.Version), Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: 1})

	skew.Store(int64(time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.Do(t.Context(), &command.Command{ID: uniq("sale"), Kind: command.KindSale, SKU: sku, Store: "S1", Quantity: 5})
		if err == nil {
			break
		}
		if !errors.As(err, new(*command.InsufficientStockError)) || time.Now().After(deadline) {
			t.Fatalf("selling all 5 after the expiry: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
