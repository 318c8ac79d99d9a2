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
	_, err := FromSale(&inventoryv1.RecordSaleRequest{
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
	if _, err := FromTransfer(ok(nil), t0); err != nil {
		t.Fatalf("valid transfer rejected: %v", err)
	}
	if got := violations(t, mustErr(FromTransfer(ok(&inventoryv1.TransferStockRequest{ToStoreId: "S1"}), t0))); !got["to_store_id"] {
		t.Errorf("transfer to the same store accepted")
	}
	if got := violations(t, mustErr(FromTransfer(ok(&inventoryv1.TransferStockRequest{Quantity: MaxQuantity + 1}), t0))); !got["quantity"] {
		t.Errorf("absurd quantity accepted")
	}
	if got := violations(t, mustErr(FromAdjustment(&inventoryv1.AdjustStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", QuantityDelta: -1}, t0))); !got["adjustment_reason"] {
		t.Errorf("adjustment without reason accepted")
	}
	v := int64(-1)
	if got := violations(t, mustErr(FromReceipt(&inventoryv1.ReceiveStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1, ExpectedVersion: &v}, t0))); !got["expected_version"] {
		t.Errorf("negative expected_version accepted")
	}
	if got := violations(t, mustErr(FromBatchCommand(3, &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{}}}, t0))); !got["commands[3].sale.sku_id"] {
		t.Errorf("batch field paths not prefixed: %v", got)
	}
}

func mustErr(_ *Command, err error) error { return err }
