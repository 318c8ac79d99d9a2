package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/cmd/tally/serve"
)

// TestBenchEmbeddedPassesItsAudit runs a small `tally bench --embedded`
// (its own tally serve, open-loop load with reads mixed in, audit of log
// and read model) and the replay it includes. The figures are not
// asserted, only that every read RPC of the mix was called and answered:
// benchmarks are measured with the tool, never timed in tests.
func TestBenchEmbeddedPassesItsAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second tally serve")
	}
	var out bytes.Buffer
	err := bench.Run(t.Context(), []string{
		"--embedded", "--rate", "500", "--duration", "2s", "--warmup", "500ms", "--skus", "2000", "--stores", "5",
		"--seed-skus", "100", "--batch", "10", "--replay", "--json", "--reads", "0.5",
	}, bench.Deps{
		StartEmbedded: serve.StartEmbedded,
		Replay: func(ctx context.Context, brokers []string, dsn string) (int64, time.Duration, error) {
			return serve.Replay(ctx, brokers, dsn, "", t.Output())
		},
		Out: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Runs []struct {
			Accepted int64 `json:"accepted"`
			Reads    map[string]struct {
				Calls, Errors int64
				ErrorCodes    map[string]int64      `json:"error_codes"`
				Latency       struct{ Count int64 } `json:"latency_ms"`
			} `json:"reads"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Runs) != 1 {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	r := rep.Runs[0]
	for _, rpc := range []string{"GetStock", "BatchGetStock", "ListStock", "GetStockHistory"} {
		// On a loaded box a few calls may wait out a stall (overload, or
		// DEADLINE_EXCEEDED); most must be answered, and only those timed.
		if s := r.Reads[rpc]; s.Calls == 0 || s.Errors*10 > s.Calls || s.Latency.Count != s.Calls-s.Errors {
			t.Errorf("%s: %+v, want calls, nine in ten at least answered, those timed", rpc, s)
		}
	}
	if r.Accepted == 0 {
		t.Error("no command accepted beside the reads")
	}
}
