package projector_test

import (
	"math/rand/v2"
	"testing"
	"time"

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

// BenchmarkProjectBigQuery measures events/s merged into the BigQuery
// emulator (a SQLite-backed Go process, not BigQuery): the log is produced
// first, then the clock runs while the projector catches up. One op is one
// event, over 1,000 SKUs × 3 stores. "500" closes every batch at 500
// events (the steady-state size); "catch-up" lets a lagging projection
// take up to 50,000 per batch.
func BenchmarkProjectBigQuery(b *testing.B) {
	for _, c := range []struct {
		name      string
		batch     int
		maxBatch  int
		batchWait time.Duration
	}{{"500", 500, 500, time.Second}, {"catch-up", 500, 50000, time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			f := newBQFixture(b, 6)
			r := rand.New(rand.NewPCG(19, 20))
			for left := b.N; left > 0; left -= 5000 {
				f.produce(min(left, 5000), 1000, r)
			}
			cfg := f.config()
			cfg.BatchRows, cfg.MaxBatchRows, cfg.BatchWait = c.batch, c.maxBatch, c.batchWait
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
		})
	}
}
