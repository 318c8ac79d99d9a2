package serve_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
)

// watch is an open WatchLowStock stream read in the background.
type watch struct {
	msgs chan *inventoryv1.WatchLowStockResponse
	err  chan error
}

func openWatch(t *testing.T, c inventoryv1.QueryServiceClient, req *inventoryv1.WatchLowStockRequest) (*watch, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	st, err := c.WatchLowStock(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	w := &watch{msgs: make(chan *inventoryv1.WatchLowStockResponse, 10000), err: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				w.err <- err
				return
			}
			w.msgs <- m
		}
	}()
	return w, cancel
}

// next returns the next message, failing after 10s.
func (w *watch) next(t *testing.T) *inventoryv1.WatchLowStockResponse {
	t.Helper()
	select {
	case m := <-w.msgs:
		return m
	case err := <-w.err:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no watch message in 10s")
	}
	return nil
}

// initial reads the initial list up to the caught_up marker.
func (w *watch) initial(t *testing.T) ([]*inventoryv1.LowStockItem, string) {
	t.Helper()
	var items []*inventoryv1.LowStockItem
	for {
		m := w.next(t)
		if m.GetCaughtUp() {
			return items, m.GetResumeToken()
		}
		if !m.GetInitial() {
			t.Fatalf("live message before caught_up: %v", m)
		}
		items = append(items, m.GetItem())
	}
}

func sell(t *testing.T, sku string, q int64, occurred time.Time) int64 {
	t.Helper()
	req := &inventoryv1.RecordSaleRequest{CommandId: uniq("sale"), SkuId: sku, StoreId: "S1", Quantity: q}
	if !occurred.IsZero() {
		req.OccurredAt = timestamppb.New(occurred)
	}
	r, err := cmds.RecordSale(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	return r.GetResult().GetSkuVersion()
}

func receiveAt(t *testing.T, sku, store string, q int64) int64 {
	t.Helper()
	r, err := cmds.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: uniq("rcv"), SkuId: sku, StoreId: store, Quantity: q})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetResult().GetSkuVersion()
}

func expectItem(t *testing.T, it *inventoryv1.LowStockItem, sku string, state inventoryv1.LowStockState, available, rec int64) {
	t.Helper()
	if it.GetSkuId() != sku || it.GetState() != state || it.GetAvailable() != available || it.GetRecommendedReorderQuantity() != rec {
		t.Fatalf("got %v\nwant sku %s state %v available %d recommended %d", it, sku, state, available, rec)
	}
}

func TestWatchLowStockTransitionsAndRecommendation(t *testing.T) {
	p := uniq("w")
	a, b := p+"-a", p+"-b"
	if _, err := cmds.SetReorderPolicy(t.Context(), &inventoryv1.SetReorderPolicyRequest{CommandId: uniq("pol"), SkuId: a, StoreId: "S1", ReorderPoint: 5, TargetLevel: 20}); err != nil {
		t.Fatal(err)
	}
	receiveAt(t, a, "S1", 30)
	// Crafted history: 20 units sold three days ago (an offline till).
	getStock(t, a, "S1", sell(t, a, 20, time.Now().Add(-72*time.Hour)))
	getStock(t, b, "S1", receiveAt(t, b, "S1", 3))

	w, cancel := openWatch(t, qry, &inventoryv1.WatchLowStockRequest{SkuPrefix: p, StoreIds: []string{"S1"}})
	defer cancel()
	items, _ := w.initial(t)
	if len(items) != 1 {
		t.Fatalf("initial list %v, want only %s (3 <= default reorder point 10)", items, b)
	}
	// b: default policy (10, 30), no sales: recommended = 30 - 3.
	expectItem(t, items[0], b, inventoryv1.LowStockState_LOW_STOCK_STATE_LOW, 3, 27)

	// 10 -> 4 crosses a's reorder point 5. Sales in 7 days: 26;
	// recommended = max(0, max(20, ceil(26/7*14)=52) - 4) = 48.
	sell(t, a, 6, time.Time{})
	m := w.next(t)
	expectItem(t, m.GetItem(), a, inventoryv1.LowStockState_LOW_STOCK_STATE_LOW, 4, 48)
	if m.GetItem().GetSalesLast_7Days() != 26 || m.GetItem().GetReorderPoint() != 5 || m.GetResumeToken() == "" {
		t.Fatalf("message %v", m)
	}
	// 4 -> 0: out of stock; sales 30, cover 60.
	sell(t, a, 4, time.Time{})
	expectItem(t, w.next(t).GetItem(), a, inventoryv1.LowStockState_LOW_STOCK_STATE_OUT_OF_STOCK, 0, 60)
	// A receipt recovers it; nothing to reorder above the cover.
	receiveAt(t, a, "S1", 100)
	expectItem(t, w.next(t).GetItem(), a, inventoryv1.LowStockState_LOW_STOCK_STATE_RECOVERED, 100, 0)
	// A sale that stays above the reorder point announces nothing.
	sell(t, a, 1, time.Time{})
	getStock(t, b, "S1", receiveAt(t, b, "S1", 1)) // b: 3 -> 4, still low: nothing either
	select {
	case m := <-w.msgs:
		t.Fatalf("a change without a crossing was announced: %v", m)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestTwoQueryInstancesDeliverTheSameTransitions(t *testing.T) {
	dsn, err := os.ReadFile(filepath.Join(dataDir, "pg", "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	addr2 := freeAddr()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- serve.RunQuery(ctx, []string{"--addr", addr2, "--kafka-brokers", kafkaAddr, "--database-url", strings.TrimSpace(string(dsn)), "--log-level", "warn", "--insecure-no-auth"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second query instance: %v", err)
		}
	}()
	conn, err := grpc.NewClient(addr2, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	qry2 := inventoryv1.NewQueryServiceClient(conn)

	p := uniq("two")
	getStock(t, p, "S1", receiveAt(t, p, "S1", 12))
	// Wait for the second instance to serve.
	for attempt := 0; ; attempt++ {
		if _, err := qry2.GetProjectionStatus(t.Context(), &inventoryv1.GetProjectionStatusRequest{}); err == nil {
			break
		} else if attempt > 100 {
			t.Fatalf("second query instance not serving: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var watches []*watch
	for _, c := range []inventoryv1.QueryServiceClient{qry, qry2} {
		w, stop := openWatch(t, c, &inventoryv1.WatchLowStockRequest{SkuPrefix: p})
		defer stop()
		if m := w.next(t); !m.GetCaughtUp() {
			t.Fatalf("first message %v, want caught_up (nothing low yet)", m)
		}
		watches = append(watches, w)
	}
	// Transitions are judged per committed projection batch: the first
	// sale is read back before the second, so they are two batches and
	// two transitions, however busy the machine.
	getStock(t, p, "S1", sell(t, p, 3, time.Time{})) // 12 -> 9 <= 10
	sell(t, p, 9, time.Time{})                       // 9 -> 0
	for i, w := range watches {
		expectItem(t, w.next(t).GetItem(), p, inventoryv1.LowStockState_LOW_STOCK_STATE_LOW, 9, 21)
		expectItem(t, w.next(t).GetItem(), p, inventoryv1.LowStockState_LOW_STOCK_STATE_OUT_OF_STOCK, 0, 30)
		t.Logf("instance %d delivered both transitions", i+1)
	}
}

func TestResumeAfterDisconnectLosesNothing(t *testing.T) {
	p := uniq("res")
	x, y := p+"-x", p+"-y"
	getStock(t, x, "S1", receiveAt(t, x, "S1", 50))
	getStock(t, y, "S1", receiveAt(t, y, "S1", 50))
	w, cancel := openWatch(t, qry, &inventoryv1.WatchLowStockRequest{SkuPrefix: p})
	_, token := w.initial(t)
	cancel()

	// While disconnected: x runs low, y runs out.
	getStock(t, x, "S1", sell(t, x, 45, time.Time{}))
	getStock(t, y, "S1", sell(t, y, 50, time.Time{}))

	w, cancel = openWatch(t, qry, &inventoryv1.WatchLowStockRequest{SkuPrefix: p, ResumeToken: token})
	defer cancel()
	items, _ := w.initial(t)
	got := map[string]inventoryv1.LowStockState{}
	for _, it := range items {
		got[it.GetSkuId()] = it.GetState()
	}
	if got[x] != inventoryv1.LowStockState_LOW_STOCK_STATE_LOW || got[y] != inventoryv1.LowStockState_LOW_STOCK_STATE_OUT_OF_STOCK {
		t.Fatalf("resume re-sent %v, want x LOW and y OUT_OF_STOCK", items)
	}
	_, err := qry.WatchLowStock(t.Context(), &inventoryv1.WatchLowStockRequest{ResumeToken: "not-a-token"})
	if err == nil {
		// Errors of a server stream arrive with the first Recv.
		st, _ := qry.WatchLowStock(t.Context(), &inventoryv1.WatchLowStockRequest{ResumeToken: "not-a-token"})
		_, err = st.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad resume token: %v, want InvalidArgument", err)
	}
}

func TestSlowWatcherIsCutOffWhileOthersKeepReceiving(t *testing.T) {
	p := uniq("slow")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	slow, err := qry.WatchLowStock(ctx, &inventoryv1.WatchLowStockRequest{SkuPrefix: p})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := slow.Recv(); err != nil || !m.GetCaughtUp() {
		t.Fatalf("slow watcher's first message %v, %v", m, err)
	}
	fast, stop := openWatch(t, qry, &inventoryv1.WatchLowStockRequest{SkuPrefix: p})
	defer stop()
	if m := fast.next(t); !m.GetCaughtUp() {
		t.Fatalf("first message %v", m)
	}

	// 3,000 new SKUs, each going from nothing (out of stock) to 50
	// (recovered): 3,000 transitions in bursts of 300; the fast watcher
	// takes each burst, the slow one reads nothing.
	const n, burst = 3000, 300
	for b := 0; b < n/burst; b++ {
		cmdsList := make([]*inventoryv1.Command, burst)
		for i := range cmdsList {
			cmdsList[i] = &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{
				CommandId: uniq("c"), SkuId: fmt.Sprintf("%s-%d-%d", p, b, i), StoreId: "S1", Quantity: 50,
			}}}
		}
		if _, err := cmds.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: cmdsList}); err != nil {
			t.Fatal(err)
		}
		for i := range burst {
			if m := fast.next(t); m.GetItem().GetState() != inventoryv1.LowStockState_LOW_STOCK_STATE_RECOVERED {
				t.Fatalf("fast watcher message %d of burst %d: %v", i, b, m)
			}
		}
	}
	// The slow one gets what was already on its way, then the cut-off.
	received := 0
	for {
		_, err := slow.Recv()
		if err == nil {
			received++
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || errors.Is(err, io.EOF) {
			t.Fatalf("slow watcher ended with %v after %d messages, want ResourceExhausted", err, received)
		}
		t.Logf("slow watcher cut off after %d of %d messages", received, n)
		if received >= n {
			t.Fatalf("the slow watcher received everything: it was never cut off")
		}
		return
	}
}

func TestWatchOverConnectJSONAndGRPCWeb(t *testing.T) {
	p := uniq("proto")
	getStock(t, p, "S1", receiveAt(t, p, "S1", 2)) // low from the start
	// HTTP/1.1 only, as a mobile app's stack may be.
	h1 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	for name, opts := range map[string][]connect.ClientOption{
		"connect+json over HTTP/1.1": {connect.WithProtoJSON()},
		"grpc-web over HTTP/1.1":     {connect.WithGRPCWeb()},
	} {
		t.Run(name, func(t *testing.T) {
			c := inventoryv1connect.NewQueryServiceClient(h1, "http://"+addr, opts...)
			st, err := c.WatchLowStock(t.Context(), connect.NewRequest(&inventoryv1.WatchLowStockRequest{SkuPrefix: p}))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if !st.Receive() || st.Msg().GetItem().GetSkuId() != p || st.Msg().GetItem().GetAvailable() != 2 {
				t.Fatalf("first message %v, %v", st.Msg(), st.Err())
			}
			if !st.Receive() || !st.Msg().GetCaughtUp() {
				t.Fatalf("second message %v, %v; want caught_up", st.Msg(), st.Err())
			}
		})
	}
}
