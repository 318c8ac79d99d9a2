package command_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/testenv"
)

const crashPartitions = 4

// leaveWriterTransactionOpen runs in a child process: a persistent broker,
// a command service that receives stock twice for $SKU, then, as the
// partition's writer does, a transaction holding the SKU's next event that
// is never ended. The parent kills the process there.
func leaveWriterTransactionOpen() error {
	ctx := context.Background()
	sku := os.Getenv("SKU")
	k, err := broker.Start(os.Getenv("KAFKA_DIR"), 0, nil)
	if err != nil {
		return err
	}
	st, err := startStack(k.Addrs())
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(st.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c := inventoryv1.NewCommandServiceClient(conn)
	for _, id := range []string{"rcv-1", "rcv-2"} {
		if _, err := c.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 10}); err != nil {
			return err
		}
	}
	st.stop()
	p := kafka.PartitionFor(sku, crashPartitions)
	producer, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...), kgo.TransactionalID(command.TransactionalID(p)),
		kgo.DefaultProduceTopic(kafka.EventsTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	if err := producer.BeginTransaction(); err != nil {
		return err
	}
	v, err := proto.Marshal(&inventoryv1.InventoryEvent{
		EventId: "01900000-0000-7000-8000-000000000001", EventType: inventoryv1.EventType_EVENT_TYPE_SALE,
		OccurredAt: timestamppb.Now(), RecordedAt: timestamppb.Now(), SkuId: sku, StoreId: "S1",
		QuantityDelta: -20, CommandId: "never-committed", SkuVersion: 3, OnHandAfter: 0,
	})
	if err != nil {
		return err
	}
	if err := producer.ProduceSync(ctx, &kgo.Record{Key: []byte(sku), Value: v, Partition: p}).FirstErr(); err != nil {
		return err
	}
	testenv.ChildReady()
	select {}
}

// A crash that leaves a writer's transaction open in the broker's data
// directory: after the restart the partition takes commands, the open
// transaction's event never counts, and after a second restart the writer
// rebuilds every committed event (before the fix the partition stayed
// unwritable, and once unstuck its later commits were invisible to the
// rebuild, which then wrote versions that already existed).
func TestCrashWithAnOpenTransactionLeavesThePartitionWritable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kafka")
	sku := uniq("crash")
	testenv.StartChild(t, "open-writer-transaction", "KAFKA_DIR="+dir, "SKU="+sku).Kill(t)

	st, stop := startOnDir(t, dir)
	c := st.grpcClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sale, err := c.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: "sale-after-crash", SkuId: sku, StoreId: "S1", Quantity: 1})
	if err != nil {
		t.Fatalf("sale after the restart: %v", err)
	}
	if got := sale.GetResult(); got.GetSkuVersion() != 3 || got.GetStores()[0].GetOnHand() != 19 {
		t.Fatalf("sale after the restart: %v, want version 3 and on_hand 19 (the open transaction's sale never happened)", got)
	}
	if r := receive(t, c, sku, "S1", 5); r.GetSkuVersion() != 4 {
		t.Fatalf("receipt after the restart: version %d, want 4", r.GetSkuVersion())
	}
	stop()

	st, _ = startOnDir(t, dir)
	sale, err = st.grpcClient(t).RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: "sale-after-second-restart", SkuId: sku, StoreId: "S1", Quantity: 1})
	if err != nil {
		t.Fatalf("sale after the second restart: %v", err)
	}
	if got := sale.GetResult(); got.GetSkuVersion() != 5 || got.GetStores()[0].GetOnHand() != 23 {
		t.Fatalf("sale after the second restart: %v, want version 5 and on_hand 23", got)
	}
	// An ordinary read_committed consumer sees every committed event, in
	// version order, and not the aborted one.
	events := readEvents(t, st.brokers, sku)
	for i, e := range events {
		if e.GetSkuVersion() != int64(i+1) || e.GetCommandId() == "never-committed" {
			t.Errorf("event %d: version %d command %q", i, e.GetSkuVersion(), e.GetCommandId())
		}
	}
	if len(events) != 5 {
		t.Errorf("read_committed consumer reads %d events, want 5", len(events))
	}
}

// dieInCommit runs in a child process: a persistent broker and a command
// service whose writers stop forever between producing a transaction's
// records and committing it, once armed. It receives stock (committed),
// arms the hook, and sends $SKU's sale "sale-in-flight": the parent
// SIGKILLs the process while that sale's transaction is open.
func dieInCommit() error {
	ctx := context.Background()
	sku := os.Getenv("SKU")
	k, err := broker.Start(os.Getenv("KAFKA_DIR"), 0, nil)
	if err != nil {
		return err
	}
	var armed atomic.Bool
	svc, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: k.Addrs(), Logger: quietLogger(), BeforeCommit: func(int32) {
			if armed.Load() {
				testenv.ChildReady()
				select {}
			}
		}},
		Partitions: crashPartitions,
	})
	if err != nil {
		return err
	}
	h := command.NewHandler(svc, quietLogger())
	if _, err := h.ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: "rcv", SkuId: sku, StoreId: "S1", Quantity: 10})); err != nil {
		return err
	}
	armed.Store(true)
	_, err = h.RecordSale(ctx, connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: "sale-in-flight", SkuId: sku, StoreId: "S1", Quantity: 4}))
	return fmt.Errorf("the sale returned (%v) although its commit never ran", err)
}

// A process SIGKILLed inside a commit (records produced, transaction not
// ended) answered nothing; the client's retry with the same command_id
// after the restart is applied once, as new: the open transaction was
// aborted and its records never count.
func TestKillInsideACommitThenRetryAppliesOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kafka")
	sku := uniq("incommit")
	testenv.StartChild(t, "die-in-commit", "KAFKA_DIR="+dir, "SKU="+sku).Kill(t)

	st, _ := startOnDir(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sale, err := st.grpcClient(t).RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: "sale-in-flight", SkuId: sku, StoreId: "S1", Quantity: 4})
	if err != nil {
		t.Fatalf("retry after the restart: %v", err)
	}
	if got := sale.GetResult(); got.GetReplayed() || got.GetSkuVersion() != 2 || got.GetStores()[0].GetOnHand() != 6 {
		t.Fatalf("retry after the restart: %v; want applied (not replayed) at version 2, on_hand 6", got)
	}
	var sales int
	for _, e := range readEvents(t, st.brokers, sku) {
		if e.GetCommandId() == "sale-in-flight" {
			sales++
		}
	}
	if sales != 1 {
		t.Fatalf("the sale is in the log %d times, want once", sales)
	}
}
