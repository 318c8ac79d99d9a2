package projector_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/civil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

var (
	bqOnce sync.Once
	bqEmu  *testenv.BigQuery
	bqErr  error
)

// bigQueryClient starts the emulator once per test binary (TestMain stops
// it) and returns a client on it.
func bigQueryClient(t testing.TB) *bigquery.Client {
	t.Helper()
	bqOnce.Do(func() { bqEmu, bqErr = testenv.StartBigQuery(context.Background()) })
	if bqErr != nil {
		t.Fatalf("bigquery emulator: %v", bqErr)
	}
	c, err := bqEmu.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// bqFixture is a fixture whose log is projected into a fresh dataset.
type bqFixture struct {
	*fixture
	bq      *bigquery.Client
	dataset string
}

func newBQFixture(t *testing.T, partitions int32) *bqFixture {
	f := newFixture(t, partitions)
	return &bqFixture{fixture: f, bq: bigQueryClient(t), dataset: fmt.Sprintf("tally_test_%d", seq.Add(1))}
}

func (f *bqFixture) config() projector.BigQueryConfig {
	return projector.BigQueryConfig{
		Brokers: env.Brokers, Topic: f.topic, Group: "bq-" + f.topic, Client: f.bq, Dataset: f.dataset,
		BatchRows: 200, BatchWait: 200 * time.Millisecond, MaxBatchRows: 400, Logger: testenv.Logger(),
	}
}

func (f *bqFixture) projector(hook func()) *projector.BigQuery {
	f.t.Helper()
	cfg := f.config()
	cfg.BeforeMerge = hook
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// caughtUp reports whether the BigQuery offsets reach the log's end.
func (f *bqFixture) caughtUp() bool {
	f.t.Helper()
	ends, err := f.adm.ListCommittedOffsets(f.t.Context(), f.topic)
	if err != nil {
		f.t.Fatal(err)
	}
	stored, err := projector.LoadBigQueryOffsets(f.t.Context(), f.bq, f.dataset, "bigquery")
	if err != nil {
		return false // the projector has not created the table yet
	}
	done := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 && stored[o.Partition] < o.Offset {
			done = false
		}
	})
	return done
}

func (f *bqFixture) runUntilCaughtUp(p *projector.BigQuery) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for !f.caughtUp() {
		if time.Now().After(deadline) {
			cancel()
			f.t.Fatalf("bigquery projector did not catch up in 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		f.t.Fatal(err)
	}
}

// query runs sql on the dataset ({{dataset}} = project.dataset) and
// returns the rows as maps.
func (f *bqFixture) query(sql string, params ...bigquery.QueryParameter) []map[string]bigquery.Value {
	f.t.Helper()
	q := f.bq.Query(expandDataset(sql, f.bq.Project(), f.dataset))
	q.Parameters = params
	it, err := q.Read(f.t.Context())
	if err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	var out []map[string]bigquery.Value
	for {
		row := map[string]bigquery.Value{}
		err := it.Next(&row)
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			f.t.Fatalf("%s: %v", sql, err)
		}
		out = append(out, row)
	}
}

func expandDataset(sql, project, dataset string) string {
	out := []byte{}
	for i := 0; i < len(sql); i++ {
		if i+len("{{dataset}}") <= len(sql) && sql[i:i+len("{{dataset}}")] == "{{dataset}}" {
			out = append(out, project+"."+dataset...)
			i += len("{{dataset}}") - 1
			continue
		}
		out = append(out, sql[i])
	}
	return string(out)
}

// assertFoldOfLog checks the dataset against the generated log:
// inventory_events holds every event once, current_inventory equals the
// fold (on_hand and the sku_version of the newest event per store).
func (f *bqFixture) assertFoldOfLog() {
	f.t.Helper()
	got := f.query("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{{dataset}}.inventory_events`")
	if got[0]["n"] != int64(f.events) || got[0]["d"] != int64(f.events) {
		f.t.Fatalf("inventory_events has %v rows (%v distinct events), want %d", got[0]["n"], got[0]["d"], f.events)
	}
	rows := f.query("SELECT sku_id, store_id, on_hand, sku_version FROM `{{dataset}}.current_inventory`")
	want := 0
	for _, st := range f.skus {
		want += len(st.onHand)
	}
	if len(rows) != want {
		f.t.Fatalf("current_inventory has %d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		st := f.skus[r["sku_id"].(string)]
		store := r["store_id"].(string)
		if st == nil || r["on_hand"] != st.onHand[store] || r["sku_version"] != st.storeVersion[store] {
			f.t.Fatalf("current_inventory %v, fold of the log %+v", r, st)
		}
	}
}

func TestBigQueryProjectsEveryEventOnce(t *testing.T) {
	f := newBQFixture(t, 3)
	r := rand.New(rand.NewPCG(11, 12))
	f.produce(700, 30, r)
	f.runUntilCaughtUp(f.projector(nil))
	f.assertFoldOfLog()

	md, err := f.bq.Dataset(f.dataset).Table(projector.EventsTable).Metadata(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tp := md.TimePartitioning; tp == nil || tp.Type != bigquery.DayPartitioningType || tp.Field != "occurred_at" {
		t.Fatalf("inventory_events partitioning = %+v, want DAY on occurred_at", md.TimePartitioning)
	}
	if c := md.Clustering; c == nil || fmt.Sprint(c.Fields) != "[sku_id store_id]" {
		t.Fatalf("inventory_events clustering = %+v, want sku_id, store_id", md.Clustering)
	}
}

// craft appends one event of a SKU at a store, keeping the fold up to
// date; mod adjusts the event before it is encoded.
func (f *fixture) craft(sku, store string, typ inventoryv1.EventType, delta int64, at time.Time, mod func(*inventoryv1.InventoryEvent)) *kgo.Record {
	st := f.skus[sku]
	if st == nil {
		st = &skuState{onHand: map[string]int64{}, storeVersion: map[string]int64{}}
		f.skus[sku] = st
	}
	st.version++
	st.onHand[store] += delta
	st.storeVersion[store] = st.version
	e := &inventoryv1.InventoryEvent{
		EventId: uuidFor(sku, st.version), EventType: typ, SkuId: sku, StoreId: store, QuantityDelta: delta,
		OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.Now(), CommandId: fmt.Sprintf("cmd-%s-%d", sku, st.version),
		SkuVersion: st.version, OnHandAfter: st.onHand[store], AllowNegative: st.onHand[store] < 0,
	}
	if mod != nil {
		mod(e)
	}
	f.events++
	return f.record(sku, e)
}

const (
	sale    = inventoryv1.EventType_EVENT_TYPE_SALE
	receipt = inventoryv1.EventType_EVENT_TYPE_RECEIPT
)

func TestBigQueryReplayingTwiceKeepsOneRowPerEvent(t *testing.T) {
	f := newBQFixture(t, 2)
	r := rand.New(rand.NewPCG(13, 14))
	f.produce(600, 25, r)
	f.runUntilCaughtUp(f.projector(nil))
	f.assertFoldOfLog()
	offsets, err := projector.LoadBigQueryOffsets(t.Context(), f.bq, f.dataset, "bigquery")
	if err != nil {
		t.Fatal(err)
	}
	digest := "SELECT COUNT(*) AS n, SUM(sku_version) AS v, SUM(on_hand_after) AS h FROM `{{dataset}}.inventory_events`"
	before := f.query(digest)

	// Every event delivered twice more: from offset 0, then from a time
	// before the first event.
	for _, from := range []projector.ReplayFrom{{Offset: 0}, {Time: time.Now().Add(-time.Hour)}} {
		var last projector.ReplayProgress
		got, err := projector.ReplayBigQuery(t.Context(), f.config(), from, func(p projector.ReplayProgress) { last = p })
		if err != nil {
			t.Fatal(err)
		}
		if got.Events != int64(f.events) || last.Events != got.Events {
			t.Fatalf("replay from %+v re-fed %d events (progress said %d), want %d", from, got.Events, last.Events, f.events)
		}
	}
	if after := f.query(digest); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("replays changed inventory_events: %v, before %v", after, before)
	}
	f.assertFoldOfLog()
	again, err := projector.LoadBigQueryOffsets(t.Context(), f.bq, f.dataset, "bigquery")
	if err != nil || fmt.Sprint(again) != fmt.Sprint(offsets) {
		t.Fatalf("a replay moved projector_offsets: %v (%v), was %v", again, err, offsets)
	}
}

func TestBigQueryLateEventsAreMergedBySkuVersion(t *testing.T) {
	f := newBQFixture(t, 1)
	now := time.Now().UTC()
	// An offline till sells 3 units three days ago and syncs now: newest
	// sku_version, oldest occurred_at.
	f.commit([]*kgo.Record{
		f.craft("late-1", "S1", receipt, 20, now.Add(-time.Hour), nil),
		f.craft("late-1", "S1", sale, -2, now, nil),
		f.craft("late-1", "S1", sale, -3, now.Add(-72*time.Hour), nil),
	})
	// A re-delivered older event after a newer one (log order 2, then 1):
	// the row with the higher sku_version wins.
	first := f.craft("late-2", "S1", receipt, 10, now.Add(-time.Hour), nil)
	second := f.craft("late-2", "S1", sale, -4, now, nil)
	f.commit([]*kgo.Record{second})
	f.runUntilCaughtUp(f.projector(nil))
	f.commit([]*kgo.Record{first})
	f.runUntilCaughtUp(f.projector(nil))

	rows := f.query("SELECT sku_id, on_hand, sku_version FROM `{{dataset}}.current_inventory` ORDER BY sku_id")
	if fmt.Sprint(rows) != "[map[on_hand:15 sku_id:late-1 sku_version:3] map[on_hand:6 sku_id:late-2 sku_version:2]]" {
		t.Fatalf("current_inventory = %v", rows)
	}
	late := f.query("SELECT DATE(occurred_at) AS day FROM `{{dataset}}.inventory_events` WHERE sku_id = 'late-1' AND sku_version = 3")
	if len(late) != 1 || late[0]["day"].(civil.Date) != civil.DateOf(now.Add(-72*time.Hour)) {
		t.Fatalf("the late sale's row: %v", late)
	}
	if n := f.query("SELECT COUNT(*) AS n FROM `{{dataset}}.inventory_events`"); n[0]["n"] != int64(5) {
		t.Fatalf("inventory_events has %v rows, want 5", n[0]["n"])
	}
}

func TestBigQueryKillBetweenStagingAndMergeLosesAndDuplicatesNothing(t *testing.T) {
	f := newBQFixture(t, 3)
	r := rand.New(rand.NewPCG(15, 16))
	f.produce(900, 40, r)

	ctx, cancel := context.WithCancel(t.Context())
	batches := 0
	p := f.projector(func() {
		// The second batch is staged; its MERGE is next. Die here.
		if batches++; batches == 2 {
			cancel()
		}
	})
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if batches != 2 {
		t.Fatalf("the hook ran %d times, want 2", batches)
	}
	merged := f.query("SELECT COUNT(*) AS n FROM `{{dataset}}.inventory_events`")[0]["n"].(int64)
	staged := f.stagingTables()
	if merged == 0 || merged >= int64(f.events) || len(staged) == 0 {
		t.Fatalf("after the kill: %d of %d events merged, %v staging tables; want some merged and a staged batch left", merged, f.events, staged)
	}

	cfg := f.config()
	cfg.StagingTTL = time.Nanosecond // this consumer's leftovers are dropped at start
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(p)
	f.assertFoldOfLog()
	// Stopped at once after catching up, the last batch may have been
	// interrupted between its offsets and its cleanup: a start drops that.
	if err := p.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if tables := f.stagingTables(); len(tables) != 0 {
		t.Fatalf("staging tables left: %v", tables)
	}
}

func (f *bqFixture) stagingTables() []string {
	f.t.Helper()
	var out []string
	it := f.bq.Dataset(f.dataset).Tables(f.t.Context())
	for {
		t, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			f.t.Fatal(err)
		}
		if strings.HasPrefix(t.TableID, "tally_staging_") {
			out = append(out, t.TableID)
		}
	}
}
