package serve_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// span is what the test's OTLP receiver keeps of an exported span.
type span struct {
	name              string
	trace, id, parent string
	attrs             map[string]string
}

// collector is an OTLP/HTTP trace receiver: what an OpenTelemetry
// collector would receive from Tally.
type collector struct {
	mu    sync.Mutex
	spans []span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	req := &collectortrace.ExportTraceServiceRequest{}
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range s.GetAttributes() {
					v := a.GetValue()
					attrs[a.GetKey()] = v.GetStringValue()
					if _, ok := v.GetValue().(*commonpb.AnyValue_IntValue); ok {
						attrs[a.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
					}
				}
				c.spans = append(c.spans, span{name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), attrs: attrs})
			}
		}
	}
	c.mu.Unlock()
	b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

// find returns the span named name in trace, if exported.
func (c *collector) find(trace, name string) (span, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.spans {
		if s.trace == trace && s.name == name {
			return s, true
		}
	}
	return span{}, false
}

// With --otlp-endpoint, a command's trace (continuing the caller's
// traceparent) has the RPC's span, the partition writer's span under it
// and, across Kafka, the projector's span under that; a read has its own
// RPC span. What is checked is what an OTLP collector receives.
func TestTracesFollowACommandThroughWriterKafkaAndProjector(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // export every 50 ms
	col := &collector{}
	otlp := httptest.NewServer(col)
	defer otlp.Close()
	addr := freeAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []string{"--addr", addr, "--data-dir", t.TempDir(), "--kafka-listen", freeAddr(), "--partitions", "1", "--log-level", "warn",
			"--insecure-no-auth", "--otlp-endpoint", otlp.URL, "--otlp-sample", "0"})
	}()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmds, qry := inventoryv1.NewCommandServiceClient(conn), inventoryv1.NewQueryServiceClient(conn)

	// The caller's trace, sampled: followed although --otlp-sample is 0.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	traced := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	var version int64
	deadline := time.Now().Add(90 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(traced, 2*time.Second)
		r, err := cmds.ReceiveStock(cctx, &inventoryv1.ReceiveStockRequest{CommandId: "traced-1", SkuId: "SKU-T", StoreId: "S1", Quantity: 5})
		ccancel()
		if err == nil {
			version = r.GetResult().GetSkuVersion()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tally serve not taking commands: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	const readTrace = "5bf92f3577b34da6a3ce929d0e0e4736"
	readCtx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+readTrace+"-00f067aa0ba902b8-01")
	if _, err := qry.GetStock(readCtx, &inventoryv1.GetStockRequest{SkuId: "SKU-T", StoreId: "S1", MinVersion: version}); err != nil {
		t.Fatal(err)
	}
	// An untraced command (sample 0) exports nothing.
	if _, err := cmds.ReceiveStock(context.Background(), &inventoryv1.ReceiveStockRequest{CommandId: "untraced-1", SkuId: "SKU-U", StoreId: "S1", Quantity: 5}); err != nil {
		t.Fatal(err)
	}

	var rpc, writer, projected, read span
	wait := time.Now().Add(30 * time.Second)
	for {
		var ok [4]bool
		rpc, ok[0] = col.find(traceID, "tally.inventory.v1.CommandService/ReceiveStock")
		writer, ok[1] = col.find(traceID, "tally.writer.append")
		projected, ok[2] = col.find(traceID, "tally.projector.project")
		read, ok[3] = col.find(readTrace, "tally.inventory.v1.QueryService/GetStock")
		if ok == [4]bool{true, true, true, true} {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("spans received within 30s: rpc %v, writer %v, projector %v, read %v", ok[0], ok[1], ok[2], ok[3])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rpc.parent != "00f067aa0ba902b7" || writer.parent != rpc.id || projected.parent != writer.id {
		t.Fatalf("not one chain: rpc %+v (parent want the caller's), writer %+v, projector %+v", rpc, writer, projected)
	}
	if projected.attrs["tally.sku"] != "SKU-T" || projected.attrs["tally.sku_version"] != strconv.FormatInt(version, 10) || read.parent != "00f067aa0ba902b8" {
		t.Fatalf("projector span attributes %v, read span %+v", projected.attrs, read)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, s := range col.spans {
		if s.attrs["tally.sku"] == "SKU-U" {
			t.Errorf("a span of the untraced command was exported: %+v", s)
		}
	}
}
