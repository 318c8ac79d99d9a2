package projector_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-oss/tally/projector"
)

// BenchmarkProjectPostgres measures events/s projected into the ledger and
// stock_levels: the log is produced first, then the clock runs while the
// projector catches up. One op is one event.
func BenchmarkProjectPostgres(b *testing.B) {
	f := newFixture(b, 6)
	r := rand.New(rand.NewPCG(9, 10))
	for left := b.N; left > 0; left -= 5000 {
		f.produce(min(left, 5000), 100000, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	f.runUntilCaughtUp(f.projector("pg", nil, 0), "pg")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.StopTimer()
	f.assertFoldOfLog()
}

// BenchmarkProjectBigQuery measures events/s projected into the BigQuery
// emulator (a SQLite-backed Go process, not BigQuery) through the Storage
// Write API: the log is produced first, then the clock runs while the
// projector catches up. One op is one event, over 1,000 SKUs × 3 stores.
// The cases are the flush interval (--bigquery-merge-interval): each flush
// appends every partition's buffered rows, refreshes current_inventory and
// commits. appended-B/event is what the Storage Write API is billed for.
func BenchmarkProjectBigQuery(b *testing.B) {
	for _, c := range []struct {
		name     string
		interval time.Duration
	}{{"flush-1s", time.Second}, {"flush-5s", 5 * time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			f := newBQFixture(b, 6)
			r := rand.New(rand.NewPCG(19, 20))
			for left := b.N; left > 0; left -= 5000 {
				f.produce(min(left, 5000), 1000, r)
			}
			cfg := f.config()
			cfg.BatchRows, cfg.MaxBatchRows, cfg.BatchWait, cfg.MergeInterval = 5000, 50000, time.Second, c.interval
			reg := prometheus.NewRegistry()
			cfg.Metrics = projector.NewBigQueryMetrics(reg)
			p, err := projector.NewBigQuery(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Setup(b.Context()); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			f.runUntilCaughtUp(p)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			b.StopTimer()
			f.assertFoldOfLog()
			families, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			for _, mf := range families {
				for _, m := range mf.GetMetric() {
					if mf.GetName() == "tally_bigquery_appended_bytes_total" && m.GetLabel()[0].GetValue() == projector.EventsTable {
						b.ReportMetric(m.GetCounter().GetValue()/float64(b.N), "appended-B/event")
					}
				}
			}
		})
	}
}
