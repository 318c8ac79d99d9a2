package projector_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
	"github.com/tally-oss/tally/query"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

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
	// kept is, per store, the newest event the Postgres read model must
	// hold: the newest one not poisoned.
	kept map[string]level
	// poisoned are the versions the read model must skip.
	poisoned map[int64]bool
}

// level is a store's on_hand after an event, and the event's sku_version.
type level struct{ onHand, version int64 }

func newFixture(t testing.TB, partitions int32) *fixture {
	t.Helper()
	n := seq.Add(1)
	f := &fixture{t: t, topic: fmt.Sprintf("test.events.%d.%d", time.Now().UnixNano(), n), parts: partitions, skus: map[string]*skuState{}}
	f.pool = env.NewDatabase(t)
	var err error
	if err := readmodel.Migrate(t.Context(), f.pool, nil); err != nil {
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
	f.commit(f.generate(n, skus, r))
}

// generate returns n random valid events over the given SKUs.
func (f *fixture) generate(n, skus int, r *rand.Rand) []*kgo.Record {
	f.t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for range n {
		sku := fmt.Sprintf("sku-%d", r.IntN(skus))
		store := fmt.Sprintf("S%d", r.IntN(3))
		delta := int64(r.IntN(21) - 10)
		if delta == 0 {
			delta = 1
		}
		typ := receipt
		if delta < 0 {
			typ = sale
		}
		recs = append(recs, f.event(sku, store, typ, delta, time.Now(), func(e *inventoryv1.InventoryEvent) {
			e.RecordedAt = e.OccurredAt
			e.Metadata = map[string]string{"till": "7"}
		}, false))
	}
	return recs
}

// event appends the next event of a SKU at a store to the generated log,
// keeping the fold up to date; mod adjusts the event before it is encoded.
// A poisoned event is one the Postgres read model must skip: the write
// side's fold counts it (the next events carry it in their *_after), the
// read model's levels and ledger do not.
func (f *fixture) event(sku, store string, typ inventoryv1.EventType, delta int64, at time.Time, mod func(*inventoryv1.InventoryEvent), poisoned bool) *kgo.Record {
	st := f.skus[sku]
	if st == nil {
		st = &skuState{onHand: map[string]int64{}, storeVersion: map[string]int64{}, kept: map[string]level{}, poisoned: map[int64]bool{}}
		f.skus[sku] = st
	}
	st.version++
	st.onHand[store] += delta
	st.storeVersion[store] = st.version
	if poisoned {
		st.poisoned[st.version] = true
	} else {
		st.kept[store] = level{st.onHand[store], st.version}
		f.events++
	}
	e := &inventoryv1.InventoryEvent{
		EventId: uuidFor(sku, st.version), EventType: typ, SkuId: sku, StoreId: store, QuantityDelta: delta,
		OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.Now(), CommandId: fmt.Sprintf("cmd-%s-%d", sku, st.version),
		SkuVersion: st.version, OnHandAfter: st.onHand[store], AllowNegative: st.onHand[store] < 0,
	}
	if mod != nil {
		mod(e)
	}
	return f.record(sku, e)
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

// produceRaw writes recs straight onto the topic, without a transaction,
// as a tool other than Tally's writers might.
func (f *fixture) produceRaw(recs []*kgo.Record) {
	f.t.Helper()
	raw, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.DefaultProduceTopic(f.topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.ProduceSync(f.t.Context(), recs...).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) projector(consumer string, hook func(), maxPoll int) *projector.Postgres {
	f.t.Helper()
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic + consumer, Consumer: consumer, Logger: testenv.Logger()},
		Pool:    f.pool, MaxPollRecords: maxPoll, AfterStage: hook,
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
	f.runUntil(p, func() bool { return f.caughtUp(consumer) })
}

// runUntil runs p until done. (A batch's commit is visible before its
// Commit call returns and the projector counts it in its metrics: a test
// of metrics waits for them too, or the stop may come in between.)
func (f *fixture) runUntil(p *projector.Postgres, done func() bool) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !done() {
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

// assertFoldOfLog checks the read model against the generated log: the
// ledger has every event but the poisoned ones, once; levels equal the
// fold of those events (each store at its newest kept event).
func (f *fixture) assertFoldOfLog() {
	f.t.Helper()
	ctx := f.t.Context()
	var skus []string
	var versions []int64
	for sku, st := range f.skus {
		for v := int64(1); v <= st.version; v++ {
			if !st.poisoned[v] {
				skus, versions = append(skus, sku), append(versions, v)
			}
		}
	}
	var ledger, distinctEvents, expected int
	if err := f.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id),
		(SELECT count(*) FROM inventory_ledger JOIN unnest($1::text[], $2::bigint[]) AS e(sku_id, sku_version) USING (sku_id, sku_version))
		FROM inventory_ledger`, skus, versions).Scan(&ledger, &distinctEvents, &expected); err != nil {
		f.t.Fatal(err)
	}
	// The primary key is (sku_id, sku_version): with every expected
	// version present and no other row, the ledger is the expected set.
	if ledger != f.events || distinctEvents != f.events || expected != f.events {
		f.t.Fatalf("ledger has %d rows (%d distinct events, %d of the expected versions), want %d", ledger, distinctEvents, expected, f.events)
	}
	levels := 0
	for sku, st := range f.skus {
		newest := int64(0)
		for store, want := range st.kept {
			levels++
			newest = max(newest, want.version)
			var got level
			if err := f.pool.QueryRow(ctx, "SELECT on_hand, sku_version FROM stock_levels WHERE sku_id = $1 AND store_id = $2", sku, store).Scan(&got.onHand, &got.version); err != nil {
				f.t.Fatalf("stock_levels %s/%s: %v", sku, store, err)
			}
			if got != want {
				f.t.Fatalf("stock_levels %s/%s = %+v, fold of the log = %+v", sku, store, got, want)
			}
		}
		if newest == 0 {
			continue
		}
		var v int64
		if err := f.pool.QueryRow(ctx, "SELECT max(sku_version) FROM stock_levels WHERE sku_id = $1", sku).Scan(&v); err != nil || v != newest {
			f.t.Fatalf("newest projected version of %s = %d (%v), want %d", sku, v, err, newest)
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
	for i := range 10 {
		f.produce(300, 40, r)
		if i == 4 { // and one event Postgres refuses, dead-lettered once
			f.commit([]*kgo.Record{f.event("sku-3", "S1", receipt, 2, time.Now(), func(e *inventoryv1.InventoryEvent) { e.Reason = "a\x00b" }, true)})
		}
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
	var dead int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM projection_dead_letters").Scan(&dead); err != nil || dead != 1 {
		t.Fatalf("projection_dead_letters has %d rows (%v), want 1", dead, err)
	}
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
	// Dead letters are copies of events the log keeps: the DLQ forgets.
	rc, err := f.adm.DescribeTopicConfigs(t.Context(), kafka.DLQTopic)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rc.On(kafka.DLQTopic, nil)
	if err == nil {
		err = cfg.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatInt(kafka.DLQRetention.Milliseconds(), 10)
	got := "not reported"
	for _, c := range cfg.Configs {
		if c.Key == "retention.ms" {
			got = c.MaybeValue()
		}
	}
	if got != want {
		t.Errorf("DLQ topic retention.ms=%s; want %s (kafka.DLQRetention)", got, want)
	}
}

func TestEventsPostgresRefusesAreDeadLetteredAndEveryOtherEventLandsOnce(t *testing.T) {
	f := newFixture(t, 3)
	r := rand.New(rand.NewPCG(9, 10))
	nul := func(e *inventoryv1.InventoryEvent) { e.Reason = "a\x00b" }
	nulMeta := func(e *inventoryv1.InventoryEvent) {
		e.Metadata = map[string]string{"till": "7", "note": "a\x00b"}
		e.EventId = "urn:uuid:" + strings.ToUpper(e.EventId) // a UUID to Go, not to Postgres
	}
	// Valid events with two that Postgres cannot store among them: a NUL
	// in the reason (text: SQLSTATE 22021) and in a metadata value (jsonb:
	// 22P05). lone-1's poisoned event is the last of its store, so that
	// store's level stays at the event before it; the random SKUs' stores
	// move on.
	recs := f.generate(150, 10, r)
	recs = append(recs, f.event("sku-1", "S0", receipt, 4, time.Now(), nul, true))
	recs = append(recs, f.generate(100, 10, r)...)
	recs = append(recs,
		f.event("lone-1", "S0", receipt, 20, time.Now(), nil, false),
		f.event("lone-1", "S0", sale, -3, time.Now(), nulMeta, true),
		f.event("lone-1", "S1", receipt, 5, time.Now(), nil, false))
	recs = append(recs, f.generate(150, 10, r)...)
	f.produceRaw(recs)
	poisoned := []*kgo.Record{recs[150], recs[252]}

	reg := prometheus.NewRegistry()
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic, Consumer: "pg", Logger: testenv.Logger()},
		Pool:    f.pool, Metrics: projector.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.runUntil(p, func() bool { return f.caughtUp("pg") && counter(t, reg, "tally_projector_dead_lettered_total") >= 2 })
	f.assertFoldOfLog()
	if got := counter(t, reg, "tally_projector_dead_lettered_total"); got != 2 {
		t.Fatalf("tally_projector_dead_lettered_total = %v, want 2", got)
	}

	// In the dead-letter topic, as they were, with the reason.
	dlq := f.deadLetters("pg", 2)
	for i, want := range []struct {
		rec      *kgo.Record
		sqlstate string
	}{{poisoned[0], "22021"}, {poisoned[1], "22P05"}} {
		h := dlq[i].headers
		if string(dlq[i].value) != string(want.rec.Value) || h["tally-source-partition"] != fmt.Sprint(want.rec.Partition) ||
			h["tally-source-offset"] != fmt.Sprint(want.rec.Offset) || h["tally-dlq-sqlstate"] != want.sqlstate || h["tally-dlq-error"] == "" {
			t.Errorf("DLQ record %d: headers %v, want offset %d/%d, SQLSTATE %s", i, h, want.rec.Partition, want.rec.Offset, want.sqlstate)
		}
	}
	// In projection_dead_letters, and reported by GetProjectionStatus.
	want := fmt.Sprintf("[%d/%d %s sku-1 v%d 22021] [%d/%d %s lone-1 v2 22P05]",
		poisoned[0].Partition, poisoned[0].Offset, decoded(t, poisoned[0]).GetEventId(), decoded(t, poisoned[0]).GetSkuVersion(),
		poisoned[1].Partition, poisoned[1].Offset, strings.ToLower(strings.TrimPrefix(decoded(t, poisoned[1]).GetEventId(), "urn:uuid:")))
	status, err := query.New(query.Config{Pool: f.pool, Consumer: "pg"}).GetProjectionStatus(t.Context(), connect.NewRequest(&inventoryv1.GetProjectionStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range status.Msg.GetRecentDeadLetters() {
		if d.GetError() == "" || d.GetDeadLetteredAt() == nil {
			t.Errorf("dead letter without error or time: %v", d)
		}
		got = append(got, fmt.Sprintf("[%d/%d %s %s v%d %s]", d.GetPartition(), d.GetOffset(), d.GetEventId(), d.GetSkuId(), d.GetSkuVersion(), d.GetSqlstate()))
	}
	slices.Sort(got)
	if status.Msg.GetDeadLetterCount() != 2 || strings.Join(got, " ") != want {
		t.Fatalf("GetProjectionStatus: %d dead letters %v, want 2: %s", status.Msg.GetDeadLetterCount(), got, want)
	}
	// The newest transaction's visibility, which the projector stores.
	if v := status.Msg.GetVisibility(); v == nil || v.GetP50Ms() < 0 || v.GetP99Ms() < v.GetP50Ms() || v.GetCommittedAt() == nil {
		t.Errorf("GetProjectionStatus visibility %v, want p50 <= p99 and a commit time", v)
	}

	// A replay meets the same events again: it stores nothing twice and
	// records no dead letter twice.
	before := f.snapshot()
	if _, err := f.pool.Exec(t.Context(), "DELETE FROM projector_offsets"); err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	if after := f.snapshot(); after != before {
		t.Fatalf("replay changed the read model:\nbefore %s\nafter  %s", before, after)
	}
	var n int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM projection_dead_letters").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after a replay projection_dead_letters has %d rows (%v), want 2", n, err)
	}
	f.assertFoldOfLog()

	// The next event of lone-1 at S0 carries its on_hand after the skipped
	// one: the level heals.
	f.commit([]*kgo.Record{f.event("lone-1", "S0", receipt, 1, time.Now(), nil, false)})
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	f.assertFoldOfLog()
	var onHand int64
	if err := f.pool.QueryRow(t.Context(), "SELECT on_hand FROM stock_levels WHERE sku_id = 'lone-1' AND store_id = 'S0'").Scan(&onHand); err != nil || onHand != 20-3+1 {
		t.Fatalf("lone-1 at S0 after the next event: on_hand %d (%v), want %d", onHand, err, 20-3+1)
	}
}

func TestLostConnectionIsRetriedAndDeadLettersNothingMore(t *testing.T) {
	f := newFixture(t, 2)
	r := rand.New(rand.NewPCG(15, 16))
	f.produce(100, 10, r)
	f.commit([]*kgo.Record{f.event("sku-1", "S0", receipt, 2, time.Now(), func(e *inventoryv1.InventoryEvent) { e.Reason = "a\x00b" }, true)})
	f.produce(100, 10, r)

	// Postgres ends the first batch's session just before its commit
	// (SQLSTATE 57P01, as in a failover): not the events' fault, so the
	// batch is retried, and nothing but the poisoned event is skipped.
	var terminated atomic.Int64
	reg := prometheus.NewRegistry()
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic, Consumer: "pg", Logger: testenv.Logger()},
		Pool:    f.pool, Metrics: projector.NewMetrics(reg),
		AfterStage: func() {
			if terminated.Load() > 0 {
				return
			}
			var n int64
			// Between statements, the projector's session is idle in
			// its transaction.
			if err := f.pool.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
				t.Error(err)
			}
			terminated.Store(n)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.runUntil(p, func() bool { return f.caughtUp("pg") && counter(t, reg, "tally_projector_dead_lettered_total") >= 1 })
	f.assertFoldOfLog()
	var dead int
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM projection_dead_letters").Scan(&dead); err != nil || dead != 1 {
		t.Fatalf("projection_dead_letters has %d rows (%v), want 1", dead, err)
	}
	if terminated.Load() != 1 {
		t.Fatalf("terminated %d sessions, want 1", terminated.Load())
	}
	if got := counter(t, reg, "tally_projector_dead_lettered_total"); got != 1 {
		t.Fatalf("tally_projector_dead_lettered_total = %v, want 1 (counted when committed)", got)
	}
}

func TestEventWithATimeBeyondTheYear9999IsDeadLettered(t *testing.T) {
	f := newFixture(t, 1)
	f.commit([]*kgo.Record{
		f.event("sku-0", "S0", receipt, 5, time.Now(), nil, false),
		f.event("sku-0", "S0", receipt, 5, time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), nil, true),
		f.event("sku-0", "S0", receipt, 5, time.Now(), nil, false),
	})
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	f.assertFoldOfLog()
	if _, h := f.deadLetter("pg"); h["tally-source-offset"] != "1" || !strings.Contains(h["tally-dlq-error"], "event time") {
		t.Fatalf("DLQ headers %v", h)
	}
}

// decoded decodes an event record.
func decoded(t testing.TB, r *kgo.Record) *inventoryv1.InventoryEvent {
	t.Helper()
	e := &inventoryv1.InventoryEvent{}
	if err := proto.Unmarshal(r.Value, e); err != nil {
		t.Fatal(err)
	}
	return e
}

// counter returns the value of an unlabelled counter in reg.
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// deadLetter waits for the record consumer dead-lettered from the
// fixture's topic and returns its value and headers.
func (f *fixture) deadLetter(consumer string) ([]byte, map[string]string) {
	f.t.Helper()
	d := f.deadLetters(consumer, 1)[0]
	return d.value, d.headers
}

// dlqRecord is a record of the dead-letter topic.
type dlqRecord struct {
	value   []byte
	headers map[string]string
}

// deadLetters reads the dead-letter topic with a consumer of its own until
// it has found n distinct source records that consumer dead-lettered from
// the fixture's topic, and returns them in the DLQ's order (a record
// dead-lettered twice counts once).
func (f *fixture) deadLetters(consumer string, n int) []dlqRecord {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.ConsumeTopics(kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		f.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	var out []dlqRecord
	seen := map[string]bool{}
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			f.t.Fatalf("%d of %d records from %s reached the DLQ", len(out), n, consumer)
		}
		for it := fs.RecordIter(); !it.Done(); {
			rec := it.Next()
			h := map[string]string{}
			for _, kv := range rec.Headers {
				h[kv.Key] = string(kv.Value)
			}
			src := h["tally-source-partition"] + "/" + h["tally-source-offset"]
			if h["tally-source-topic"] == f.topic && h["tally-dlq-consumer"] == consumer && !seen[src] {
				seen[src] = true
				out = append(out, dlqRecord{rec.Value, h})
			}
		}
	}
	return out
}

func TestRebuildIntoAFreshSchemaIsTheFoldOfTheLog(t *testing.T) {
	f := newFixture(t, 2)
	r := rand.New(rand.NewPCG(9, 10))
	f.produce(300, 10, r)
	f.commit([]*kgo.Record{{Key: []byte("sku-0"), Value: []byte("not an event"), Partition: 1}})
	f.produce(300, 10, r)
	var last projector.ReplayProgress
	// Two loads, a partition each, into the one schema.
	n, _, err := projector.Rebuild(t.Context(), projector.RebuildConfig{
		Brokers: env.Brokers, Topic: f.topic, DatabaseURL: f.pool.Config().ConnString(), Schema: "rebuilt",
		Logger: testenv.Logger(), Progress: func(p projector.ReplayProgress) { last = p }, Parallel: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(f.events) || last.Events == 0 || last.Offsets == 0 || last.Offsets > last.Total || !last.Indexing {
		t.Fatalf("rebuilt %d events (last progress %+v: want the key's build after the load), want %d", n, last, f.events)
	}
	ends, err := f.adm.ListEndOffsets(t.Context(), f.topic)
	if err != nil {
		t.Fatal(err)
	}
	var offsets int64
	ends.Each(func(o kadm.ListedOffset) { offsets += o.Offset })
	if last.Offsets != offsets || last.Total != offsets || last.Events != int64(f.events)+1 {
		t.Fatalf("the progress of both loads: %+v, want %d offsets of %d and %d records (the events and the dead letter)", last, offsets, offsets, f.events+1)
	}
	quarter := projector.ReplayProgress{Offsets: 50, Total: 200, Elapsed: 10 * time.Second}
	if eta := quarter.ETA(); eta != 30*time.Second {
		t.Fatalf("a quarter of the log in 10 s: ETA %v, want 30s", eta)
	}
	cfg, err := pgxpool.ParseConfig(f.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = "rebuilt"
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f.pool = pool
	f.assertFoldOfLog()
	// The ledger's key, dropped for the load, is back (the idempotence of
	// every projection into this schema hangs on it).
	var key string
	if err := pool.QueryRow(t.Context(), `SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
		JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
		WHERE n.nspname = 'rebuilt' AND r.relname = 'inventory_ledger' AND c.contype = 'p'`).Scan(&key); err != nil {
		t.Fatalf("the rebuilt ledger's primary key: %v", err)
	}
	if key != "PRIMARY KEY (sku_id, store_id, sku_version, recorded_at)" {
		t.Fatalf("the rebuilt ledger's primary key is %q", key)
	}
	if _, h := f.deadLetter("replay"); h["tally-source-partition"] != "1" {
		t.Fatalf("dead letter headers %v", h)
	}
}
