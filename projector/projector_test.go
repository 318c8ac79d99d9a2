package projector_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "test environment:", err)
		os.Exit(1)
	}
	code := m.Run()
	env.Stop()
	os.Exit(code)
}

var seq atomic.Int64

// fixture is one test's topic, database and generated log.
type fixture struct {
	t      testing.TB
	topic  string
	pool   *pgxpool.Pool
	prod   *kgo.Client
	adm    *kadm.Client
	parts  int32
	skus   map[string]*skuState
	events int
}

type skuState struct {
	version int64
	onHand  map[string]int64
	// storeVersion is the sku_version of the newest event per store.
	storeVersion map[string]int64
}

func newFixture(t testing.TB, partitions int32) *fixture {
	t.Helper()
	n := seq.Add(1)
	f := &fixture{t: t, topic: fmt.Sprintf("test.events.%d.%d", time.Now().UnixNano(), n), parts: partitions, skus: map[string]*skuState{}}
	var err error
	if f.pool, err = env.NewDatabase(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.pool.Close)
	if err := projector.Migrate(t.Context(), f.pool, nil); err != nil {
		t.Fatal(err)
	}
	f.prod, err = kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.TransactionalID("test-producer-"+f.topic),
		kgo.DefaultProduceTopic(f.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.prod.Close)
	f.adm = kadm.NewClient(f.prod)
	if _, err := kafka.EnsureTopic(t.Context(), f.adm, f.topic, partitions, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// produce appends n random valid events over the given SKUs in one
// transaction, the way a partition writer would.
func (f *fixture) produce(n, skus int, r *rand.Rand) {
	f.t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for range n {
		sku := fmt.Sprintf("sku-%d", r.IntN(skus))
		st := f.skus[sku]
		if st == nil {
			st = &skuState{onHand: map[string]int64{}, storeVersion: map[string]int64{}}
			f.skus[sku] = st
		}
		store := fmt.Sprintf("S%d", r.IntN(3))
		delta := int64(r.IntN(21) - 10)
		if delta == 0 {
			delta = 1
		}
		st.version++
		st.onHand[store] += delta
		st.storeVersion[store] = st.version
		typ := inventoryv1.EventType_EVENT_TYPE_RECEIPT
		if delta < 0 {
			typ = inventoryv1.EventType_EVENT_TYPE_SALE
		}
		now := time.Now()
		e := &inventoryv1.InventoryEvent{
			EventId: uuidFor(sku, st.version), EventType: typ, SkuId: sku, StoreId: store, QuantityDelta: delta,
			OccurredAt: timestamppb.New(now), RecordedAt: timestamppb.New(now), CommandId: fmt.Sprintf("cmd-%s-%d", sku, st.version),
			SkuVersion: st.version, OnHandAfter: st.onHand[store], AllowNegative: st.onHand[store] < 0,
			Metadata: map[string]string{"till": "7"},
		}
		recs = append(recs, f.record(sku, e))
	}
	f.commit(recs)
	f.events += n
}

func (f *fixture) record(sku string, e *inventoryv1.InventoryEvent) *kgo.Record {
	v, err := proto.Marshal(e)
	if err != nil {
		f.t.Fatal(err)
	}
	return &kgo.Record{Key: []byte(sku), Value: v, Partition: kafka.PartitionFor(sku, f.parts)}
}

func (f *fixture) commit(recs []*kgo.Record) {
	f.t.Helper()
	ctx := f.t.Context()
	if err := f.prod.BeginTransaction(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
	if err := f.prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		f.t.Fatal(err)
	}
}

func uuidFor(sku string, v int64) string {
	h := uint64(0xcbf29ce484222325)
	for _, c := range sku {
		h = (h ^ uint64(c)) * 0x100000001b3
	}
	return fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", uint32(h), uint16(h>>32), uint16(v>>12)&0xfff, uint16(v)&0xfff, uint64(v)+h>>16&0xffffffffffff)
}

func (f *fixture) projector(consumer string, hook func(), maxPoll int) *projector.Postgres {
	f.t.Helper()
	p, err := projector.NewPostgres(projector.Config{
		Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic + consumer, Consumer: consumer, Pool: f.pool,
		MaxPollRecords: maxPoll, Logger: testenv.Logger(), AfterStage: hook,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// caughtUp reports whether the consumer's stored offsets reach the log's
// last stable offsets.
func (f *fixture) caughtUp(consumer string) bool {
	f.t.Helper()
	ends, err := f.adm.ListCommittedOffsets(f.t.Context(), f.topic)
	if err != nil {
		f.t.Fatal(err)
	}
	stored, err := projector.LoadOffsets(f.t.Context(), f.pool, consumer)
	if err != nil {
		f.t.Fatal(err)
	}
	done := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 && stored[o.Partition] < o.Offset {
			done = false
		}
	})
	return done
}

// runUntilCaughtUp runs p until its offsets reach the end of the log.
func (f *fixture) runUntilCaughtUp(p *projector.Postgres, consumer string) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !f.caughtUp(consumer) {
		if time.Now().After(deadline) {
			cancel()
			f.t.Fatalf("projector did not catch up in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		f.t.Fatal(err)
	}
}

// assertFoldOfLog checks the read model against the generated log: levels
// equal the fold, the ledger has every event once and no gaps.
func (f *fixture) assertFoldOfLog() {
	f.t.Helper()
	ctx := f.t.Context()
	var ledger, distinctEvents int
	if err := f.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id) FROM inventory_ledger").Scan(&ledger, &distinctEvents); err != nil {
		f.t.Fatal(err)
	}
	if ledger != f.events || distinctEvents != f.events {
		f.t.Fatalf("ledger has %d rows (%d distinct events), want %d", ledger, distinctEvents, f.events)
	}
	var gaps int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT sku_id FROM inventory_ledger GROUP BY sku_id
		HAVING count(*) <> max(sku_version) OR min(sku_version) <> 1) g`).Scan(&gaps); err != nil {
		f.t.Fatal(err)
	}
	if gaps != 0 {
		f.t.Fatalf("%d SKUs have version gaps in the ledger", gaps)
	}
	levels := 0
	for sku, st := range f.skus {
		for store, want := range st.onHand {
			levels++
			var got, version int64
			if err := f.pool.QueryRow(ctx, "SELECT on_hand, sku_version FROM stock_levels WHERE sku_id = $1 AND store_id = $2", sku, store).Scan(&got, &version); err != nil {
				f.t.Fatalf("stock_levels %s/%s: %v", sku, store, err)
			}
			if got != want {
				f.t.Fatalf("stock_levels %s/%s = %d, fold of the log = %d", sku, store, got, want)
			}
		}
		var v int64
		if err := f.pool.QueryRow(ctx, "SELECT max(sku_version) FROM stock_levels WHERE sku_id = $1", sku).Scan(&v); err != nil || v != st.version {
			f.t.Fatalf("newest projected version of %s = %d (%v), want %d", sku, v, err, st.version)
		}
	}
	var rows int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM stock_levels").Scan(&rows); err != nil || rows != levels {
		f.t.Fatalf("stock_levels has %d rows (%v), want %d", rows, err, levels)
	}
}

func TestKillBetweenCopyAndCommitLeavesNoTrace(t *testing.T) {
	f := newFixture(t, 3)
	r := rand.New(rand.NewPCG(1, 2))
	f.produce(500, 20, r)

	ctx, cancel := context.WithCancel(t.Context())
	var killed atomic.Bool
	p := f.projector("pg", func() {
		// The rows are written; the commit is next. Die here.
		killed.Store(true)
		cancel()
	}, 100)
	if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if !killed.Load() {
		t.Fatal("the hook never ran")
	}
	var n int
	if err := f.pool.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM inventory_ledger) + (SELECT count(*) FROM projector_offsets)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a batch killed before its commit left %d rows", n)
	}
	f.runUntilCaughtUp(f.projector("pg", nil, 100), "pg")
	f.assertFoldOfLog()
}

func TestRandomKillsConvergeToTheFoldOfTheLog(t *testing.T) {
	f := newFixture(t, 4)
	r := rand.New(rand.NewPCG(3, 4))
	for range 10 {
		f.produce(300, 40, r)
	}
	kills := 0
	for round := 0; !f.caughtUp("pg") && round < 40; round++ {
		ctx, cancel := context.WithCancel(t.Context())
		// Die at a random batch, sometimes before the commit (the hook),
		// sometimes at a random moment.
		dieAt := r.IntN(5)
		batches := 0
		p := f.projector("pg", func() {
			if batches++; batches > dieAt && r.IntN(2) == 0 {
				cancel()
			}
		}, 50+r.IntN(200))
		timer := time.AfterFunc(time.Duration(50+r.IntN(300))*time.Millisecond, cancel)
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		timer.Stop()
		cancel()
		kills++
	}
	f.runUntilCaughtUp(f.projector("pg", nil, 500), "pg")
	t.Logf("%d kills before catching up", kills)
	if kills < 2 {
		t.Fatalf("only %d kills: the test did not interrupt the projector", kills)
	}
	f.assertFoldOfLog()
}

func TestReplayingTheLogTwiceChangesNothing(t *testing.T) {
	f := newFixture(t, 2)
	r := rand.New(rand.NewPCG(5, 6))
	f.produce(400, 15, r)
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	before := f.snapshot()

	// Forget the offsets: the projector reads the whole log again.
	if _, err := f.pool.Exec(t.Context(), "DELETE FROM projector_offsets"); err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	if after := f.snapshot(); after != before {
		t.Fatalf("replay changed the read model:\nbefore %s\nafter  %s", before, after)
	}
	f.assertFoldOfLog()
}

// snapshot digests the read model's tables.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var s string
	if err := f.pool.QueryRow(f.t.Context(), `SELECT
		(SELECT md5(string_agg(l::text, ',' ORDER BY sku_id, sku_version)) FROM inventory_ledger l) || '/' ||
		(SELECT md5(string_agg(s::text, ',' ORDER BY sku_id, store_id)) FROM stock_levels s)`).Scan(&s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

func TestGarbageRecordIsDeadLetteredAndProjectionContinues(t *testing.T) {
	f := newFixture(t, 1)
	r := rand.New(rand.NewPCG(7, 8))
	f.produce(10, 3, r)
	f.commit([]*kgo.Record{{Key: []byte("sku-0"), Value: []byte("\xff\xfenot a protobuf"), Partition: 0}})
	f.produce(10, 3, r)
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	f.assertFoldOfLog()

	value, h := f.deadLetter("pg")
	if h["tally-source-partition"] != "0" || h["tally-source-offset"] != "11" || h["tally-dlq-error"] == "" || string(value) != "\xff\xfenot a protobuf" {
		t.Fatalf("DLQ record %q headers %v", value, h)
	}
}

// deadLetter waits for the record consumer dead-lettered from the
// fixture's topic and returns its value and headers.
func (f *fixture) deadLetter(consumer string) ([]byte, map[string]string) {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.ConsumeTopics(kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			f.t.Fatalf("no record from %s reached the DLQ", consumer)
		}
		for it := fs.RecordIter(); !it.Done(); {
			rec := it.Next()
			h := map[string]string{}
			for _, kv := range rec.Headers {
				h[kv.Key] = string(kv.Value)
			}
			if h["tally-source-topic"] == f.topic && h["tally-dlq-consumer"] == consumer {
				return rec.Value, h
			}
		}
	}
}
