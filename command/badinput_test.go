package command_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/server"
)

// codeOf is the RPC code of an error from either client (gRPC and Connect
// number their codes alike).
func codeOf(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.Code(status.Code(err))
}

// TestBadInputCatalogue is DESIGN.md's catalogue of hostile input (Errors,
// "Bad input"), row for row, through the generated gRPC and Connect clients
// against a running command service on a real broker: each bad request
// gets its code, the rule it broke is named, and nothing is appended. The
// rows the API cannot reach are tested elsewhere: an overflow of on_hand
// or reserved (TestDecide, FuzzAggregate), garbage records on the topic
// (projector's TestGarbageRecordIsDeadLetteredAndProjectionContinues,
// FuzzDecodeRecord) and forged page tokens (query's FuzzPageToken).
func TestBadInputCatalogue(t *testing.T) {
	g := shared.grpcClient(t)
	c := shared.connectClient()
	gz := inventoryv1connect.NewCommandServiceClient(http.DefaultClient, "http://"+shared.addr, connect.WithSendGzip())
	big := strings.Repeat("x", server.DefaultMaxRequestBytes+1)

	sale := func(p string) *inventoryv1.RecordSaleRequest {
		return &inventoryv1.RecordSaleRequest{CommandId: uniq("bad"), SkuId: p + "-sku", StoreId: "S1", Quantity: 1}
	}
	for _, tt := range []struct {
		name string
		call func(p string) error // p: a prefix of every sku the call names
		want connect.Code
		// rule is in the error's message (the limit, the field and its rule).
		rule string
	}{
		{"oversized message (gRPC)", func(p string) error {
			r := sale(p)
			r.Reason = big
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeResourceExhausted, fmt.Sprint(server.DefaultMaxRequestBytes)},
		{"oversized message (Connect)", func(p string) error {
			r := sale(p)
			r.Metadata = map[string]string{"k": big}
			_, err := c.RecordSale(t.Context(), connect.NewRequest(r))
			return err
		}, connect.CodeResourceExhausted, fmt.Sprint(server.DefaultMaxRequestBytes)},
		{"gzip body that decompresses beyond the limit", func(p string) error {
			r := sale(p)
			r.Reason = strings.Repeat("x", 16*server.DefaultMaxRequestBytes)
			_, err := gz.RecordSale(t.Context(), connect.NewRequest(r))
			return err
		}, connect.CodeResourceExhausted, fmt.Sprint(server.DefaultMaxRequestBytes)},
		{"1 MB sku_id", func(p string) error {
			r := sale(p)
			r.SkuId = p + strings.Repeat("x", 1<<20)
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "sku_id: at most 128 bytes"},
		{"NUL in store_id", func(p string) error {
			r := sale(p)
			r.StoreId = "S\x001"
			_, err := c.RecordSale(t.Context(), connect.NewRequest(r))
			return err
		}, connect.CodeInvalidArgument, "store_id: must not contain control characters: U+0000"},
		{"NUL in command_id", func(p string) error {
			r := sale(p)
			r.CommandId = "c\x00"
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "command_id: must not contain control characters: U+0000"},
		{"zero-width space in sku_id", func(p string) error {
			r := sale(p)
			r.SkuId = p + "\u200b"
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "sku_id: must not contain invisible characters"},
		{"byte order mark in user_id", func(p string) error {
			r := sale(p)
			r.UserId = "\ufeffalice"
			_, err := c.RecordSale(t.Context(), connect.NewRequest(r))
			return err
		}, connect.CodeInvalidArgument, "user_id: must not contain invisible characters"},
		{"bidi override in store_id", func(p string) error {
			r := sale(p)
			r.StoreId = "S1\u202e"
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "store_id: must not contain bidirectional overrides or isolates: U+202E"},
		{"bidi isolate in reservation_id", func(p string) error {
			_, err := g.Reserve(t.Context(), &inventoryv1.ReserveRequest{CommandId: uniq("bad"), SkuId: p + "-sku", StoreId: "S1", ReservationId: "r\u2067", Quantity: 1})
			return err
		}, connect.CodeInvalidArgument, "reservation_id: must not contain bidirectional overrides or isolates: U+2067"},
		{"unknown enum value", func(p string) error {
			_, err := g.AdjustStock(t.Context(), &inventoryv1.AdjustStockRequest{CommandId: uniq("bad"), SkuId: p + "-sku", StoreId: "S1", QuantityDelta: 1, AdjustmentReason: 99})
			return err
		}, connect.CodeInvalidArgument, "adjustment_reason"},
		{"int64 max quantity", func(p string) error {
			_, err := g.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("bad"), SkuId: p + "-sku", StoreId: "S1", Quantity: math.MaxInt64})
			return err
		}, connect.CodeInvalidArgument, "quantity: at most 1000000"},
		{"int64 min adjustment", func(p string) error {
			_, err := c.AdjustStock(t.Context(), connect.NewRequest(&inventoryv1.AdjustStockRequest{CommandId: uniq("bad"), SkuId: p + "-sku", StoreId: "S1",
				QuantityDelta: math.MinInt64, AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED}))
			return err
		}, connect.CodeInvalidArgument, "quantity_delta: at most 1000000 units either way"},
		{"too many metadata entries", func(p string) error {
			r := sale(p)
			r.Metadata = map[string]string{}
			for i := range 33 {
				r.Metadata[fmt.Sprint("k", i)] = "v"
			}
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "metadata: at most 32 entries, got 33"},
		{"huge metadata value", func(p string) error {
			r := sale(p)
			r.Metadata = map[string]string{"k": strings.Repeat("v", 1<<20)}
			_, err := g.RecordSale(t.Context(), r)
			return err
		}, connect.CodeInvalidArgument, "metadata: at most 4096 bytes of keys and values"},
		{"oversized metadata key", func(p string) error {
			r := sale(p)
			r.Metadata = map[string]string{strings.Repeat("k", 65): "v"}
			_, err := c.RecordSale(t.Context(), connect.NewRequest(r))
			return err
		}, connect.CodeInvalidArgument, "metadata: keys must be 1 to 64 bytes"},
		{"batch beyond MaxBatchCommands", func(p string) error {
			cmds := make([]*inventoryv1.Command, 1001)
			for i := range cmds {
				cmds[i] = &inventoryv1.Command{Kind: &inventoryv1.Command_Sale{Sale: sale(p)}}
			}
			_, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: cmds})
			return err
		}, connect.CodeInvalidArgument, "commands: 1 to 1000 commands, got 1001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := uniq("hostile")
			err := tt.call(p)
			if codeOf(err) != tt.want || !strings.Contains(err.Error(), tt.rule) {
				t.Fatalf("got %v (%v), want %v naming %q", codeOf(err), err, tt.want, tt.rule)
			}
			if evs := readAllEvents(t, shared.brokers, p); len(evs) > 0 {
				t.Fatalf("%d events appended: %v", len(evs), evs)
			}
		})
	}

	t.Run("random bytes to the port", func(t *testing.T) {
		for _, prefix := range [][]byte{nil, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), []byte("POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")} {
			garbage := make([]byte, 64<<10)
			_, _ = rand.Read(garbage)
			conn, err := net.Dial("tcp", shared.addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = conn.Write(append(prefix, garbage...)) // the server may close before taking it all
			n, err := io.Copy(io.Discard, conn)
			conn.Close()
			if err != nil && !isReset(err) {
				t.Fatalf("after %q and garbage: %v (read %d bytes), want the connection closed", prefix, err, n)
			}
		}
		sku := uniq("after-garbage")
		receive(t, g, sku, "S1", 2) // the server still serves
		if evs := readEvents(t, shared.brokers, sku); len(evs) != 1 {
			t.Fatalf("%d events after a valid call, want 1", len(evs))
		}
	})
}

// isReset says err is the peer closing a connection with data unread.
func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout() && bytes.Contains([]byte(err.Error()), []byte("reset"))
}
