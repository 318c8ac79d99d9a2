package command_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// grpcViolations returns the BadRequest field violations of a gRPC error,
// field to description.
func grpcViolations(t testing.TB, err error) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetDescription()
			}
		}
	}
	return out
}

// connectViolations is grpcViolations for a Connect client's error.
func connectViolations(t testing.TB, err error) map[string]string {
	t.Helper()
	out := map[string]string{}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return out
	}
	for _, d := range ce.Details() {
		m, derr := d.Value()
		if derr != nil {
			t.Fatalf("undecodable error detail %s: %v", d.Type(), derr)
		}
		if br, ok := m.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetDescription()
			}
		}
	}
	return out
}

// postJSON sends a Connect JSON request as curl would and returns the
// status and body.
func postJSON(t testing.TB, method, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+shared.addr+"/tally.inventory.v1.CommandService/"+method, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw)
}

func TestNULInFreeTextIsInvalidArgument(t *testing.T) {
	sku := uniq("nul")
	g := shared.grpcClient(t)
	_, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{
		CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, AllowNegative: true, Reason: "a\x00b",
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("sale with NUL in reason: %v, want InvalidArgument", err)
	}
	if v := grpcViolations(t, err); len(v) != 1 || v["reason"] == "" {
		t.Fatalf("field violations %v, want one for reason", v)
	}

	c := shared.connectClient()
	for name, md := range map[string]map[string]string{
		"value": {"till": "a\x00b"},
		"key":   {"ti\x00ll": "7"},
	} {
		_, err = c.ReceiveStock(t.Context(), connect.NewRequest(&inventoryv1.ReceiveStockRequest{
			CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, Metadata: md,
		}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("receipt with NUL in a metadata %s: %v, want InvalidArgument", name, err)
		}
		if v := connectViolations(t, err); len(v) != 1 || v["metadata"] == "" {
			t.Fatalf("metadata %s: field violations %v, want one for metadata", name, v)
		}
	}

	// The JSON escape reaches the same check.
	code, body := postJSON(t, "ReceiveStock", fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1,"reason":"a\u0000b"}`, uniq("c"), sku))
	if code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(`"code":"invalid_argument"`)) || !bytes.Contains([]byte(body), []byte("reason")) {
		t.Fatalf("JSON receipt with \\u0000 in reason: %d %s", code, body)
	}

	// Inside a batch, the command alone is rejected, naming its field.
	r, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, Metadata: map[string]string{"k": "\x00"}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if e := r.GetOutcomes()[0].GetError(); e.GetCode() != "invalid_argument" || len(e.GetFieldViolations()) != 1 ||
		e.GetFieldViolations()[0].GetField() != "commands[0].receipt.metadata" {
		t.Fatalf("batch receipt with NUL in metadata: %v", r.GetOutcomes()[0])
	}

	if ev := readEvents(t, shared.brokers, sku); len(ev) != 0 {
		t.Fatalf("%d events appended for rejected commands", len(ev))
	}
}

func TestUnknownJSONFieldIsInvalidArgumentAndNotApplied(t *testing.T) {
	sku := uniq("json")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)
	cases := []struct {
		name, method, body, field string
	}{
		{"misspelt expected_version", "RecordSale",
			fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1,"expectedVersoin":5}`, uniq("c"), sku), "expectedVersoin"},
		{"field of no command", "ReceiveStock",
			fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1,"colour":"red"}`, uniq("c"), sku), "colour"},
		{"unknown field inside an Apply command", "Apply",
			fmt.Sprintf(`{"commands":[{"receipt":{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1}},{"sale":{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1,"colour":"red"}}]}`,
				uniq("c"), sku, uniq("c"), sku), "colour"},
		{"unknown enum name", "AdjustStock",
			fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantityDelta":1,"adjustmentReason":"ADJUSTMENT_REASON_STOLEN"}`, uniq("c"), sku), "ADJUSTMENT_REASON_STOLEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postJSON(t, tc.method, tc.body)
			if code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(`"code":"invalid_argument"`)) || !bytes.Contains([]byte(body), []byte(tc.field)) {
				t.Fatalf("%s: %d %s, want 400 invalid_argument naming %s", tc.method, code, body, tc.field)
			}
		})
	}
	if ev := readEvents(t, shared.brokers, sku); len(ev) != 1 {
		t.Fatalf("%d events, want only the first receipt: a request with an unknown field was applied", len(ev))
	}
	// The same request spelt right is applied, and its check works.
	code, body := postJSON(t, "RecordSale", fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":1,"expectedVersion":5}`, uniq("c"), sku))
	if code != http.StatusConflict || !bytes.Contains([]byte(body), []byte(`"code":"aborted"`)) {
		t.Fatalf("sale at a wrong expected_version: %d %s, want 409 aborted", code, body)
	}
}

// withUnknown returns m with an unknown varint field number num appended, as
// a client built from a newer or a wrong schema sends it.
func withUnknown[M interface{ ProtoReflect() protoreflect.Message }](m M, num protowire.Number) M {
	b := m.ProtoReflect().GetUnknown()
	b = protowire.AppendTag(b, num, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	m.ProtoReflect().SetUnknown(b)
	return m
}

func TestUnknownBinaryFieldIsInvalidArgumentAndNotApplied(t *testing.T) {
	sku := uniq("bin")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)

	_, err := g.RecordSale(t.Context(), withUnknown(&inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}, 99))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("grpc-go sale with unknown field 99: %v, want InvalidArgument", err)
	}
	if v := grpcViolations(t, err); len(v) != 1 || v["99"] == "" {
		t.Fatalf("field violations %v, want one for 99", v)
	}

	_, err = shared.connectClient().ReceiveStock(t.Context(), connect.NewRequest(
		withUnknown(&inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}, 12)))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Connect receipt with unknown field 12: %v, want InvalidArgument", err)
	}
	if v := connectViolations(t, err); len(v) != 1 || v["12"] == "" {
		t.Fatalf("field violations %v, want one for 12", v)
	}

	// Inside a batch, nested in a well-known type too; the whole batch is
	// refused, as its JSON form is.
	sale := &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, OccurredAt: timestamppb.Now()}
	withUnknown(sale.OccurredAt, 7)
	_, err = g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Sale{Sale: withUnknown(&inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}, 42)}},
		withUnknown(&inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: sale}}, 10),
	}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Apply with unknown fields: %v, want InvalidArgument", err)
	}
	v := grpcViolations(t, err)
	for _, f := range []string{"commands[1].sale.42", "commands[2].10", "commands[2].sale.occurred_at.7"} {
		if v[f] == "" {
			t.Errorf("no field violation for %s in %v", f, v)
		}
	}

	if ev := readEvents(t, shared.brokers, sku); len(ev) != 1 {
		t.Fatalf("%d events, want only the first receipt: a request with an unknown field was applied", len(ev))
	}
}
