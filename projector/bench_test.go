package projector_test

import (
	"context"
	"fmt"
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
			b.ReportMetric(labelledCounter(b, reg, "tally_bigquery_appended_bytes_total", projector.EventsTable)/float64(b.N), "appended-B/event")
		})
	}
}

// BenchmarkBigQueryFreshness measures how far BigQuery trails the log at a
// steady 1,000 events/s over 100 and 1,000 SKUs × 3 stores with 5-second
// flushes:
// events are produced every 100 ms for b.N seconds, and each event's
// visibility (recorded_at to its stream committed,
// tally_bigquery_visibility_seconds) is read from the projector's
// histogram. A flush refreshes current_inventory before it records and
// commits its streams, so an event's visibility bounds how stale
// current_inventory was for it. Reported: the upper bounds of the
// histogram buckets holding the 99th percentile and the slowest event
// (target: --bigquery-merge-interval + 5 s). Nothing reads the emulator
// meanwhile (its SQLite locks up under a concurrent reader). The emulator
// runs a MERGE as a nested loop and commits rows one by one, so more
// levels or longer flushes fall behind there, not on BigQuery.
func BenchmarkBigQueryFreshness(b *testing.B) {
	for _, skus := range []int{100, 1000} {
		b.Run(fmt.Sprintf("skus=%d", skus), func(b *testing.B) { benchmarkFreshness(b, skus) })
	}
}

// benchmarkFreshness is BenchmarkBigQueryFreshness over skus SKUs × 3
// stores.
func benchmarkFreshness(b *testing.B, skus int) {
	const interval = 5 * time.Second
	f := newBQFixture(b, 6)
	cfg := f.config()
	cfg.BatchRows, cfg.MaxBatchRows, cfg.BatchWait, cfg.MergeInterval = 500, 50000, time.Second, interval
	reg := prometheus.NewRegistry()
	cfg.Metrics = projector.NewBigQueryMetrics(reg)
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
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < time.Duration(b.N)*time.Second {
		<-tick.C
		f.produce(100, skus, r)
	}
	rate := float64(f.events) / time.Since(start).Seconds()
	time.Sleep(interval + 3*time.Second) // the last periodic flush
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "tally_bigquery_flush_step_seconds" {
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				if h.GetSampleCount() > 0 {
					b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), m.GetLabel()[0].GetValue()+"-s/flush")
				}
			}
		}
		if mf.GetName() != "tally_bigquery_visibility_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		n := h.GetSampleCount()
		p99, most := -1.0, -1.0
		for _, bk := range h.GetBucket() {
			if p99 < 0 && float64(bk.GetCumulativeCount()) >= 0.99*float64(n) {
				p99 = bk.GetUpperBound()
			}
			if most < 0 && bk.GetCumulativeCount() == n {
				most = bk.GetUpperBound()
			}
		}
		b.ReportMetric(p99, "p99-visible-≤s")
		b.ReportMetric(most, "max-visible-≤s")
		b.ReportMetric(float64(n), "events-timed")
	}
	b.ReportMetric(rate, "events/s")
}
