package soak_test

import (
	"testing"
	"time"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/cmd/tally/soak"
)

// TestSoakOfASmallLog runs the whole soak on a log of 20,000 events over
// 60 days: the log must pass tally check with the read model equal to its
// fold, and a restart from snapshots must fold less than a start without.
func TestSoakOfASmallLog(t *testing.T) {
	const events = 20_000
	rep, err := soak.Run(t.Context(), bench.SoakConfig{
		Events: events, QueryAt: 5_000, HistorySpan: 60 * 24 * time.Hour,
		SKUs: 2_000, Stores: 10, Zipf: 1.1, Mix: bench.Mix{Sale: 70, Return: 10, Receipt: 15, Transfer: 5}, Seed: 1,
		Partitions: 3, Queries: 50, DataDir: t.TempDir(), Check: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events < events || rep.Events > events+1 {
		t.Errorf("%d events, want %d (one more when a transfer ends the log)", rep.Events, events)
	}
	if rep.CheckProblems == nil || *rep.CheckProblems != 0 {
		t.Errorf("tally check: %s", rep.CheckSummary)
	}
	// The third measurement is after compaction of the months that ended
	// (the 60 days span at least one), which tally check (above) counted
	// too.
	if len(rep.At) != 3 || rep.At[0].LedgerRows < 5_000 || rep.At[1].LedgerRows != rep.Events || rep.At[2].LedgerRows != rep.Events {
		t.Fatalf("read side measured at %+v, want at 5,000 and %d ledger events, twice", rep.At, rep.Events)
	}
	if len(rep.CompactMonths) == 0 || rep.CompactRows <= 0 || rep.At[2].Compacted != rep.CompactRows || rep.CompactBytesPerEvent <= 0 {
		t.Errorf("compaction: months %v, %d rows (%d read as compacted), %.1f bytes/event", rep.CompactMonths, rep.CompactRows, rep.At[2].Compacted, rep.CompactBytesPerEvent)
	}
	for _, at := range rep.At {
		if at.BytesPerEvent <= 0 || at.StockLevels <= 0 || at.GetStock.Count != 50 || at.GetStockHistory.Count != 50 {
			t.Errorf("read side at %d rows: %+v", at.LedgerRows, at)
		}
	}
	if rep.Produce <= 0 || rep.Projector <= 0 || rep.RSSPeak <= 0 {
		t.Errorf("rates and memory not measured: %+v", rep)
	}
	if len(rep.Restarts) != 4 {
		t.Fatalf("restarts %+v", rep.Restarts)
	}
	full, again, crash := rep.Restarts[0], rep.Restarts[2], rep.Restarts[3]
	if full.FromSnapshot != 0 || full.EventsFolded < rep.Events {
		t.Errorf("start without snapshots: %+v, want the whole log (%d events) folded", full, rep.Events)
	}
	if again.FromSnapshot != rep.Partitions || again.EventsFolded >= full.EventsFolded {
		t.Errorf("restart from snapshots: %+v, want every partition from its snapshot and fewer events folded than %d", again, full.EventsFolded)
	}
	// 2,000 events were appended after the snapshots.
	if crash.FromSnapshot != rep.Partitions || crash.EventsFolded < 2_000 || crash.EventsFolded >= full.EventsFolded {
		t.Errorf("restart from snapshots with events after them: %+v, want every partition from its snapshot and 2,000 events folded", crash)
	}
	if rep.DropMonth == "" || rep.DropRows <= 0 {
		t.Errorf("no ledger month dropped: %+v", rep)
	}
}
