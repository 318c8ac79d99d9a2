package projector_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/twmb/franz-go/pkg/kadm"
	"google.golang.org/api/iterator"

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

func (f *bqFixture) projector(hook func()) *projector.BigQuery {
	f.t.Helper()
	p, err := projector.NewBigQuery(projector.BigQueryConfig{
		Brokers: env.Brokers, Topic: f.topic, Group: "bq-" + f.topic, Client: f.bq, Dataset: f.dataset,
		BatchRows: 200, BatchWait: 200 * time.Millisecond, MaxBatchRows: 400,
		Logger: testenv.Logger(), BeforeMerge: hook,
	})
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
