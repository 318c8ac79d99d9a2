package projector_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

// recordedAt sets an event's recorded_at (and occurred_at) to at.
func recordedAt(at time.Time) func(*inventoryv1.InventoryEvent) {
	return func(e *inventoryv1.InventoryEvent) {
		e.RecordedAt, e.OccurredAt = timestamppb.New(at), timestamppb.New(at)
	}
}

// partitionOf is the ledger partition holding an event.
func (f *fixture) partitionOf(sku string, version int64) string {
	f.t.Helper()
	var name string
	if err := f.pool.QueryRow(f.t.Context(), "SELECT tableoid::regclass::text FROM inventory_ledger WHERE sku_id = $1 AND sku_version = $2",
		sku, version).Scan(&name); err != nil {
		f.t.Fatalf("ledger row %s v%d: %v", sku, version, err)
	}
	return name
}

// TestEventsOfMonthsWithoutAPartitionLandInTheirOwn: events recorded in
// months the ledger has no partition for, past and future, are projected
// into a partition made for their month, never stopping the projection;
// a replay of them all is a no-op.
func TestEventsOfMonthsWithoutAPartitionLandInTheirOwn(t *testing.T) {
	f := newFixture(t, 1)
	past, future := time.Date(2019, 2, 28, 23, 59, 59, 0, time.UTC), time.Date(2031, 7, 1, 0, 0, 0, 0, time.UTC)
	f.commit([]*kgo.Record{
		f.event("sku-0", "S0", receipt, 5, time.Now(), nil, false),
		f.event("sku-0", "S0", sale, -1, past, recordedAt(past), false),
		f.event("sku-0", "S1", receipt, 2, future, recordedAt(future), false),
		f.event("sku-1", "S0", receipt, 3, future, recordedAt(future.Add(time.Hour)), false),
	})
	reg := prometheus.NewRegistry()
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic, Consumer: "pg", Logger: testenv.Logger()},
		Pool:    f.pool, Metrics: projector.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(p, "pg")
	f.assertFoldOfLog()
	for _, c := range []struct {
		sku     string
		version int64
		want    string
	}{
		{"sku-0", 2, "inventory_ledger_2019_02"},
		{"sku-0", 3, "inventory_ledger_2031_07"},
		{"sku-1", 1, "inventory_ledger_2031_07"},
		{"sku-0", 1, "inventory_ledger_" + time.Now().UTC().Format("2006_01")},
	} {
		if got := f.partitionOf(c.sku, c.version); got != c.want {
			t.Errorf("%s v%d is in %s, want %s", c.sku, c.version, got, c.want)
		}
	}
	if n := counter(t, reg, "tally_projector_ledger_partitions_created_total"); n < 2 {
		t.Errorf("partitions created: %v, want at least the two months of the events", n)
	}

	before := f.snapshot()
	if _, err := f.pool.Exec(t.Context(), "DELETE FROM projector_offsets"); err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	if after := f.snapshot(); after != before {
		t.Fatalf("replay changed the read model:\nbefore %s\nafter  %s", before, after)
	}
}

// TestRetentionDropsOldMonthsAndLateEventsStillProject: maintenance as of
// a given now drops the months older than the retention; an event of a
// dropped month arriving later (a lagging or replayed partition) is
// projected, into its month made again, and the projection goes on.
func TestRetentionDropsOldMonthsAndLateEventsStillProject(t *testing.T) {
	f := newFixture(t, 1)
	jan, feb, jun := time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC), time.Date(2030, 2, 10, 0, 0, 0, 0, time.UTC), time.Date(2030, 6, 10, 0, 0, 0, 0, time.UTC)
	f.commit([]*kgo.Record{
		f.event("sku-0", "S0", receipt, 5, jan, recordedAt(jan), false),
		f.event("sku-0", "S0", sale, -1, feb, recordedAt(feb), false),
		f.event("sku-0", "S0", sale, -1, jun, recordedAt(jun), false),
	})
	reg := prometheus.NewRegistry()
	p, err := projector.NewPostgres(projector.Config{
		Consume: projector.Consume{Brokers: env.Brokers, Topic: f.topic, Group: "g-" + f.topic, Consumer: "pg", Logger: testenv.Logger()},
		Pool:    f.pool, Metrics: projector.NewMetrics(reg), HistoryRetention: 120 * 24 * time.Hour, CompactAfter: 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(p, "pg")

	// 120 days before June 10 is February 10: January ended before it.
	// February to May ended more than a day before: compacted.
	res, err := p.MaintainLedger(t.Context(), jun)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) == 0 || !res.Dropped[len(res.Dropped)-1].Equal(readmodel.Month(jan)) || !res.RetainedFrom.Equal(readmodel.Month(feb)) {
		t.Fatalf("maintenance as of %s: %+v; want January dropped, retained from February", jun, res)
	}
	var rows int64
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+readmodel.Events+" WHERE sku_id = 'sku-0'").Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("ledger events left: %d, %v; want February's and June's", rows, err)
	}
	if err := f.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+readmodel.Ledger+" WHERE sku_id = 'sku-0'").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("ledger rows left: %d, %v; want June's (February's compacted)", rows, err)
	}
	if n := counter(t, reg, "tally_projector_ledger_compacted_rows_total"); n != 1 {
		t.Errorf("compacted rows metric: %v, want 1 (February's sale)", n)
	}
	if n := counter(t, reg, "tally_projector_ledger_partitions_dropped_total"); n != float64(len(res.Dropped)) {
		t.Errorf("partitions dropped metric: %v, want %d", n, len(res.Dropped))
	}
	if g := gauge(t, reg, "tally_projector_ledger_retained_from_timestamp_seconds"); g != float64(readmodel.Month(feb).Unix()) {
		t.Errorf("retained_from gauge: %v, want %d", g, readmodel.Month(feb).Unix())
	}

	// A late event of January: its month is made again, not a stop.
	late := jan.Add(time.Hour)
	f.commit([]*kgo.Record{
		f.event("sku-2", "S0", receipt, 1, late, recordedAt(late), false),
		f.event("sku-2", "S0", receipt, 1, jun, recordedAt(jun), false),
	})
	f.runUntilCaughtUp(p, "pg")
	if got := f.partitionOf("sku-2", 1); got != "inventory_ledger_2030_01" {
		t.Errorf("late January event in %s", got)
	}
}

// labelledCounter is the value of the counter name whose first label is
// label (counter, in projector_test.go, for unlabelled ones); 0 when it
// has not counted yet.
func labelledCounter(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
