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
		"--seed-skus", "100", "--batch", "10", "--replay", "--json", "--reads", "0.5", "--concurrency", "2048",
	}, bench.Deps{
		StartEmbedded: serve.StartEmbedded,
		Replay: func(ctx context.Context, brokers []string, dsn string, parallel int) (int64, time.Duration, error) {
			return serve.Replay(ctx, brokers, dsn, "", parallel, t.Output())
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
		// On a loaded box (CI runs packages side by side) a stall can fill
		// every slot, and the calls that find none are counted as overload,
		// as a benchmark must; any other error is a failed read.
		s := r.Reads[rpc]
		if s.Calls == s.Errors || s.Latency.Count != s.Calls-s.Errors || s.Errors != s.ErrorCodes["overload"] {
			t.Errorf("%s: %+v, want answered calls, those timed, no error but overload", rpc, s)
		}
	}
	if r.Accepted == 0 {
		t.Error("no command accepted beside the reads")
	}
}
