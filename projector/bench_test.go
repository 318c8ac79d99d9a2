package projector_test

import (
	"math/rand/v2"
	"testing"
	"time"
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
