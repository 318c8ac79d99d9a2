package projector_test

import (
	"context"
	"math/rand/v2"
	"slices"
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

// BenchmarkBigQueryFreshness measures how far current_inventory trails the
// log at a steady 1,000 events/s: for a minute, events are produced every
// 100 ms while the projector flushes every 10 s, and every 500 ms the
// newest updated_at in current_inventory is compared with the clock.
// Reported: the largest and the 99th percentile staleness, against the
// target of --bigquery-merge-interval + 5 s. One op is one second of load.
func BenchmarkBigQueryFreshness(b *testing.B) {
	const interval = 10 * time.Second
	f := newBQFixture(b, 6)
	cfg := f.config()
	cfg.BatchRows, cfg.MaxBatchRows, cfg.BatchWait, cfg.MergeInterval = 500, 50000, time.Second, interval
	p, err := projector.NewBigQuery(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	r := rand.New(rand.NewPCG(21, 22))
	b.ResetTimer()
	start := time.Now()
	var stale []time.Duration
	tick, sample := time.NewTicker(100*time.Millisecond), time.NewTicker(500*time.Millisecond)
	defer tick.Stop()
	defer sample.Stop()
	for time.Since(start) < time.Duration(b.N)*time.Second {
		select {
		case <-tick.C:
			f.produce(100, 10000, r)
		case <-sample.C:
			if time.Since(start) < interval+5*time.Second {
				continue // the first flush is not due yet
			}
			rows := f.query("SELECT MAX(updated_at) AS t FROM `{{dataset}}.current_inventory`")
			if t, ok := rows[0]["t"].(time.Time); ok {
				stale = append(stale, time.Since(t))
			}
		}
	}
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if len(stale) == 0 {
		b.Fatal("no sample of current_inventory")
	}
	slices.Sort(stale)
	b.ReportMetric(stale[len(stale)-1].Seconds(), "max-stale-s")
	b.ReportMetric(stale[len(stale)*99/100].Seconds(), "p99-stale-s")
	b.ReportMetric(float64(f.events)/time.Since(start).Seconds(), "events/s")
}
