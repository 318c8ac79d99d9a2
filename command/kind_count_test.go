package command_test

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// A count replaces on_hand whatever the books said, keeps reserved, and
// says by how much the books were wrong, flagged beyond the threshold: in
// the response (also of a retry) and in the event an independent consumer
// reads from the log.
func TestCountReplacesOnHandAndRecordsTheVariance(t *testing.T) {
	g := shared.grpcClient(t)
	sku := uniq("count")
	receive(t, g, sku, "S1", 10)
	if _, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("res"), SkuId: sku, StoreId: "S1", ReservationId: "r1", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	count := &inventoryv1.CountStockRequest{CommandId: uniq("cnt"), SkuId: sku, StoreId: "S1", CountedQuantity: 7, VarianceThreshold: 2, UserId: "clerk-4", Reason: "weekly cycle count"}
	c := shared.connectClient()
	first, err := c.CountStock(t.Context(), connect.NewRequest(count))
	if err != nil {
		t.Fatal(err)
	}
	if m := first.Msg; m.GetVariance() != -3 || !m.GetVarianceFlagged() || m.GetResult().GetSkuVersion() != 3 ||
		m.GetResult().GetStores()[0].GetOnHand() != 7 || m.GetResult().GetStores()[0].GetReserved() != 2 {
		t.Fatalf("count of 7 over 10 on hand, 2 reserved, threshold 2: %v; want variance -3 flagged, on hand 7, reserved 2, version 3", m)
	}
	again, err := c.CountStock(t.Context(), connect.NewRequest(count))
	if err != nil {
		t.Fatal(err)
	}
	if m := again.Msg; !m.GetResult().GetReplayed() || m.GetVariance() != -3 || !m.GetVarianceFlagged() {
		t.Fatalf("retried count answered %v, want the original (variance -3, flagged) replayed", m)
	}
	// Within the threshold: not flagged. Below the reserved units: accepted.
	within, err := g.CountStock(t.Context(), &inventoryv1.CountStockRequest{CommandId: uniq("cnt"), SkuId: sku, StoreId: "S1", CountedQuantity: 5, VarianceThreshold: 2})
	if err != nil || within.GetVariance() != -2 || within.GetVarianceFlagged() {
		t.Fatalf("count of 5 over 7, threshold 2: %v, %v; want variance -2, not flagged", within, err)
	}
	short, err := g.CountStock(t.Context(), &inventoryv1.CountStockRequest{CommandId: uniq("cnt"), SkuId: sku, StoreId: "S1", CountedQuantity: 1})
	if err != nil || short.GetVariance() != -4 || !short.GetVarianceFlagged() || short.GetResult().GetStores()[0].GetReserved() != 2 || !short.GetResult().GetNegativeStock() {
		t.Fatalf("count of 1 with 2 reserved: %v, %v; want accepted, variance -4 flagged, reserved still 2, negative", short, err)
	}

	evs := readEvents(t, shared.brokers, sku)
	if len(evs) != 5 {
		t.Fatalf("%d events, want 5 (receipt, reservation, three counts)", len(evs))
	}
	e := evs[2]
	if e.GetEventType() != inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED || e.GetQuantityDelta() != -3 || e.GetOnHandAfter() != 7 ||
		e.GetReservedAfter() != 2 || !e.GetVarianceFlagged() || e.GetVarianceThreshold() != 2 || e.GetUserId() != "clerk-4" || e.GetReason() != "weekly cycle count" {
		t.Fatalf("count event %v", e)
	}
	if evs[3].GetVarianceFlagged() || evs[4].GetOnHandAfter() != 1 || !evs[4].GetAllowNegative() {
		t.Fatalf("later counts: %v, %v", evs[3], evs[4])
	}

	// In a batch, and a different count under the same id is refused.
	resp, err := c.Apply(t.Context(), connect.NewRequest(&inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Count{Count: &inventoryv1.CountStockRequest{CommandId: uniq("cnt"), SkuId: sku, StoreId: "S2", CountedQuantity: 4}}},
		{Kind: &inventoryv1.Command_Count{Count: &inventoryv1.CountStockRequest{CommandId: count.GetCommandId(), SkuId: sku, StoreId: "S1", CountedQuantity: 8, VarianceThreshold: 2}}},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	out := resp.Msg.GetOutcomes()
	if out[0].GetResult().GetStores()[0].GetOnHand() != 4 || out[1].GetError().GetCode() != connect.CodeAlreadyExists.String() {
		t.Fatalf("batch outcomes %v; want S2 counted to 4, then the reused id refused", out)
	}
}

func TestCountRefusesBadInput(t *testing.T) {
	g := shared.grpcClient(t)
	_, err := g.CountStock(t.Context(), &inventoryv1.CountStockRequest{CommandId: uniq("cnt"), SkuId: uniq("count"), CountedQuantity: -1, VarianceThreshold: -5})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("bad count: %v, want InvalidArgument", err)
	}
	fields := grpcViolations(t, err)
	for _, f := range []string{"store_id", "counted_quantity", "variance_threshold"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("no field violation for %s (got %v)", f, fields)
		}
	}
}
