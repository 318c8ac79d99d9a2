package serve_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/testenv"
)

// The whole of `tally serve`, as a user runs it: embedded Kafka, its own
// Postgres cluster, every service on one port.
var (
	addr, kafkaAddr, dataDir string
	bqEndpoint, bqStorage    string
	cmds                     inventoryv1.CommandServiceClient
	qry                      inventoryv1.QueryServiceClient
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tally-serve-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	addr, kafkaAddr, dataDir = freeAddr(), freeAddr(), dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The BigQuery projection runs too, into an emulator.
	emu, err := testenv.StartBigQuery(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigquery emulator:", err)
		return 1
	}
	defer emu.Stop()
	bqEndpoint, bqStorage = emu.Endpoint, emu.GRPCEndpoint
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []string{"--addr", addr, "--data-dir", dir, "--kafka-listen", kafkaAddr, "--partitions", "3", "--log-level", "warn", "--watch-buffer", "512", "--insecure-no-auth",
			"--bigquery-project", testenv.BigQueryProject, "--bigquery-dataset", bqDataset, "--bigquery-endpoint", bqEndpoint, "--bigquery-storage-endpoint", bqStorage,
			"--bigquery-batch-wait", "200ms", "--bigquery-merge-interval", "500ms"})
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	cmds, qry = inventoryv1.NewCommandServiceClient(conn), inventoryv1.NewQueryServiceClient(conn)
	if err := waitServing(done); err != nil {
		fmt.Fprintln(os.Stderr, "tally serve did not start:", err)
		cancel()
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "tally serve stopped with:", err)
		return 1
	}
	return code
}

// waitServing waits until a command round-trips (writers assigned).
func waitServing(done chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: "warmup", SkuId: "warmup", StoreId: "S", Quantity: 1})
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving after 60s")
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var seq atomic.Int64

func uniq(p string) string { return fmt.Sprintf("%s-%d-%d", p, time.Now().UnixNano(), seq.Add(1)) }

// getStock reads with min_version. The server answers within 2 s, with the
// level or Unavailable; a loaded CI machine can need more than one round,
// and a retry is what the contract tells clients to do.
func getStock(t *testing.T, sku, store string, minVersion int64) *inventoryv1.StockLevel {
	t.Helper()
	for attempt := 1; ; attempt++ {
		r, err := qry.GetStock(t.Context(), &inventoryv1.GetStockRequest{SkuId: sku, StoreId: store, MinVersion: minVersion})
		if status.Code(err) == codes.Unavailable && attempt < 10 {
			t.Logf("GetStock %s/%s min_version %d: %v; retrying", sku, store, minVersion, err)
			continue
		}
		if err != nil {
			t.Fatalf("GetStock %s/%s min_version %d: %v", sku, store, minVersion, err)
		}
		if r.GetProjectedSkuVersion() < minVersion {
			t.Fatalf("GetStock answered at projected version %d < min_version %d", r.GetProjectedSkuVersion(), minVersion)
		}
		return r.GetLevel()
	}
}

func TestEveryCommandShowsInQueries(t *testing.T) {
	sku := uniq("sku")
	ctx := t.Context()
	must := func(r interface {
		GetResult() *inventoryv1.CommandResult
	}, err error) int64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r.GetResult().GetSkuVersion()
	}
	must(cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 20}))
	must(cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 5}))
	must(cmds.RecordReturn(ctx, &inventoryv1.RecordReturnRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1}))
	must(cmds.AdjustStock(ctx, &inventoryv1.AdjustStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", QuantityDelta: -2, AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_DAMAGED}))
	v := must(cmds.TransferStock(ctx, &inventoryv1.TransferStockRequest{CommandId: uniq("c"), SkuId: sku, FromStoreId: "S1", ToStoreId: "S2", Quantity: 4}))
	if v != 6 {
		t.Fatalf("version after 5 commands (transfer = 2 events) is %d, want 6", v)
	}

	s1, s2 := getStock(t, sku, "S1", v), getStock(t, sku, "S2", v)
	if s1.GetOnHand() != 10 || s2.GetOnHand() != 4 {
		t.Fatalf("on_hand S1 %d, S2 %d; want 10 and 4", s1.GetOnHand(), s2.GetOnHand())
	}
	if s1.GetSkuVersion() != 5 || s2.GetSkuVersion() != 6 {
		t.Fatalf("level versions S1 %d, S2 %d; want 5 and 6", s1.GetSkuVersion(), s2.GetSkuVersion())
	}

	h, err := qry.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: "S1"})
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []inventoryv1.EventType{
		inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT, inventoryv1.EventType_EVENT_TYPE_STOCK_ADJUSTMENT,
		inventoryv1.EventType_EVENT_TYPE_RETURN, inventoryv1.EventType_EVENT_TYPE_SALE, inventoryv1.EventType_EVENT_TYPE_RECEIPT,
	}
	wantOnHand := []int64{10, 14, 16, 15, 20}
	if len(h.GetEvents()) != len(wantTypes) {
		t.Fatalf("history has %d events, want %d", len(h.GetEvents()), len(wantTypes))
	}
	for i, e := range h.GetEvents() {
		if e.GetEventType() != wantTypes[i] || e.GetOnHandAfter() != wantOnHand[i] {
			t.Errorf("history[%d] = %v on_hand %d, want %v on_hand %d", i, e.GetEventType(), e.GetOnHandAfter(), wantTypes[i], wantOnHand[i])
		}
	}
	h2, err := qry.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: sku, StoreId: "S2"})
	if err != nil || len(h2.GetEvents()) != 1 || h2.GetEvents()[0].GetCounterpartStoreId() != "S1" {
		t.Fatalf("S2 history %v, %v: want the TRANSFER_IN from S1", h2.GetEvents(), err)
	}
}

func TestReadYourWritesWithMinVersion(t *testing.T) {
	sku := uniq("ryw")
	r, err := cmds.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 100})
	if err != nil {
		t.Fatal(err)
	}
	getStock(t, sku, "S1", r.GetResult().GetSkuVersion())
	for i := range 30 {
		sale, err := cmds.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1})
		if err != nil {
			t.Fatal(err)
		}
		l := getStock(t, sku, "S1", sale.GetResult().GetSkuVersion())
		if l.GetOnHand() != int64(99-i) {
			t.Fatalf("sale %d: GetStock with its version sees on_hand %d, want %d", i, l.GetOnHand(), 99-i)
		}
	}
	// A version that will never come: Unavailable with what we have.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = qry.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: "S1", MinVersion: 1000})
	if st := status.Convert(err); st.Code() != codes.Unavailable || len(st.Details()) != 1 {
		t.Fatalf("unreachable min_version: %v, want Unavailable with ProjectionBehind", err)
	} else if pb, ok := st.Details()[0].(*inventoryv1.ProjectionBehind); !ok || pb.GetProjectedVersion() != 31 {
		t.Fatalf("detail %v, want ProjectionBehind at 31", st.Details()[0])
	}
}

// The late sale's occurred_at travels from the command through the log and
// the projector to the ledger (query/ tests the as-of arithmetic itself).
func TestStockAsOf(t *testing.T) {
	sku := uniq("asof")
	ctx := t.Context()
	if _, err := cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 10}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	between := time.Now()
	time.Sleep(20 * time.Millisecond)
	// An offline till's sale that happened before `between`, recorded after.
	sale, err := cmds.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 3,
		OccurredAt: timestamppb.New(between.Add(-10 * time.Millisecond))})
	if err != nil {
		t.Fatal(err)
	}
	getStock(t, sku, "S1", sale.GetResult().GetSkuVersion())

	asOf := func(at time.Time, basis inventoryv1.TimeBasis) *inventoryv1.GetStockAsOfResponse {
		t.Helper()
		r, err := qry.GetStockAsOf(ctx, &inventoryv1.GetStockAsOfRequest{SkuId: sku, StoreId: "S1", AsOf: timestamppb.New(at), Basis: basis})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := asOf(between, inventoryv1.TimeBasis_TIME_BASIS_UNSPECIFIED); r.GetOnHand() != 10 || r.GetSkuVersion() != 1 || r.GetBasis() != inventoryv1.TimeBasis_TIME_BASIS_RECORDED {
		t.Errorf("as recorded between the events: %v, want on_hand 10 at version 1", r)
	}
	if r := asOf(between, inventoryv1.TimeBasis_TIME_BASIS_OCCURRED); r.GetOnHand() != 7 {
		t.Errorf("as occurred between the events: %v, want 7 (the late sale had happened)", r)
	}
	if r := asOf(time.Now(), inventoryv1.TimeBasis_TIME_BASIS_RECORDED); r.GetOnHand() != 7 {
		t.Errorf("as of now: %v, want 7", r)
	}
	if r := asOf(between.Add(-time.Hour), inventoryv1.TimeBasis_TIME_BASIS_RECORDED); r.GetOnHand() != 0 || r.GetSkuVersion() != 0 {
		t.Errorf("before anything happened: %v, want 0", r)
	}
}

func TestProjectionStatusCatchesUp(t *testing.T) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := qry.GetProjectionStatus(t.Context(), &inventoryv1.GetProjectionStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetPartitions()) != 3 {
			t.Fatalf("%d partitions in status, want 3", len(r.GetPartitions()))
		}
		if r.GetTotalLag() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag still %d after 10s: %v", r.GetTotalLag(), r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The BigQuery projection's progress shows in GetProjectionStatus: after a
// command, its partitions catch up to the log's end (the projector records
// its settled offsets in the read model after each flush).
func TestProjectionStatusReportsBigQuery(t *testing.T) {
	if _, err := cmds.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("bq"), SkuId: uniq("bq"), StoreId: "S1", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		r, err := qry.GetProjectionStatus(t.Context(), &inventoryv1.GetProjectionStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetBigqueryPartitions()) == 3 && r.GetBigqueryTotalLag() == 0 && r.GetTotalLag() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("BigQuery's partitions in status after 90s: %v (lag %d)", r.GetBigqueryPartitions(), r.GetBigqueryTotalLag())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
