package command_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

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
	deadline := time.Now().Add(10 * time.Second)
	var released *inventoryv1.InventoryEvent
	for released == nil {
		if time.Now().After(deadline) {
			t.Fatal("the expired reservation was never released")
		}
		time.Sleep(100 * time.Millisecond)
		for _, e := range readEvents(t, shared.brokers, sku) {
			if e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_RESERVATION_RELEASED {
				released = e
			}
		}
	}
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
