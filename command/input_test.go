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
