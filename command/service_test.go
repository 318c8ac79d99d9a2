package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/internal/testenv"
)

// stack is a command service on a kfake broker, served over h2c.
type stack struct {
	brokers []string
	addr    string
	svc     *command.Service
	stop    func()
}

var shared *stack

func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func() error{"open-writer-transaction": leaveWriterTransactionOpen, "die-in-commit": dieInCommit})
	k, err := broker.Start("", 0, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = startStack(k.Addrs())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.stop()
	k.Close()
	os.Exit(code)
}

// singlePartition starts an in-memory broker whose events topic has one
// partition and no writer yet, closed at the test's end.
func singlePartition(t testing.TB) *broker.Embedded {
	t.Helper()
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	admCl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kafka.EnsureTopic(t.Context(), kadmClient(admCl), kafka.EventsTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	return k
}

// startOnDir starts a broker persisting to dir and a command service on it,
// both stopped by the returned func (idempotent) or at the test's end: a
// restart is the func, then startOnDir again on the same dir.
func startOnDir(t testing.TB, dir string) (*stack, func()) {
	t.Helper()
	k, err := broker.Start(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := startStack(k.Addrs())
	if err != nil {
		k.Close()
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { st.stop(); k.Close() }) }
	t.Cleanup(stop)
	return st, stop
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func startStack(brokers []string) (*stack, error) {
	ctx := context.Background()
	log := quietLogger()
	svc, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: brokers, Logger: log},
		Partitions:   4,
	})
	if err != nil {
		return nil, err
	}
	srv, err := server.Listen("127.0.0.1:0", nil, log)
	if err != nil {
		return nil, err
	}
	path, h := command.NewHandler(svc, log).HTTPHandler(srv.HandlerOptions()...)
	srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(sctx, 5*time.Second); close(done) }()
	return &stack{brokers: brokers, addr: srv.Addr(), svc: svc, stop: func() {
		cancel()
		<-done
		_ = svc.Close(context.Background())
	}}, nil
}

func (s *stack) grpcClient(t testing.TB) inventoryv1.CommandServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return inventoryv1.NewCommandServiceClient(conn)
}

func (s *stack) connectClient() inventoryv1connect.CommandServiceClient {
	return inventoryv1connect.NewCommandServiceClient(http.DefaultClient, "http://"+s.addr)
}

var seq atomic.Int64

// uniq returns a name no other test uses, so tests share one broker.
func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), seq.Add(1))
}

func receive(t testing.TB, c inventoryv1.CommandServiceClient, sku, store string, q int64) *inventoryv1.CommandResult {
	t.Helper()
	r, err := c.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("rcv"), SkuId: sku, StoreId: store, Quantity: q})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return r.GetResult()
}

// readEvents reads every committed event of a SKU with an independent
// consumer, in log order.
func readEvents(t testing.TB, brokers []string, sku string) []*inventoryv1.InventoryEvent {
	t.Helper()
	return readEventsOf(t, brokers, func(key string) bool { return key == sku })
}

// readAllEvents reads every committed event of the SKUs starting with prefix.
func readAllEvents(t testing.TB, brokers []string, prefix string) []*inventoryv1.InventoryEvent {
	t.Helper()
	return readEventsOf(t, brokers, func(key string) bool { return strings.HasPrefix(key, prefix) })
}

// readEventsOf reads the committed events of the SKUs keep accepts, with
// an independent consumer, in log order.
func readEventsOf(t testing.TB, brokers []string, keep func(sku string) bool) []*inventoryv1.InventoryEvent {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(kafka.EventsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Read until every partition reaches the end offsets taken now.
	ends := endOffsets(t, cl)
	var out []*inventoryv1.InventoryEvent
	seen := map[int32]int64{}
	for !reached(seen, ends) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading the topic: %v (at %v of %v)", ctx.Err(), seen, ends)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition] = r.Offset + 1
			if !keep(string(r.Key)) {
				return
			}
			e := &inventoryv1.InventoryEvent{}
			if err := proto.Unmarshal(r.Value, e); err != nil {
				t.Fatalf("undecodable event at %d/%d: %v", r.Partition, r.Offset, err)
			}
			out = append(out, e)
		})
	}
	return out
}

func endOffsets(t testing.TB, cl *kgo.Client) map[int32]int64 {
	t.Helper()
	adm := kadmClient(cl)
	lo, err := adm.ListCommittedOffsets(t.Context(), kafka.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int32]int64{}
	for _, ps := range lo {
		for p, o := range ps {
			ends[p] = o.Offset
		}
	}
	return ends
}

// reached: every partition read up to its end. Commit markers are not
// delivered, so the last data record may sit one below the end.
func reached(seen, ends map[int32]int64) bool {
	for p, end := range ends {
		if seen[p] < end-1 {
			return false
		}
	}
	return true
}

func TestGRPCAndConnectClientsRecordSales(t *testing.T) {
	sku := uniq("sku")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)

	gr, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 2})
	if err != nil {
		t.Fatalf("grpc-go sale: %v", err)
	}
	if gr.GetResult().GetSkuVersion() != 2 || gr.GetResult().GetStores()[0].GetOnHand() != 8 {
		t.Fatalf("grpc-go sale result %v, want version 2, on_hand 8", gr.GetResult())
	}

	// Connect protocol with JSON, as curl or a mobile app sends it.
	body := fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":3}`, uniq("c"), sku)
	resp, err := http.Post("http://"+shared.addr+"/tally.inventory.v1.CommandService/RecordSale", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("connect JSON sale: %d %s", resp.StatusCode, raw)
	}
	var out struct {
		Result struct {
			SkuVersion string `json:"skuVersion"`
			Stores     []struct {
				OnHand string `json:"onHand"`
			} `json:"stores"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	if out.Result.SkuVersion != "3" || out.Result.Stores[0].OnHand != "5" {
		t.Fatalf("connect JSON sale result %s, want version 3, on_hand 5", raw)
	}

	// A JSON error carries the code and the actionable detail.
	body = fmt.Sprintf(`{"commandId":%q,"skuId":%q,"storeId":"S1","quantity":50}`, uniq("c"), sku)
	resp2, err := http.Post("http://"+shared.addr+"/tally.inventory.v1.CommandService/RecordSale", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	raw, _ = io.ReadAll(resp2.Body)
	if resp2.StatusCode != http.StatusBadRequest || !bytes.Contains(raw, []byte(`"code":"failed_precondition"`)) || !bytes.Contains(raw, []byte(`"available":"5"`)) {
		t.Fatalf("oversell over connect JSON: %d %s", resp2.StatusCode, raw)
	}
}

func TestConcurrentSalesNeverOversell(t *testing.T) {
	sku := uniq("hot")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 100)

	const goroutines, sales = 50, 200
	var ok, rejected atomic.Int64
	var wg sync.WaitGroup
	for w := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range sales / goroutines {
				_, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{
					CommandId: fmt.Sprintf("%s-%d-%d", sku, w, i), SkuId: sku, StoreId: "S1", Quantity: 1,
				})
				switch status.Code(err) {
				case codes.OK:
					ok.Add(1)
				case codes.FailedPrecondition:
					rejected.Add(1)
				default:
					t.Errorf("sale: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 100 || rejected.Load() != 100 {
		t.Fatalf("%d sales accepted, %d rejected; want 100 and 100", ok.Load(), rejected.Load())
	}
	events := readEvents(t, shared.brokers, sku)
	if len(events) != 101 {
		t.Fatalf("%d events in the log, want 101 (receipt + 100 sales)", len(events))
	}
	for i, e := range events {
		if e.GetSkuVersion() != int64(i+1) {
			t.Fatalf("event %d in log order has version %d: gap, repeat or reorder", i, e.GetSkuVersion())
		}
		if e.GetOnHandAfter() != 100-int64(i) {
			t.Fatalf("event %d on_hand_after %d, want %d", i, e.GetOnHandAfter(), 100-i)
		}
	}
}

func TestExpectedVersionConflictIsAbortedWithCurrentVersion(t *testing.T) {
	sku := uniq("v")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 5)
	receive(t, g, sku, "S1", 5)
	stale := int64(1)
	_, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, ExpectedVersion: &stale})
	st := status.Convert(err)
	if st.Code() != codes.Aborted {
		t.Fatalf("stale expected_version: %v, want Aborted", err)
	}
	var vc *inventoryv1.VersionConflict
	for _, d := range st.Details() {
		if m, ok := d.(*inventoryv1.VersionConflict); ok {
			vc = m
		}
	}
	if vc == nil || vc.GetCurrentVersion() != 2 || vc.GetExpectedVersion() != 1 {
		t.Fatalf("details %v, want VersionConflict current 2 expected 1", st.Details())
	}
	current := int64(2)
	if _, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 1, ExpectedVersion: &current}); err != nil {
		t.Fatalf("sale at the current version: %v", err)
	}
}

func TestInvalidInputListsFieldViolations(t *testing.T) {
	g := shared.grpcClient(t)
	_, err := g.TransferStock(t.Context(), &inventoryv1.TransferStockRequest{CommandId: "", SkuId: "A", FromStoreId: "S1", ToStoreId: "S1", Quantity: -4})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("invalid transfer: %v, want InvalidArgument", err)
	}
	fields := grpcViolations(t, err)
	for _, f := range []string{"command_id", "to_store_id", "quantity"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("no field violation for %s (got %v)", f, fields)
		}
	}
}

func TestRetriedCommandReturnsOriginalResult(t *testing.T) {
	sku := uniq("idem")
	c := shared.connectClient()
	req := &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: sku, StoreId: "S1", Quantity: 7}
	first, err := c.ReceiveStock(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.ReceiveStock(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Msg.GetResult().GetReplayed() || again.Msg.GetResult().GetSkuVersion() != first.Msg.GetResult().GetSkuVersion() ||
		again.Msg.GetResult().GetEventIds()[0] != first.Msg.GetResult().GetEventIds()[0] {
		t.Fatalf("retry answered %v, want the original %v replayed", again.Msg.GetResult(), first.Msg.GetResult())
	}
	if n := len(readEvents(t, shared.brokers, sku)); n != 1 {
		t.Fatalf("%d events after a retried receipt, want 1", n)
	}
}

func TestTransferIsAtomicWithConsecutiveVersions(t *testing.T) {
	sku := uniq("tr")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 5)
	r, err := g.TransferStock(t.Context(), &inventoryv1.TransferStockRequest{CommandId: uniq("c"), SkuId: sku, FromStoreId: "S1", ToStoreId: "S2", Quantity: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetResult().GetSkuVersion() != 3 || len(r.GetResult().GetStores()) != 2 ||
		r.GetResult().GetStores()[0].GetOnHand() != 2 || r.GetResult().GetStores()[1].GetOnHand() != 3 {
		t.Fatalf("transfer result %v", r.GetResult())
	}
	ev := readEvents(t, shared.brokers, sku)
	if len(ev) != 3 || ev[1].GetEventType() != inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT || ev[2].GetEventType() != inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN ||
		ev[1].GetCounterpartStoreId() != "S2" || ev[2].GetCounterpartStoreId() != "S1" {
		t.Fatalf("transfer events %v", ev)
	}
}

func TestApplyAnswersEachCommand(t *testing.T) {
	a, b := uniq("ba"), uniq("bb")
	g := shared.grpcClient(t)
	cmds := []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: a, StoreId: "S1", Quantity: 2}}},
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: a, StoreId: "S1", Quantity: 2}}},
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: uniq("c"), SkuId: a, StoreId: "S1", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: uniq("c"), SkuId: b, StoreId: "S1", Quantity: 0}}},
		{Kind: &inventoryv1.Command_Adjustment{Adjustment: &inventoryv1.AdjustStockRequest{CommandId: uniq("c"), SkuId: b, StoreId: "S1", QuantityDelta: 4, AdjustmentReason: inventoryv1.AdjustmentReason_ADJUSTMENT_REASON_FOUND}}},
		{},
	}
	r, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: cmds})
	if err != nil {
		t.Fatal(err)
	}
	o := r.GetOutcomes()
	if len(o) != len(cmds) {
		t.Fatalf("%d outcomes for %d commands", len(o), len(cmds))
	}
	if o[0].GetResult().GetSkuVersion() != 1 || o[1].GetResult().GetSkuVersion() != 2 {
		t.Errorf("same-SKU commands not applied in order: %v %v", o[0], o[1])
	}
	if e := o[2].GetError(); e.GetCode() != "failed_precondition" || e.GetInsufficientStock().GetAvailable() != 0 {
		t.Errorf("oversell in batch: %v", o[2])
	}
	if e := o[3].GetError(); e.GetCode() != "invalid_argument" || e.GetFieldViolations()[0].GetField() != "commands[3].receipt.quantity" {
		t.Errorf("invalid command in batch: %v", o[3])
	}
	if o[4].GetResult().GetStores()[0].GetOnHand() != 4 {
		t.Errorf("adjustment in batch: %v", o[4])
	}
	if o[5].GetError().GetCode() != "invalid_argument" {
		t.Errorf("empty command in batch: %v", o[5])
	}
	if _, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty batch: %v", err)
	}
}

func TestRetryAfterRestartIsNotAppliedTwice(t *testing.T) {
	dir := t.TempDir()
	st, stop := startOnDir(t, dir)
	sku := uniq("restart")
	req := &inventoryv1.ReceiveStockRequest{CommandId: "rcv-once", SkuId: sku, StoreId: "S1", Quantity: 9}
	first, err := st.grpcClient(t).ReceiveStock(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	// Same data directory: a new broker and a new writer rebuild from disk.
	st, _ = startOnDir(t, dir)
	again, err := st.grpcClient(t).ReceiveStock(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetResult().GetReplayed() || again.GetResult().GetEventIds()[0] != first.GetResult().GetEventIds()[0] {
		t.Fatalf("retry after restart: %v, want the original %v replayed", again.GetResult(), first.GetResult())
	}
	next, err := st.grpcClient(t).RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: "sale-after", SkuId: sku, StoreId: "S1", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if next.GetResult().GetSkuVersion() != 2 || next.GetResult().GetStores()[0].GetOnHand() != 8 {
		t.Fatalf("state after restart: %v, want version 2, on_hand 8", next.GetResult())
	}
	if ev := readEvents(t, st.brokers, sku); len(ev) != 2 {
		t.Fatalf("%d events, want 2", len(ev))
	}
}

func TestNewWriterFencesThePreviousOne(t *testing.T) {
	// Only the test's writers, no group: the zombie does not know it lost
	// the partition, as after a long GC pause or a network partition.
	k := singlePartition(t)
	cfg := command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger()}
	sku := uniq("fence")
	old, err := command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Do(t.Context(), &command.Command{ID: "a1", Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: 10}); err != nil {
		t.Fatal(err)
	}

	successor, err := command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close(context.Background())

	_, err = old.Do(t.Context(), &command.Command{ID: "zombie", Kind: command.KindSale, SKU: sku, Store: "S1", Quantity: 1})
	if !errors.Is(err, command.ErrUnavailable) {
		t.Fatalf("fenced writer's commit: %v, want ErrUnavailable", err)
	}
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("fenced writer did not stop")
	}

	res, err := successor.Do(t.Context(), &command.Command{ID: "b1", Kind: command.KindSale, SKU: sku, Store: "S1", Quantity: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.Stores[0].OnHand != 8 {
		t.Fatalf("successor result %+v: want version 2 on_hand 8 (it must see the old writer's committed receipt)", res)
	}
	ev := readEvents(t, k.Addrs(), sku)
	if len(ev) != 2 {
		t.Fatalf("%d committed events, want 2", len(ev))
	}
	for _, e := range ev {
		if e.GetCommandId() == "zombie" {
			t.Fatal("the fenced writer's event is visible to read_committed consumers")
		}
	}
}

// A fenced writer stops on its own and nobody closes it: it must still end
// its goroutines, answer every command (then and later) Unavailable, and
// become garbage with its SKU map and dedupe window.
func TestFencedWriterLeavesNothingBehind(t *testing.T) {
	k := singlePartition(t)
	before := writerGoroutines()
	cfg := command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger()}
	sku := uniq("fenced")
	old, err := command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Do(t.Context(), &command.Command{ID: "r1", Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: command.MaxQuantity}); err != nil {
		t.Fatal(err)
	}

	successor, err := command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}

	// Clients keep selling through the old writer, which learns it was
	// fenced from their first commit and stops: each gets an answer, then
	// and after the stop, never a hang or a panic.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	var afterStop atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				stopped := isClosed(old.Done())
				_, err := old.Do(ctx, &command.Command{ID: fmt.Sprintf("s%d-%d", g, i), Kind: command.KindSale, SKU: sku, Store: "S1", Quantity: 1})
				switch {
				case ctx.Err() != nil:
				case !errors.Is(err, command.ErrUnavailable):
					t.Errorf("sale through the fenced writer: %v, want ErrUnavailable", err)
					return
				case stopped && afterStop.Add(1) > 100:
					return
				}
			}
		})
	}
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("fenced writer did not stop")
	}
	wg.Wait()
	if err := successor.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Both writers are done: none of their goroutines may remain.
	deadline := time.Now().Add(5 * time.Second)
	for n := writerGoroutines(); n > before; n = writerGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d writer goroutines left behind:\n%s", n-before, writerStacks())
		}
		time.Sleep(10 * time.Millisecond)
	}
	gone := weak.Make(old)
	old = nil
	deadline = time.Now().Add(5 * time.Second)
	for gone.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the fenced writer is still reachable, and with it its SKU map and dedupe window")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// writerGoroutines counts the goroutines running a Writer's code.
func writerGoroutines() int { return strings.Count(writerStacks(), "\n\n") }

// writerStacks returns the stacks of the goroutines running a Writer's
// code, each followed by a blank line.
func writerStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out strings.Builder
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "tally/command.(*Writer)") {
			out.WriteString(g + "\n\n")
		}
	}
	return out.String()
}

// tally_commands_total tells accepted commands from replayed retries, and
// counts the commands refused before any writer saw them.
func TestCommandsTotalCountsReplaysAndRejections(t *testing.T) {
	k := singlePartition(t)
	reg := prometheus.NewRegistry()
	log := quietLogger()
	svc, err := command.NewService(t.Context(), command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: k.Addrs(), Logger: log, Metrics: command.NewMetrics(reg)}, Partitions: 1, AssignWait: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	srv, err := server.Listen("127.0.0.1:0", nil, log)
	if err != nil {
		t.Fatal(err)
	}
	path, h := command.NewHandler(svc, log).HTTPHandler(srv.HandlerOptions()...)
	srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, 5*time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	g := inventoryv1connect.NewCommandServiceClient(http.DefaultClient, "http://"+srv.Addr())

	rcv := &inventoryv1.ReceiveStockRequest{CommandId: "rcv-1", SkuId: "counted", StoreId: "S1", Quantity: 5}
	for range 2 { // accepted, then replayed
		if _, err := g.ReceiveStock(t.Context(), connect.NewRequest(rcv)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.RecordSale(t.Context(), connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: "bad", SkuId: "counted", StoreId: "S1"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a sale of no units: %v, want InvalidArgument", err)
	}
	if _, err := g.Apply(t.Context(), connect.NewRequest(&inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: "rcv-2", SkuId: "counted", StoreId: "S1", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: "rcv-3", SkuId: "counted", StoreId: "S1", Quantity: -1}}},
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: "sale-1", SkuId: "counted", StoreId: "S1", Quantity: 100}}},
	}})); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tally_commands_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"accepted": 2, "replayed": 1, "invalid_argument": 2, "insufficient_stock": 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tally_commands_total by outcome: %v, want %v", got, want)
	}
}
