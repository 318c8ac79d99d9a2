package command

import (
	"errors"
	"strings"
	"testing"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func violations(t *testing.T, err error) map[string]bool {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	fields := map[string]bool{}
	for _, v := range ve.Violations {
		fields[v.Field] = true
	}
	return fields
}

func TestValidationReportsEveryField(t *testing.T) {
	now := t0
	_, err := FromRequest(&inventoryv1.RecordSaleRequest{
		CommandId:  strings.Repeat("x", MaxIDBytes+1),
		SkuId:      "",
		StoreId:    "has space",
		Quantity:   0,
		OccurredAt: timestamppb.New(now.Add(time.Hour)),
		Metadata:   map[string]string{"k": strings.Repeat("v", MaxMetadataBytes)},
	}, now)
	got := violations(t, err)
	for _, f := range []string{"command_id", "sku_id", "store_id", "quantity", "occurred_at", "metadata"} {
		if !got[f] {
			t.Errorf("no violation for %s in %v", f, err)
		}
	}
}

func TestValidationLimits(t *testing.T) {
	ok := func(r *inventoryv1.TransferStockRequest) *inventoryv1.TransferStockRequest {
		base := &inventoryv1.TransferStockRequest{CommandId: "c", SkuId: "A", FromStoreId: "S1", ToStoreId: "S2", Quantity: 1}
		if r != nil {
			if r.ToStoreId != "" {
				base.ToStoreId = r.ToStoreId
			}
			if r.Quantity != 0 {
				base.Quantity = r.Quantity
			}
		}
		return base
	}
	if _, err := FromRequest(ok(nil), t0); err != nil {
		t.Fatalf("valid transfer rejected: %v", err)
	}
	if got := violations(t, mustErr(FromRequest(ok(&inventoryv1.TransferStockRequest{ToStoreId: "S1"}), t0))); !got["to_store_id"] {
		t.Errorf("transfer to the same store accepted")
	}
	if got := violations(t, mustErr(FromRequest(ok(&inventoryv1.TransferStockRequest{Quantity: MaxQuantity + 1}), t0))); !got["quantity"] {
		t.Errorf("absurd quantity accepted")
	}
	if got := violations(t, mustErr(FromRequest(&inventoryv1.AdjustStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", QuantityDelta: -1}, t0))); !got["adjustment_reason"] {
		t.Errorf("adjustment without reason accepted")
	}
	v := int64(-1)
	if got := violations(t, mustErr(FromRequest(&inventoryv1.ReceiveStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ExpectedVersion: &v}, t0))); !got["expected_version"] {
		t.Errorf("negative expected_version accepted")
	}
	if got := violations(t, mustErr(FromBatchCommand(3, &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{}}}, t0))); !got["commands[3].sale.sku_id"] {
		t.Errorf("batch field paths not prefixed: %v", got)
	}
}

func mustErr(_ *Command, err error) error { return err }

// PostgreSQL text and jsonb cannot hold U+0000, so no free text that lands in
// an event may carry it; every command kind is checked, also inside Apply.
func TestFreeTextWithNULIsRejected(t *testing.T) {
	nul := map[string]string{"till": "a\x00b"}
	nulKey := map[string]string{"a\x00b": "x"}
	cases := []struct {
		name  string
		err   error
		field string
	}{
		{"sale reason", mustErr(FromRequest(&inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Reason: "a\x00b"}, t0)), "reason"},
		{"sale metadata value", mustErr(FromRequest(&inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Metadata: nul}, t0)), "metadata"},
		{"sale metadata key", mustErr(FromRequest(&inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Metadata: nulKey}, t0)), "metadata"},
		{"sale user_id", mustErr(FromRequest(&inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, UserId: "u\x00"}, t0)), "user_id"},
		{"return reason", mustErr(FromRequest(&inventoryv1.RecordReturnRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Reason: "\x00"}, t0)), "reason"},
		{"return metadata", mustErr(FromRequest(&inventoryv1.RecordReturnRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Metadata: nul}, t0)), "metadata"},
		{"receipt reason", mustErr(FromRequest(&inventoryv1.ReceiveStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Reason: "a\x00b"}, t0)), "reason"},
		{"receipt metadata", mustErr(FromRequest(&inventoryv1.ReceiveStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Metadata: nul}, t0)), "metadata"},
		{"adjustment reason", mustErr(FromRequest(&inventoryv1.AdjustStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", QuantityDelta: 1,
			AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND, Reason: "a\x00b"}, t0)), "reason"},
		{"adjustment metadata", mustErr(FromRequest(&inventoryv1.AdjustStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", QuantityDelta: 1,
			AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND, Metadata: nul}, t0)), "metadata"},
		{"transfer reason", mustErr(FromRequest(&inventoryv1.TransferStockRequest{CommandId: "c", SkuId: "A", FromStoreId: "S", ToStoreId: "T", Quantity: 1, Reason: "a\x00b"}, t0)), "reason"},
		{"transfer metadata", mustErr(FromRequest(&inventoryv1.TransferStockRequest{CommandId: "c", SkuId: "A", FromStoreId: "S", ToStoreId: "T", Quantity: 1, Metadata: nul}, t0)), "metadata"},
		{"reserve metadata", mustErr(FromRequest(&inventoryv1.ReserveRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ReservationId: "r", Metadata: nul}, t0)), "metadata"},
		{"reserve reservation_id", mustErr(FromRequest(&inventoryv1.ReserveRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ReservationId: "r\x00"}, t0)), "reservation_id"},
		{"commit metadata", mustErr(FromRequest(&inventoryv1.CommitReservationRequest{CommandId: "c", SkuId: "A", ReservationId: "r", Metadata: nul}, t0)), "metadata"},
		{"release user_id", mustErr(FromRequest(&inventoryv1.ReleaseReservationRequest{CommandId: "c", SkuId: "A", ReservationId: "r", UserId: "\x00"}, t0)), "user_id"},
		{"reorder policy user_id", mustErr(FromRequest(&inventoryv1.SetReorderPolicyRequest{CommandId: "c", SkuId: "A", StoreId: "S", ReorderPoint: 1, TargetLevel: 2, UserId: "\x00"}, t0)), "user_id"},
		{"batch sale reason", mustErr(FromBatchCommand(2, &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{
			CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, Reason: "a\x00b"}}}, t0)), "commands[2].sale.reason"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := violations(t, tc.err); !got[tc.field] || len(got) != 1 {
				t.Fatalf("violations %v, want exactly %s", got, tc.field)
			}
		})
	}
	// Tabs and newlines are ordinary text.
	if _, err := FromRequest(&inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1,
		Reason: "line 1\nline 2\tend", Metadata: map[string]string{"note": "a\nb"}}, t0); err != nil {
		t.Fatalf("text with a newline and a tab: %v", err)
	}
}

func TestReservedCommandIDPrefixesAreRejected(t *testing.T) {
	for _, id := range []string{"tally:expire:cart:2", "tally:anything", "expire:cart:2"} {
		got := violations(t, mustErr(FromRequest(&inventoryv1.RecordSaleRequest{CommandId: id, SkuId: "A", StoreId: "S", Quantity: 1}, t0)))
		if !got["command_id"] || len(got) != 1 {
			t.Errorf("command_id %q: violations %v, want command_id", id, got)
		}
	}
	got := violations(t, mustErr(FromBatchCommand(1, &inventoryv1.Command{Kind: &inventoryv1.Command_ReleaseReservation{ReleaseReservation: &inventoryv1.ReleaseReservationRequest{
		CommandId: "tally:expire:cart:2", SkuId: "A", ReservationId: "cart"}}}, t0)))
	if !got["commands[1].release_reservation.command_id"] {
		t.Errorf("batch release with a system id: %v", got)
	}
	// Only the exact prefixes are reserved: ids are opaque bytes.
	for _, id := range []string{"Tally:x", "expired:x", "my-tally:x", "expire"} {
		if _, err := FromRequest(&inventoryv1.RecordSaleRequest{CommandId: id, SkuId: "A", StoreId: "S", Quantity: 1}, t0); err != nil {
			t.Errorf("command_id %q: %v", id, err)
		}
	}
}
