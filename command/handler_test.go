package command_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// One failed Apply batch logs one line, however many of its commands fail,
// and every command still gets its own outcome.
func TestFailedApplyBatchLogsOneLine(t *testing.T) {
	c := faultCluster(t)
	svc := faultService(t, c, command.WriterConfig{})
	var logs bytes.Buffer
	h := command.NewHandler(svc, slog.New(slog.NewJSONHandler(&logs, nil)))

	cmds := make([]*inventoryv1.Command, command.MaxBatchCommands)
	for i := range cmds {
		cmds[i] = &inventoryv1.Command{Kind: &inventoryv1.Command_Receipt{Receipt: &inventoryv1.ReceiveStockRequest{
			CommandId: fmt.Sprintf("r%d", i), SkuId: uniq("batch"), StoreId: "S1", Quantity: 1,
		}}}
	}
	failNextCommit(c)
	resp, err := h.Apply(t.Context(), connect.NewRequest(&inventoryv1.ApplyRequest{Commands: cmds}))
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range resp.Msg.GetOutcomes() {
		if o.GetError().GetCode() != connect.CodeUnavailable.String() {
			t.Fatalf("outcome %d: %v, want unavailable", i, o)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines for one failed batch, want 1; the first: %s", len(lines), lines[0])
	}
	t.Logf("the batch's log line: %s", lines[0])
	var line struct {
		Level    string
		Commands int
		Failed   map[string]int
		Error    string
	}
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line.Level != "WARN" || line.Commands != len(cmds) || line.Failed["unavailable"] != len(cmds) || line.Error == "" {
		t.Fatalf("batch log line %s: want a warning counting %d unavailable commands, with the first error", lines[0], len(cmds))
	}
}
