package readmodel_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
)

// TestLedgerBytesPerEvent measures what the ledger costs PostgreSQL per
// event, table and indexes, for TALLY_LEDGER_SIZE_EVENTS events of the
// shape a store chain sends (80% sales, 15% receipts, 5% counts; Zipf
// SKUs over 50 stores; 20-character command ids), written as the projector
// writes them (COPY of readmodel.LedgerRow, 20,000 per batch, in the order
// they were recorded), into the partitioned ledger and, for comparison,
// into the single table of migration 0005. It only reports: run it with
//
//	TALLY_LEDGER_SIZE_EVENTS=500000 go test -count=1 -run TestLedgerBytesPerEvent -v ./internal/readmodel/
func TestLedgerBytesPerEvent(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TALLY_LEDGER_SIZE_EVENTS"))
	if n <= 0 {
		t.Skip("set TALLY_LEDGER_SIZE_EVENTS to measure")
	}
	events := ledgerRows(n)
	for _, c := range []struct {
		name     string
		migrated func(*pgxpool.Pool) error
	}{
		{"0005 single table", func(p *pgxpool.Pool) error {
			if err := pg.Migrate(t.Context(), p, migrationsBefore(t, "0006"), nil); err != nil {
				return err
			}
			_, err := p.Exec(t.Context(), "ALTER TABLE inventory_ledger ADD COLUMN actor text NOT NULL DEFAULT ''") // as 0007 does
			return err
		}},
		{"0006 partitioned", func(p *pgxpool.Pool) error { return readmodel.Migrate(t.Context(), p, nil) }},
	} {
		pool := env.NewDatabase(t)
		if err := c.migrated(pool); err != nil {
			t.Fatal(err)
		}
		if _, err := readmodel.EnsureLedgerMonths(t.Context(), pool, readmodel.Month(sizeStart), readmodel.Month(sizeStart).AddDate(0, 1, 0)); err != nil && c.name != "0005 single table" {
			t.Fatal(err)
		}
		start := time.Now()
		for i := 0; i < n; i += 20000 {
			batch := events[i:min(i+20000, n)]
			if _, err := pool.CopyFrom(t.Context(), pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(batch)); err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		if _, err := pool.Exec(t.Context(), "VACUUM ANALYZE"); err != nil {
			t.Fatal(err)
		}
		rows, err := pool.Query(t.Context(), `
			WITH parts AS (
				SELECT c.oid FROM pg_class c WHERE c.relname = 'inventory_ledger' AND c.relkind = 'r'
				UNION ALL
				SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'inventory_ledger'::regclass)
			SELECT 'heap (with TOAST, FSM, VM)', sum(pg_table_size(oid)) FROM parts
			UNION ALL
			SELECT 'index ' || regexp_replace(ic.relname, '^inventory_ledger(_\d{4}_\d{2})?_', ''), sum(pg_relation_size(x.indexrelid))
			FROM parts JOIN pg_index x ON x.indrelid = parts.oid JOIN pg_class ic ON ic.oid = x.indexrelid
			GROUP BY 1
			UNION ALL
			SELECT 'total', sum(pg_total_relation_size(oid)) FROM parts`)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d events, copied in %v (%.0f events/s)", c.name, n, took.Round(time.Millisecond), float64(n)/took.Seconds())
		var what string
		var bytes int64
		if _, err := pgx.ForEachRow(rows, []any{&what, &bytes}, func() error {
			t.Logf("  %-28s %12d bytes  %6.1f bytes/event", what, bytes, float64(bytes)/float64(n))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var avgRow float64
		if err := pool.QueryRow(t.Context(), "SELECT avg(pg_column_size(l.*)) FROM (SELECT * FROM inventory_ledger LIMIT 100000) l").Scan(&avgRow); err != nil {
			t.Fatal(err)
		}
		t.Logf("  average row (pg_column_size, no line pointer): %.1f bytes", avgRow)
	}
	// The same events once their months are compacted (migration 0008).
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(t.Context(), pool, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := readmodel.EnsureLedgerMonths(t.Context(), pool, readmodel.Month(sizeStart), readmodel.Month(sizeStart).AddDate(0, 1, 0)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 20000 {
		if _, err := pool.CopyFrom(t.Context(), pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(events[i:min(i+20000, n)])); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var moved int64
	for _, m := range []time.Time{readmodel.Month(sizeStart), readmodel.Month(sizeStart).AddDate(0, 1, 0)} {
		k, err := readmodel.CompactLedgerMonth(t.Context(), pool, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		moved += k
	}
	took := time.Since(start)
	if _, err := pool.Exec(t.Context(), "VACUUM ANALYZE"); err != nil {
		t.Fatal(err)
	}
	var rowsLeft, chunks, chunkBytes, rowBytes, toastBytes int64
	if err := pool.QueryRow(t.Context(), `
		SELECT (SELECT count(*) FROM inventory_ledger), (SELECT count(*) FROM ledger_chunks),
		       (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'ledger_chunks'::regclass),
		       (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'inventory_ledger'::regclass),
		       (SELECT sum(pg_total_relation_size(c.reltoastrelid)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		         WHERE i.inhparent = 'ledger_chunks'::regclass AND c.reltoastrelid <> 0)`).Scan(&rowsLeft, &chunks, &chunkBytes, &rowBytes, &toastBytes); err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted: %d rows moved into %d chunks (%.1f events per chunk) in %v (%.0f rows/s); %d rows left",
		moved, chunks, float64(moved)/float64(chunks), took.Round(time.Millisecond), float64(moved)/took.Seconds(), rowsLeft)
	t.Logf("  chunks (heap, TOAST, key)  %12d bytes  %6.1f bytes/event (TOAST %.1f)", chunkBytes, float64(chunkBytes)/float64(n), float64(toastBytes)/float64(n))
	t.Logf("  total with the row months  %12d bytes  %6.1f bytes/event", chunkBytes+rowBytes, float64(chunkBytes+rowBytes)/float64(n))

	// What storing zeros and empty strings as NULL would save (not done:
	// ScanEvent would map them back), on the last database's rows.
	pool = env.NewDatabase(t)
	if err := readmodel.Migrate(t.Context(), pool, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := readmodel.EnsureLedgerMonths(t.Context(), pool, readmodel.Month(sizeStart), readmodel.Month(sizeStart).AddDate(0, 1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.CopyFrom(t.Context(), pgx.Identifier{readmodel.Ledger}, readmodel.LedgerColumns(), pgx.CopyFromRows(events)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `CREATE TABLE sparse AS SELECT sku_version, quantity_delta, on_hand_after,
		NULLIF(reserved_after, 0) reserved_after, NULLIF(reserved_delta, 0) reserved_delta, NULLIF(reorder_point, 0) reorder_point,
		NULLIF(target_level, 0) target_level, NULLIF(variance_threshold, 0) variance_threshold, log_offset, occurred_at, recorded_at,
		reservation_expires_at, event_id, log_partition, event_type, NULLIF(adjustment_reason, 0) adjustment_reason, allow_negative,
		variance_flagged, sku_id, store_id, command_id, user_id, NULLIF(reason, '') reason, NULLIF(counterpart_store_id, '') counterpart_store_id,
		NULLIF(reservation_id, '') reservation_id, metadata FROM inventory_ledger ORDER BY recorded_at`); err != nil {
		t.Fatal(err)
	}
	var sparse float64
	if err := pool.QueryRow(t.Context(), "SELECT pg_table_size('sparse')::float8 / $1", n).Scan(&sparse); err != nil {
		t.Fatal(err)
	}
	t.Logf("zeros and empty strings as NULL: heap %.1f bytes/event", sparse)
}

var sizeStart = time.Date(2026, 10, 20, 0, 0, 0, 0, time.UTC)

// ledgerRows are n events' ledger rows, in recorded order over a month.
func ledgerRows(n int) [][]any {
	r := rand.New(rand.NewPCG(1, 2))
	skus := 10000
	if n, _ := strconv.Atoi(os.Getenv("TALLY_LEDGER_SIZE_SKUS")); n > 0 {
		skus = n
	}
	zipf := rand.NewZipf(r, 1.1, 1, uint64(skus-1))
	versions := map[int]int64{}
	onHand := map[string]int64{}
	out := make([][]any, n)
	step := 30 * 24 * time.Hour / time.Duration(n)
	for i := range n {
		sku, store := int(zipf.Uint64()), r.IntN(50)
		versions[sku]++
		key := fmt.Sprint(sku, "/", store)
		at := sizeStart.Add(time.Duration(i) * step)
		e := &inventoryv1.InventoryEvent{
			SkuId: fmt.Sprintf("SKU-%06d", sku), StoreId: fmt.Sprintf("ST-%03d", store), SkuVersion: versions[sku],
			CommandId: fmt.Sprintf("pos-%016x", r.Uint64()), UserId: fmt.Sprintf("clerk-%04d", r.IntN(2000)),
			OccurredAt: timestamppb.New(at.Add(-time.Duration(r.IntN(2000)) * time.Millisecond)), RecordedAt: timestamppb.New(at),
		}
		switch p := r.IntN(100); {
		case p < 80:
			e.EventType, e.QuantityDelta = inventoryv1.EventType_EVENT_TYPE_SALE, -int64(1+r.IntN(3))
			e.AllowNegative = onHand[key]+e.QuantityDelta < 0
		case p < 95:
			e.EventType, e.QuantityDelta = inventoryv1.EventType_EVENT_TYPE_RECEIPT, int64(10+r.IntN(41))
		default:
			e.EventType, e.QuantityDelta, e.VarianceThreshold = inventoryv1.EventType_EVENT_TYPE_STOCK_COUNTED, int64(r.IntN(5)-2), 5
			e.Reason = "cycle count"
		}
		onHand[key] += e.QuantityDelta
		e.OnHandAfter = onHand[key]
		id := uuid.Must(uuid.NewV7())
		e.EventId = id.String()
		out[i] = readmodel.LedgerRow(e, id, int32(sku%6), int64(i/6))
	}
	return out
}
