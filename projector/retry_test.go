package projector_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Dead letters are retried once their cause is gone: an event the read
// model lacks with its dead letter (left as a projector with a since-fixed
// bug would have left it: the row taken out of the ledger, the level put
// back, the dead letter recorded) is stored again (the ledger row, and its
// store's level, which it was the newest event of), its dead letter is
// gone, and a second retry stores nothing twice; an event PostgreSQL still
// refuses (a NUL in its reason: 22021) stays dead-lettered.
func TestRetryDeadLettersStoresWhatIsNowStorable(t *testing.T) {
	f := newFixture(t, 1)
	nul := func(e *inventoryv1.InventoryEvent) { e.Reason = "a\x00b" }
	recs := []*kgo.Record{
		f.event("fix-1", "S0", receipt, 20, time.Now(), nil, false),
		f.event("fix-1", "S0", sale, -3, time.Now(), nil, true),
		f.event("nul-1", "S0", receipt, 5, time.Now(), nil, false),
		f.event("nul-1", "S0", sale, -1, time.Now(), nul, true),
	}
	f.produceRaw(recs)
	p := f.projector("pg", nil, 0)
	f.runUntil(p, func() bool { return f.caughtUp("pg") && f.count("SELECT count(*) FROM projection_dead_letters") == 1 })
	f.exec("DELETE FROM inventory_ledger WHERE sku_id = 'fix-1' AND sku_version = 2")
	f.exec("UPDATE stock_levels SET on_hand = 20, sku_version = 1 WHERE sku_id = 'fix-1'")
	f.exec(fmt.Sprintf("INSERT INTO projection_dead_letters (consumer, log_partition, log_offset, sku_id, sku_version, error) VALUES ('pg', %d, %d, 'fix-1', 2, 'a bug since fixed')",
		recs[1].Partition, recs[1].Offset))
	f.assertFoldOfLog()

	res, err := p.RetryDeadLetters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[0].Stored || res[0].SKU != "fix-1" || res[0].Version != 2 || res[1].Stored || res[1].Err == nil || !strings.Contains(res[1].Err.Error(), "22021") {
		t.Fatalf("retried %+v, want fix-1 v2 stored and nul-1 v2 still refused (22021)", res)
	}
	if n := f.count("SELECT count(*) FROM inventory_ledger WHERE sku_id = 'fix-1' AND sku_version = 2"); n != 1 {
		t.Fatalf("fix-1 v2 in the ledger %d times, want 1", n)
	}
	if n := f.count("SELECT count(*) FROM stock_levels WHERE sku_id = 'fix-1' AND store_id = 'S0' AND on_hand = 17 AND sku_version = 2"); n != 1 {
		t.Fatal("fix-1's level does not hold its sale (on_hand 17 at version 2)")
	}
	if n := f.count("SELECT count(*) FROM projection_dead_letters WHERE sku_id = 'nul-1'"); n != 1 || f.count("SELECT count(*) FROM projection_dead_letters") != 1 {
		t.Fatal("the dead letters left are not exactly nul-1's")
	}
	again, err := p.RetryDeadLetters(t.Context())
	if err != nil || len(again) != 1 || again[0].Stored {
		t.Fatalf("second retry: %+v, %v; want nul-1 alone, still refused", again, err)
	}
	if n := f.count("SELECT count(*) FROM inventory_ledger WHERE sku_id = 'fix-1'"); n != 2 {
		t.Fatalf("fix-1 has %d ledger rows, want 2", n)
	}
}

func (f *fixture) exec(sql string) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.t.Context(), sql); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *fixture) count(sql string) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.t.Context(), sql).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}
