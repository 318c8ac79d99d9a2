package command_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
)

// reuseInfo returns the COMMAND_ID_REUSED ErrorInfo of a gRPC error, or nil.
func reuseInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == command.ReasonCommandIDReused {
			return ei
		}
	}
	return nil
}

// mustBeReused fails unless err is ALREADY_EXISTS naming sku and id.
func mustBeReused(t testing.TB, what string, err error, sku, id string) {
	t.Helper()
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("%s: %v, want AlreadyExists", what, err)
	}
	ei := reuseInfo(err)
	if ei == nil || ei.GetMetadata()["command_id"] != id || ei.GetMetadata()["sku_id"] != sku {
		t.Fatalf("%s: details %v, want ErrorInfo %s for command_id %s, sku_id %s", what, status.Convert(err).Details(), command.ReasonCommandIDReused, id, sku)
	}
}

func TestReusedCommandIDWithADifferentRequestIsAlreadyExists(t *testing.T) {
	sku := uniq("reuse")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)
	id := uniq("c")
	sale := &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2}
	first, err := g.RecordSale(t.Context(), sale)
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := int64(1), int64(2)
	for name, req := range map[string]*inventoryv1.RecordSaleRequest{
		"another quantity":         {CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 3},
		"another store":            {CommandId: id, SkuId: sku, StoreId: "S2", Quantity: 2},
		"an expected_version":      {CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2, ExpectedVersion: &v1},
		"another reason":           {CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2, Reason: "till 4"},
		"metadata":                 {CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2, Metadata: map[string]string{"till": "4"}},
		"allow_negative (no need)": {CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2, AllowNegative: true},
	} {
		_, err := g.RecordSale(t.Context(), req)
		mustBeReused(t, "sale with "+name, err, sku, id)
	}
	_, err = g.RecordReturn(t.Context(), &inventoryv1.RecordReturnRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2})
	mustBeReused(t, "a return with the sale's command_id", err, sku, id)

	// Connect clients see the same status and detail.
	_, err = shared.connectClient().RecordSale(t.Context(), connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 5}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeAlreadyExists {
		t.Fatalf("Connect sale with another quantity: %v, want AlreadyExists", err)
	}

	// The identical request is a retry.
	again, err := g.RecordSale(t.Context(), sale)
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetResult().GetReplayed() || again.GetResult().GetEventIds()[0] != first.GetResult().GetEventIds()[0] {
		t.Fatalf("identical retry: %v, want the original %v replayed", again.GetResult(), first.GetResult())
	}

	// expected_version: another value than the original's.
	vid := uniq("c")
	if _, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: vid, SkuId: sku, StoreId: "S1", Quantity: 1, ExpectedVersion: &v2}); err != nil {
		t.Fatal(err)
	}
	three := int64(3)
	_, err = g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: vid, SkuId: sku, StoreId: "S1", Quantity: 1, ExpectedVersion: &three})
	mustBeReused(t, "sale with another expected_version", err, sku, vid)
	_, err = g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: vid, SkuId: sku, StoreId: "S1", Quantity: 1})
	mustBeReused(t, "sale without the expected_version", err, sku, vid)
	if r, err := g.RecordSale(t.Context(), &inventoryv1.RecordSaleRequest{CommandId: vid, SkuId: sku, StoreId: "S1", Quantity: 1, ExpectedVersion: &v2}); err != nil || !r.GetResult().GetReplayed() {
		t.Fatalf("identical conditional retry: %v %v, want replayed", r.GetResult(), err)
	}

	if ev := readEvents(t, shared.brokers, sku); len(ev) != 3 {
		t.Fatalf("%d events, want 3 (receipt, two sales)", len(ev))
	}
}

func TestApplyAnswersAReusedCommandIDPerCommand(t *testing.T) {
	sku := uniq("breuse")
	g := shared.grpcClient(t)
	receive(t, g, sku, "S1", 10)
	id := uniq("c")
	sale := &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2}
	if _, err := g.RecordSale(t.Context(), sale); err != nil {
		t.Fatal(err)
	}
	fresh := uniq("c")
	r, err := g.Apply(t.Context(), &inventoryv1.ApplyRequest{Commands: []*inventoryv1.Command{
		{Kind: &inventoryv1.Command_Sale{Sale: sale}},
		{Kind: &inventoryv1.Command_Sale{Sale: &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 4}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2}}},
		// A new id used twice in one batch: the first is applied, the
		// second is a different request.
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: fresh, SkuId: sku, StoreId: "S1", Quantity: 1}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: fresh, SkuId: sku, StoreId: "S1", Quantity: 9}}},
		{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{CommandId: fresh, SkuId: sku, StoreId: "S1", Quantity: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	o := r.GetOutcomes()
	if !o[0].GetResult().GetReplayed() || o[0].GetResult().GetSkuVersion() != 2 {
		t.Errorf("identical retry in a batch: %v, want version 2 replayed", o[0])
	}
	for _, i := range []int{1, 2, 4} {
		want := id
		if i == 4 {
			want = fresh
		}
		if e := o[i].GetError(); e.GetCode() != "already_exists" || e.GetCommandIdReused().GetCommandId() != want || e.GetCommandIdReused().GetSkuId() != sku {
			t.Errorf("outcome %d: %v, want already_exists for command_id %s", i, o[i], want)
		}
	}
	if o[3].GetResult().GetReplayed() || o[3].GetResult().GetSkuVersion() != 3 {
		t.Errorf("new command in a batch: %v, want version 3", o[3])
	}
	if !o[5].GetResult().GetReplayed() || o[5].GetResult().GetSkuVersion() != 3 {
		t.Errorf("its identical repeat in the batch: %v, want version 3 replayed", o[5])
	}
	if ev := readEvents(t, shared.brokers, sku); len(ev) != 3 {
		t.Fatalf("%d events, want 3 (receipt, sale, receipt)", len(ev))
	}
}

// The dedupe window is rebuilt from the log, fingerprints included.
func TestReusedCommandIDIsRefusedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	st, stop := startOnDir(t, dir)
	sku := uniq("rreuse")
	rcv := &inventoryv1.ReceiveStockRequest{CommandId: "rcv-once", SkuId: sku, StoreId: "S1", Quantity: 9}
	tr := &inventoryv1.TransferStockRequest{CommandId: "tr-once", SkuId: sku, FromStoreId: "S1", ToStoreId: "S2", Quantity: 4}
	g := st.grpcClient(t)
	if _, err := g.ReceiveStock(t.Context(), rcv); err != nil {
		t.Fatal(err)
	}
	first, err := g.TransferStock(t.Context(), tr)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	st, _ = startOnDir(t, dir)
	g = st.grpcClient(t)
	_, err = g.ReceiveStock(t.Context(), &inventoryv1.ReceiveStockRequest{CommandId: "rcv-once", SkuId: sku, StoreId: "S1", Quantity: 90})
	mustBeReused(t, "receipt with another quantity after a restart", err, sku, "rcv-once")
	_, err = g.TransferStock(t.Context(), &inventoryv1.TransferStockRequest{CommandId: "tr-once", SkuId: sku, FromStoreId: "S1", ToStoreId: "S3", Quantity: 4})
	mustBeReused(t, "transfer to another store after a restart", err, sku, "tr-once")
	again, err := g.TransferStock(t.Context(), tr)
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetResult().GetReplayed() || len(again.GetResult().GetEventIds()) != 2 || again.GetResult().GetEventIds()[1] != first.GetResult().GetEventIds()[1] {
		t.Fatalf("identical transfer after a restart: %v, want the original %v replayed", again.GetResult(), first.GetResult())
	}
	if ev := readEvents(t, st.brokers, sku); len(ev) != 3 {
		t.Fatalf("%d events, want 3", len(ev))
	}
}

// Events written before fingerprints existed carry none; a retry of their
// command is answered as before, whatever it says.
func TestCommandsLoggedWithoutFingerprintStillReplay(t *testing.T) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...), kgo.DefaultProduceTopic(kafka.EventsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kafka.EnsureTopic(t.Context(), kadmClient(cl), kafka.EventsTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	sku := uniq("old")
	old, err := proto.Marshal(&inventoryv1.InventoryEvent{
		EventId: "01000000-0000-7000-8000-000000000001", EventType: inventoryv1.EventType_EVENT_TYPE_RECEIPT,
		OccurredAt: timestamppb.Now(), RecordedAt: timestamppb.Now(), SkuId: sku, StoreId: "S1",
		QuantityDelta: 5, CommandId: "old-rcv", SkuVersion: 1, OnHandAfter: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Key: []byte(sku), Value: old}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	w, err := command.OpenWriter(t.Context(), command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	res, err := w.Do(t.Context(), &command.Command{ID: "old-rcv", Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: 7})
	if err != nil || !res.Replayed || res.Version != 1 {
		t.Fatalf("retry of a command logged without fingerprint: %+v %v, want version 1 replayed", res, err)
	}
}

// A retry inside the window is answered replayed, after a restart too (from
// the log: a restarted writer keeps no whole results); one whose command
// fell out of the window and whose occurred_at is older than what the
// window remembers is refused as too old to verify, never applied again.
func TestRetryBeyondTheDedupeWindowIsRefusedAsTooOld(t *testing.T) {
	k := singlePartition(t)
	t0 := time.Now().Add(-3 * time.Hour).UTC()
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	reg := prometheus.NewRegistry()
	cfg := command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger(), DedupeWindow: time.Hour, Now: clock, Metrics: command.NewMetrics(reg)}
	w, err := command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := &command.Command{ID: "pos-old", Kind: command.KindReceipt, SKU: "A", Store: "S1", Quantity: 5, OccurredAt: t0}
	first, err := w.Do(t.Context(), old)
	if err != nil {
		t.Fatal(err)
	}
	set(t0.Add(50 * time.Minute))
	recent := &command.Command{ID: "pos-recent", Kind: command.KindReceipt, SKU: "A", Store: "S1", Quantity: 1, OccurredAt: t0.Add(50 * time.Minute)}
	if _, err := w.Do(t.Context(), recent); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Restarted (from the snapshot written at close) 90 minutes after the first command: it is out of the window,
	// the second is in it.
	set(t0.Add(90 * time.Minute))
	w, err = command.OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if n := opensFrom(t, reg, "snapshot"); n != 1 {
		t.Fatalf("%d writer opens from a snapshot, want the restart's", n)
	}
	res, err := w.Do(t.Context(), recent)
	if err != nil || !res.Replayed || res.Version != 2 || res.Stores[0].OnHand != 6 {
		t.Fatalf("retry inside the window after a restart: %+v %v, want version 2 (on hand 6) replayed", res, err)
	}
	if got := counterValue(t, reg, "tally_writer_replays_read_total"); got != 1 {
		t.Fatalf("%v retries answered from the log, want 1", got)
	}
	_, err = w.Do(t.Context(), old)
	var too *command.CommandTooOldError
	if !errors.As(err, &too) || too.RememberedSince.Before(t0) || too.RememberedSince.Sub(t0) > time.Second || too.CommandID != "pos-old" {
		t.Fatalf("retry beyond the window: %v, want CommandTooOldError remembering since %v", err, t0)
	}
	if !strings.Contains(err.Error(), "too old to verify") {
		t.Fatalf("message %q does not say too old to verify", err)
	}
	// A new command that occurred after the horizon (beyond the skew) is
	// taken: had it been accepted before, the window would hold it.
	fresh := &command.Command{ID: "pos-fresh", Kind: command.KindReceipt, SKU: "A", Store: "S1", Quantity: 1, OccurredAt: t0.Add(90 * time.Minute)}
	if res, err := w.Do(t.Context(), fresh); err != nil || res.Replayed || res.Version != 3 {
		t.Fatalf("new command: %+v %v, want version 3", res, err)
	}
	if first.Version != 1 {
		t.Fatalf("first version %d", first.Version)
	}
	if ev := readEvents(t, k.Addrs(), "A"); len(ev) != 3 {
		t.Fatalf("%d events, want 3", len(ev))
	}
}

// counterValue is the sum of a counter's series in reg.
func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// opensFrom is how many writer opens started from (snapshot or log).
func opensFrom(t testing.TB, reg *prometheus.Registry, from string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tally_writer_open_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "from" && l.GetValue() == from {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
