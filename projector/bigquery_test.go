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
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"cloud.google.com/go/civil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/analytics"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

// bigQueryClient starts an emulator for the test (stopped with it) and
// returns a client on it. One per test: the emulator keeps every dataset
// in one SQLite database and slows down as they pile up (a test binary's
// second round of these tests ran 2–5 times slower on a shared one).
func bigQueryClient(t testing.TB) *bigquery.Client {
	c, _, _ := bigQuery(t)
	return c
}

// bigQuery is bigQueryClient with a Storage Write API client and the
// emulator too.
func bigQuery(t testing.TB) (*bigquery.Client, *managedwriter.Client, *testenv.BigQuery) {
	t.Helper()
	emu := testenv.NewBigQuery(t)
	c, err := emu.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w, err := emu.Writer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return c, w, emu
}

// bqFixture is a fixture whose log is projected into a fresh dataset.
type bqFixture struct {
	*fixture
	bq      *bigquery.Client
	mw      *managedwriter.Client
	emu     *testenv.BigQuery
	dataset string
}

func newBQFixture(t testing.TB, partitions int32) *bqFixture {
	f := newFixture(t, partitions)
	bq, mw, emu := bigQuery(t)
	return &bqFixture{fixture: f, bq: bq, mw: mw, emu: emu, dataset: fmt.Sprintf("tally_test_%d", seq.Add(1))}
}

func (f *bqFixture) config() projector.BigQueryConfig {
	return projector.BigQueryConfig{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "bq-" + f.topic, Logger: testenv.Logger()},
		Client:  f.bq, Writer: f.mw, Dataset: f.dataset, BatchRows: 200, BatchWait: 200 * time.Millisecond, MaxBatchRows: 400,
		MergeInterval: 300 * time.Millisecond,
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
	deadline := time.Now().Add(3 * time.Minute)
	for !f.caughtUp() {
		if time.Now().After(deadline) {
			cancel()
			f.t.Fatalf("bigquery projector did not catch up in 3 minutes")
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
	rows, err := testenv.Rows(f.t.Context(), f.bq, strings.ReplaceAll(sql, "{{dataset}}", f.bq.Project()+"."+f.dataset), params...)
	if err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return rows
}

// sql is a shipped analytics file for the fixture's dataset.
func (f *bqFixture) sql(path string) string {
	f.t.Helper()
	sql, err := analytics.SQL(path, f.bq.Project(), f.dataset)
	if err != nil {
		f.t.Fatal(err)
	}
	return sql
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
	return f.event(sku, store, typ, delta, at, mod, false)
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
		if got.Events != int64(f.events) || last.Events != got.Events || last.Offsets != last.Total || last.Total == 0 {
			t.Fatalf("replay from %+v re-fed %d events (last progress %+v), want %d", from, got.Events, last, f.events)
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

// A projector killed between a flush's appends and their record in
// projector_offsets (the streams are abandoned, never committed), or
// between the record and the commit (whoever reads the row commits them),
// loses and duplicates nothing.
func TestBigQueryKillBetweenAppendAndOffsetsLosesAndDuplicatesNothing(t *testing.T) {
	for _, at := range []string{"before the intent", "before the commit"} {
		t.Run(at, func(t *testing.T) {
			f := newBQFixture(t, 3)
			r := rand.New(rand.NewPCG(15, 16))
			f.produce(900, 40, r)
			ctx, cancel := context.WithCancel(t.Context())
			flushes := 0
			// The projector to kill writes through a client of its own,
			// closed at the kill: nothing it tries after reaches BigQuery.
			mw, err := f.emu.Writer(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			kill := func() error {
				// The second flush's streams are finalized; die here.
				if flushes++; flushes >= 2 {
					cancel()
					mw.Close()
					return errors.New("killed")
				}
				return nil
			}
			cfg := f.config()
			cfg.Writer = mw
			cfg.MaxPendingRows = 100 // a flush per batch
			if at == "before the intent" {
				cfg.BeforeIntent = kill
			} else {
				cfg.BeforeCommit = kill
			}
			p, err := projector.NewBigQuery(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Run(ctx); err != nil {
				t.Fatal(err)
			}
			if flushes < 2 {
				t.Fatalf("the hook ran %d times, want at least 2", flushes)
			}
			landed := f.query("SELECT COUNT(*) AS n FROM `{{dataset}}.inventory_events`")[0]["n"].(int64)
			pending := f.query("SELECT COUNT(*) AS n FROM `{{dataset}}.projector_offsets` WHERE pending_stream IS NOT NULL")[0]["n"].(int64)
			if landed == 0 || landed >= int64(f.events) {
				t.Fatalf("after the kill %s: %d of %d events landed; want the first flush's only", at, landed, f.events)
			}
			if (at == "before the commit") != (pending > 0) {
				t.Fatalf("after the kill %s: %d partitions name a pending stream", at, pending)
			}
			p, err = projector.NewBigQuery(f.config())
			if err != nil {
				t.Fatal(err)
			}
			f.runUntilCaughtUp(p)
			f.assertFoldOfLog()
		})
	}
}

// A projector that lost its partitions while it flushed (a zombie of a
// rebalance: another projector, here in another consumer group, wrote
// the same events and moved the offsets rows meanwhile) finds its
// one conditional intent moved no row: it never commits its streams,
// drops what it buffered and goes on from the recorded offsets.
func TestBigQueryProjectorThatLostItsPartitionsCommitsNothing(t *testing.T) {
	f := newBQFixture(t, 3)
	r := rand.New(rand.NewPCG(27, 28))
	f.produce(900, 40, r)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var hooked, committed sync.Once
	intended := make(chan struct{})
	cfg := f.config()
	cfg.MergeInterval = 5 * time.Second // the first flush holds every event
	cfg.BeforeIntent = func() error {
		hooked.Do(func() {
			other := f.config()
			other.Group += "-other"
			p, err := projector.NewBigQuery(other)
			if err != nil {
				t.Error(err)
				return
			}
			f.runUntilCaughtUp(p)
		})
		return nil
	}
	cfg.BeforeCommit = func() error {
		committed.Do(func() { close(intended) })
		return nil
	}
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	select {
	case <-intended:
	case <-time.After(3 * time.Minute):
		t.Fatal("the projector never recorded a flush")
	}
	time.Sleep(2 * time.Second) // the rest of the log, already written by the other
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	f.assertFoldOfLog()
	pending := f.query("SELECT COUNT(*) AS n FROM `{{dataset}}.projector_offsets` WHERE pending_stream IS NOT NULL")[0]["n"].(int64)
	if pending != 0 {
		t.Fatalf("%d partitions name a pending stream after both projectors stopped", pending)
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

func TestBigQueryViewsOnACraftedDay(t *testing.T) {
	f := newBQFixture(t, 2)
	now := time.Now().UTC()
	ago := func(h float64) time.Time { return now.Add(-time.Duration(h * float64(time.Hour))) }
	policy := func(point, target int64) func(*inventoryv1.InventoryEvent) {
		return func(e *inventoryv1.InventoryEvent) { e.ReorderPoint, e.TargetLevel = point, target }
	}
	f.commit([]*kgo.Record{
		// hot-1 sells 15 units at A in the last 24 h, hot-2 3 units at B.
		f.craft("hot-1", "A", receipt, 100, ago(72), nil),
		f.craft("hot-1", "A", sale, -10, ago(2), nil),
		f.craft("hot-1", "A", sale, -5, ago(1), nil),
		f.craft("hot-2", "B", receipt, 50, ago(72), nil),
		f.craft("hot-2", "B", sale, -3, ago(1), nil),
		// stuck-1: 40 units at A untouched for 3 days while B sells 4.
		f.craft("stuck-1", "A", receipt, 40, ago(72), nil),
		f.craft("stuck-1", "B", receipt, 10, ago(72), nil),
		f.craft("stuck-1", "B", sale, -4, ago(2), nil),
		// low-1: 5 left at C after selling 7 two days ago (no policy:
		// target 30). low-2: policy target 60, 6 left after selling 14.
		f.craft("low-1", "C", receipt, 12, ago(120), nil),
		f.craft("low-1", "C", sale, -7, ago(48), nil),
		f.craft("low-2", "C", receipt, 20, ago(120), nil),
		f.craft("low-2", "C", inventoryv1.EventType_EVENT_TYPE_REORDER_POLICY_SET, 0, ago(96), policy(5, 60)),
		f.craft("low-2", "C", sale, -14, ago(30), nil),
		// ghost-1: an offline till sold 2 units C never had.
		f.craft("ghost-1", "C", sale, -2, ago(0.5), nil),
	})
	f.runUntilCaughtUp(f.projector(nil))
	f.assertFoldOfLog()

	check := func(name string, got []map[string]bigquery.Value, want string) {
		t.Helper()
		var lines []string
		for _, r := range got {
			lines = append(lines, fmt.Sprint(r))
		}
		if g := strings.Join(lines, "\n"); g != want {
			t.Errorf("%s:\n got %s\nwant %s", name, g, want)
		}
	}
	check("hot_skus top 3 (24h)",
		f.query("SELECT sku_id, units_sold_24h, rank_24h, units_sold_7d, rank_7d FROM `{{dataset}}.hot_skus` WHERE rank_24h <= 3 ORDER BY rank_24h"),
		"map[rank_24h:1 rank_7d:1 sku_id:hot-1 units_sold_24h:15 units_sold_7d:15]\n"+
			"map[rank_24h:2 rank_7d:4 sku_id:stuck-1 units_sold_24h:4 units_sold_7d:4]\n"+
			"map[rank_24h:3 rank_7d:5 sku_id:hot-2 units_sold_24h:3 units_sold_7d:3]")
	check("hot_skus query (window, top 2)",
		f.query(f.sql("queries/hot_skus.sql"),
			bigquery.QueryParameter{Name: "window_start", Value: ago(7 * 24)}, bigquery.QueryParameter{Name: "window_end", Value: now.Add(time.Minute)},
			bigquery.QueryParameter{Name: "top_n", Value: 2}),
		"map[sku_id:hot-1 stores:1 units_sold:15]\nmap[sku_id:low-2 stores:1 units_sold:14]")
	check("low_stock",
		f.query("SELECT sku_id, store_id, available, target_level, units_sold_7d, recommended_reorder_quantity FROM `{{dataset}}.low_stock` ORDER BY sku_id, store_id"),
		"map[available:-2 recommended_reorder_quantity:32 sku_id:ghost-1 store_id:C target_level:30 units_sold_7d:2]\n"+
			"map[available:5 recommended_reorder_quantity:25 sku_id:low-1 store_id:C target_level:30 units_sold_7d:7]\n"+
			"map[available:6 recommended_reorder_quantity:54 sku_id:low-2 store_id:C target_level:60 units_sold_7d:14]\n"+
			"map[available:6 recommended_reorder_quantity:24 sku_id:stuck-1 store_id:B target_level:30 units_sold_7d:4]")
	check("low_stock query (threshold 6)",
		f.query(f.sql("queries/low_stock.sql"), bigquery.QueryParameter{Name: "threshold", Value: 6}),
		"map[available:-2 on_hand:-2 recommended_reorder_quantity:32 reorder_point:<nil> reserved:0 sku_id:ghost-1 store_id:C target_level:30 units_sold_7d:2 updated_at:"+
			fmt.Sprint(f.query("SELECT updated_at FROM `{{dataset}}.current_inventory` WHERE sku_id = 'ghost-1'")[0]["updated_at"])+"]\n"+
			"map[available:5 on_hand:5 recommended_reorder_quantity:25 reorder_point:<nil> reserved:0 sku_id:low-1 store_id:C target_level:30 units_sold_7d:7 updated_at:"+
			fmt.Sprint(f.query("SELECT updated_at FROM `{{dataset}}.current_inventory` WHERE sku_id = 'low-1'")[0]["updated_at"])+"]")
	check("stuck_inventory",
		f.query("SELECT sku_id, store_id, on_hand, units_sold_elsewhere_24h, stores_selling_24h FROM `{{dataset}}.stuck_inventory`"),
		"map[on_hand:40 sku_id:stuck-1 store_id:A stores_selling_24h:1 units_sold_elsewhere_24h:4]")
	check("phantom_inventory",
		f.query("SELECT sku_id, store_id, units_sold, on_hand_before, on_hand_after, allow_negative FROM `{{dataset}}.phantom_inventory`"),
		"map[allow_negative:true on_hand_after:-2 on_hand_before:0 sku_id:ghost-1 store_id:C units_sold:2]")
	check("stock_heatmap",
		f.query("SELECT store_id, sku_id, available, band FROM `{{dataset}}.stock_heatmap` WHERE store_id = 'A' ORDER BY sku_id"),
		"map[available:85 band:HIGH sku_id:hot-1 store_id:A]\nmap[available:40 band:OK sku_id:stuck-1 store_id:A]")
	check("daily_sales (hot-1 at A, all days)",
		f.query("SELECT SUM(units_sold) AS units, SUM(sales) AS sales FROM `{{dataset}}.daily_sales` WHERE sku_id = 'hot-1' AND store_id = 'A'"),
		"map[sales:2 units:15]")
	check("event_volume_minute totals",
		f.query("SELECT SUM(events) AS events, COUNT(DISTINCT store_id) AS stores FROM `{{dataset}}.event_volume_minute`"),
		"map[events:14 stores:3]")
	check("event_volume_hour sales at A",
		f.query("SELECT SUM(events) AS events, SUM(units_delta) AS units FROM `{{dataset}}.event_volume_hour` WHERE store_id = 'A' AND event_type = 'SALE'"),
		"map[events:2 units:-15]")
}

func TestBigQueryGarbageRecordIsDeadLetteredAndProjectionContinues(t *testing.T) {
	f := newBQFixture(t, 1)
	r := rand.New(rand.NewPCG(17, 18))
	f.produce(10, 3, r)
	f.commit([]*kgo.Record{{Key: []byte("sku-0"), Value: []byte("\xff\xfenot a protobuf"), Partition: 0}})
	f.produce(10, 3, r)
	f.runUntilCaughtUp(f.projector(nil))
	f.assertFoldOfLog()

	_, h := f.deadLetter("bigquery")
	if h["tally-source-offset"] != "11" || h["tally-dlq-error"] == "" {
		t.Fatalf("DLQ headers %v", h)
	}
}

func TestBigQueryEventWithATimeBeyondTheYear9999IsDeadLettered(t *testing.T) {
	// BigQuery's TIMESTAMP ends with the year 9999, and the client cannot
	// even encode a later time: the batch failed forever.
	f := newBQFixture(t, 1)
	f.commit([]*kgo.Record{
		f.craft("sku-0", "S0", receipt, 5, time.Now(), nil),
		// Outside the fixture's fold, which counts every crafted event.
		f.record("sku-0", &inventoryv1.InventoryEvent{
			EventId: uuidFor("sku-0", 99), EventType: receipt, SkuId: "sku-0", StoreId: "S0", QuantityDelta: 1, SkuVersion: 99,
			OccurredAt: timestamppb.New(time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)), RecordedAt: timestamppb.Now(),
		}),
		f.craft("sku-0", "S0", receipt, 5, time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), nil),
	})
	f.runUntilCaughtUp(f.projector(nil))
	f.assertFoldOfLog()
	if _, h := f.deadLetter("bigquery"); h["tally-source-offset"] != "1" || !strings.Contains(h["tally-dlq-error"], "event time") {
		t.Fatalf("DLQ headers %v", h)
	}
}

func TestBigQuerySetupCreatesAndMigratesIdempotently(t *testing.T) {
	bq := bigQueryClient(t)
	dataset := fmt.Sprintf("tally_test_%d", seq.Add(1))
	ctx := t.Context()
	// An older deployment: inventory_events without six columns, and a view someone edited. (The emulator records added
	// columns in the table's metadata but not in its SQL catalog, where
	// even ALTER TABLE ADD COLUMN is a no-op, so the columns left out are
	// ones no view reads, and the check is the metadata.)
	ds := bq.Dataset(dataset)
	if err := ds.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	full := projector.EventsSchema()
	var old bigquery.Schema
	missing := map[string]bool{"counterpart_store_id": true, "reserved_delta": true, "reservation_id": true, "reservation_expires_at": true, "log_partition": true, "log_offset": true}
	for _, f := range full {
		if !missing[f.Name] {
			old = append(old, f)
		}
	}
	if err := ds.Table(projector.EventsTable).Create(ctx, &bigquery.TableMetadata{Schema: old}); err != nil {
		t.Fatal(err)
	}
	if err := ds.Table("hot_skus").Create(ctx, &bigquery.TableMetadata{ViewQuery: "SELECT 1 AS x"}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second run finds everything in place
		if err := projector.EnsureBigQuery(ctx, bq, dataset, "US", testenv.Logger()); err != nil {
			t.Fatal(err)
		}
	}
	md, err := ds.Table(projector.EventsTable).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, f := range md.Schema {
		cols = append(cols, f.Name)
	}
	if len(cols) != len(full) || cols[len(old)] != "counterpart_store_id" || cols[len(cols)-1] != "log_offset" || md.Schema[len(cols)-1].Required {
		t.Fatalf("inventory_events columns after migration: %v", cols)
	}
	view, err := ds.Table("hot_skus").Metadata(ctx)
	if err != nil || !strings.Contains(view.ViewQuery, "units_sold_24h") {
		t.Fatalf("hot_skus view after migration: %q (%v)", view.ViewQuery, err)
	}
	for _, name := range []string{projector.CurrentTable, projector.OffsetsTable, "low_stock", "stuck_inventory", "phantom_inventory"} {
		if _, err := ds.Table(name).Metadata(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A flush that fails after its rows are appended (as after a lost answer)
// is retried with new streams: the rows appended twice land once.
func TestBigQueryFlushAppendedTwiceLandsOnce(t *testing.T) {
	f := newBQFixture(t, 2)
	r := rand.New(rand.NewPCG(23, 24))
	f.produce(300, 20, r)
	calls := 0
	cfg := f.config()
	reg := prometheus.NewRegistry()
	cfg.Metrics = projector.NewBigQueryMetrics(reg)
	cfg.BeforeIntent = func() error {
		if calls++; calls == 1 {
			return errors.New("injected: the answer to the appends was lost")
		}
		return nil
	}
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(p)
	f.assertFoldOfLog()
	failed := labelledCounter(t, reg, "tally_bigquery_batches_total", "failed")
	appended := labelledCounter(t, reg, "tally_bigquery_appended_bytes_total", projector.EventsTable)
	if failed < 1 || calls < 2 || appended == 0 {
		t.Fatalf("%v failed attempts, hook ran %d times, %v bytes appended: the failure was not retried", failed, calls, appended)
	}
}

// Per batch the live projection runs no statement at all; per flush it
// runs a handful, none of which reads inventory_events, and only the
// refresh's MERGE reads current_inventory.
func TestBigQueryStatementsNeverReadTheEventsTable(t *testing.T) {
	f := newBQFixture(t, 2)
	r := rand.New(rand.NewPCG(25, 26))
	f.produce(2000, 50, r)
	cfg := f.config()
	cfg.BatchRows, cfg.MaxBatchRows, cfg.MergeInterval = 50, 50, 2*time.Second
	var mu sync.Mutex
	byName := map[string]int{}
	batches := 0
	cfg.Statement = func(name, sql string) {
		mu.Lock()
		defer mu.Unlock()
		byName[name]++
		// A table is named `project.dataset.table` (stream names,
		// …/tables/inventory_events/streams/…, are not tables).
		if strings.Contains(sql, "."+projector.EventsTable+"`") {
			t.Errorf("statement %s reads %s: %s", name, projector.EventsTable, sql)
		}
		if strings.Contains(sql, "."+projector.CurrentTable+"`") && name != "refresh_current" {
			t.Errorf("statement %s reads %s: %s", name, projector.CurrentTable, sql)
		}
	}
	reg := prometheus.NewRegistry()
	cfg.Metrics = projector.NewBigQueryMetrics(reg)
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(p)
	f.assertFoldOfLog()
	batches = int(counter(t, reg, "tally_bigquery_events_total")) / cfg.BatchRows
	mu.Lock()
	defer mu.Unlock()
	flushes := byName["refresh_current"]
	total := 0
	for _, n := range byName {
		total += n
	}
	t.Logf("%d events in at least %d batches: %d flushes, statements %v", f.events, batches, flushes, byName)
	if flushes == 0 || flushes*4 > batches {
		t.Fatalf("%d refreshes of current_inventory for %d batches: want one per flush, flushes far fewer than batches", flushes, batches)
	}
	// Per flush: the refresh, one intent for all partitions (and, on the
	// emulator, which counts no DML rows, a read of the offsets it
	// moved), the settling UPDATE; and a few at the start.
	if total > flushes*4+10 {
		t.Fatalf("%d statements for %d flushes: %v", total, flushes, byName)
	}
}
