package command_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/apierr"
)

var fuzzNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// FuzzValidate validates requests of every kind built from random fields:
// each is refused with field violations, or accepted as a command whose
// every field obeys the input limits. It never panics, and refuses the same
// request the same way twice.
func FuzzValidate(f *testing.F) {
	f.Add(uint8(0), "c-1", "SKU-1", "S1", "u1", "r", "k", "v", int64(1), int64(0))
	f.Add(uint8(1), "c-2", "SKU\u200b1", "S1\u202e", "", "", "", "", int64(1_000_001), int64(-1))
	f.Add(uint8(2), "", "\x00", "S 1", "u\x7f", "a\x00b", "", "", int64(-9223372036854775808), int64(1<<40))
	f.Add(uint8(3), "c-3", "SKU-1", "S1", "u1", "", "k\x00", "\xff", int64(9223372036854775807), int64(0))
	f.Add(uint8(4), "tally:x", "cafe\u0301", "S1", "u1", strings.Repeat("x", 600), strings.Repeat("k", 65), "v", int64(5), int64(9))
	f.Add(uint8(5), "c-5", strings.Repeat("s", 129), "S1", "\ufeff", "", "k", strings.Repeat("v", 5000), int64(3), int64(3))
	f.Fuzz(func(t *testing.T, kind uint8, id, sku, store, user, reason, mkey, mval string, q, extra int64) {
		var md map[string]string
		if mkey != "" || mval != "" {
			md = map[string]string{mkey: mval}
		}
		at := timestamppb.New(fuzzNow.Add(time.Duration(extra)))
		var req proto.Message
		switch kind % 6 {
		case 0:
			req = &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: store, UserId: user, Reason: reason, Metadata: md, Quantity: q, OccurredAt: at}
		case 1:
			req = &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: store, UserId: user, Reason: reason, Metadata: md, Quantity: q}
		case 2:
			req = &inventoryv1.AdjustStockRequest{CommandId: id, SkuId: sku, StoreId: store, UserId: user, Reason: reason, Metadata: md,
				QuantityDelta: q, AdjustmentReason: inventoryv1.AdjustmentReason(extra)}
		case 3:
			req = &inventoryv1.TransferStockRequest{CommandId: id, SkuId: sku, FromStoreId: store, ToStoreId: user, Reason: reason, Metadata: md, Quantity: q}
		case 4:
			req = &inventoryv1.ReserveRequest{CommandId: id, SkuId: sku, StoreId: store, ReservationId: user, Quantity: q, Metadata: md}
		case 5:
			req = &inventoryv1.CountStockRequest{CommandId: id, SkuId: sku, StoreId: store, CountedQuantity: q, VarianceThreshold: extra, Metadata: md}
		}
		cmd, err := command.FromRequest(req, fuzzNow)
		checkValidated(t, cmd, err)
		if _, again := command.FromRequest(req, fuzzNow); errText(again) != errText(err) {
			t.Fatalf("refused as %v, then as %v", err, again)
		}
	})
}

// FuzzValidateBatchCommand validates random bytes decoded as an Apply's
// command, so any kind and any field (unknown enum values, huge maps) can
// come up.
func FuzzValidateBatchCommand(f *testing.F) {
	for _, c := range []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: "c", SkuId: "A", StoreId: "S", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Adjustment{Adjustment: &inventoryv1.AdjustStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", QuantityDelta: -2, AdjustmentReason: 99}}},
		{Kind: &inventoryv1.Command_Transfer{Transfer: &inventoryv1.TransferStockRequest{CommandId: "c", SkuId: "A", FromStoreId: "S", ToStoreId: "S", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Reserve{Reserve: &inventoryv1.ReserveRequest{CommandId: "c", SkuId: "A", StoreId: "S", ReservationId: "r\u2066", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Count{Count: &inventoryv1.CountStockRequest{CommandId: "c", SkuId: "A", StoreId: "S", CountedQuantity: 7}}},
		{},
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bc := &inventoryv1.Command{}
		if proto.Unmarshal(data, bc) != nil {
			return
		}
		cmd, err := command.FromBatchCommand(3, bc, fuzzNow)
		checkValidated(t, cmd, err)
		var ve *command.ValidationError
		if errors.As(err, &ve) {
			for _, v := range ve.Violations {
				if !strings.HasPrefix(v.Field, "commands[3]") {
					t.Fatalf("violation of %q outside commands[3]", v.Field)
				}
			}
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkValidated fails t unless err is field violations or cmd obeys every
// input limit.
func checkValidated(t *testing.T, cmd *command.Command, err error) {
	t.Helper()
	if err != nil {
		var ve *command.ValidationError
		if !errors.As(err, &ve) || len(ve.Violations) == 0 {
			t.Fatalf("refused with %T %v, want field violations", err, err)
		}
		for _, v := range ve.Violations {
			if v.Field == "" || v.Description == "" {
				t.Fatalf("violation without a field or a rule: %+v", v)
			}
		}
		return
	}
	for field, v := range map[string]string{"command_id": cmd.ID, "sku_id": cmd.SKU, "store_id": cmd.Store,
		"to_store_id": cmd.ToStore, "user_id": cmd.UserID, "reservation_id": cmd.ReservationID} {
		if p := apierr.IDProblem(v, false); p != "" {
			t.Fatalf("accepted %s %q: %s", field, v, p)
		}
	}
	if cmd.SKU == "" || cmd.ID == "" {
		t.Fatalf("accepted a command without sku_id or command_id: %+v", cmd)
	}
	if len(cmd.Reason) > command.MaxTextBytes || !utf8.ValidString(cmd.Reason) || strings.ContainsRune(cmd.Reason, 0) {
		t.Fatalf("accepted reason %q", cmd.Reason)
	}
	if len(cmd.Metadata) > command.MaxMetadataEntries {
		t.Fatalf("accepted %d metadata entries", len(cmd.Metadata))
	}
	size := 0
	for k, v := range cmd.Metadata {
		size += len(k) + len(v)
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) || strings.ContainsRune(k+v, 0) {
			t.Fatalf("accepted metadata %q: %q", k, v)
		}
	}
	if size > command.MaxMetadataBytes {
		t.Fatalf("accepted %d bytes of metadata", size)
	}
	if cmd.Quantity > command.MaxQuantity || cmd.Quantity < -command.MaxQuantity {
		t.Fatalf("accepted quantity %d", cmd.Quantity)
	}
	if cmd.Kind == command.KindAdjustment && inventoryv1.AdjustmentReason_name[int32(cmd.AdjustmentReason)] == "" {
		t.Fatalf("accepted unknown adjustment_reason %d", cmd.AdjustmentReason)
	}
}
