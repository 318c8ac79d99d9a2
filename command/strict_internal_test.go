package command

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// applyOf is an Apply request of n sales.
func applyOf(n int) *inventoryv1.ApplyRequest {
	req := &inventoryv1.ApplyRequest{}
	for i := range n {
		req.Commands = append(req.Commands, &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{
			CommandId: fmt.Sprintf("c-%d", i), SkuId: fmt.Sprintf("SKU-%d", i), StoreId: "S1", Quantity: 1, Metadata: map[string]string{"till": "7"},
		}}})
	}
	return req
}

// hasUnknownFields finds an unknown field wherever unknownFields names one.
func TestHasUnknownFieldsAgreesWithUnknownFields(t *testing.T) {
	for _, at := range []int{-1, 0, 57, 99} {
		req := applyOf(100)
		if at >= 0 {
			sale := req.Commands[at].GetSale()
			sale.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
		}
		has, named := hasUnknownFields(req.ProtoReflect()), unknownFields(req.ProtoReflect(), "", nil)
		if has != (at >= 0) || has != (len(named) > 0) {
			t.Fatalf("unknown field at %d: hasUnknownFields %v, unknownFields %v", at, has, named)
		}
	}
}

// The check every request pays, on an Apply of 100 sales without unknown
// fields.
func BenchmarkUnknownFieldsCheck(b *testing.B) {
	req := applyOf(100)
	m := proto.Message(req).ProtoReflect()
	for b.Loop() {
		if hasUnknownFields(m) {
			b.Fatal("unknown fields")
		}
	}
}

// What the check cost when it named every path (before hasUnknownFields).
func BenchmarkUnknownFieldsNamed(b *testing.B) {
	m := proto.Message(applyOf(100)).ProtoReflect()
	for b.Loop() {
		if len(unknownFields(m, "", nil)) > 0 {
			b.Fatal("unknown fields")
		}
	}
}
