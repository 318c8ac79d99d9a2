package serve_test

import (
	"context"
	"testing"
	"time"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/cmd/tally/serve"
)

// TestBenchEmbeddedPassesItsAudit runs a small `tally bench --embedded`
// (its own tally serve, open-loop load, audit of log and read model) and
// the replay it includes. The figures are not asserted: benchmarks are
// measured with the tool, never timed in tests.
func TestBenchEmbeddedPassesItsAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second tally serve")
	}
	err := bench.Run(t.Context(), []string{
		"--embedded", "--rate", "500", "--duration", "2s", "--warmup", "500ms", "--skus", "2000", "--stores", "5",
		"--seed-skus", "100", "--batch", "10", "--replay", "--json",
	}, bench.Deps{
		StartEmbedded: serve.StartEmbedded,
		Replay: func(ctx context.Context, brokers []string, dsn string) (int64, time.Duration, error) {
			return serve.Replay(ctx, brokers, dsn, "", t.Output())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}
