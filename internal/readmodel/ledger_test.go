package readmodel_test

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
)

// migrationsBefore are the read model's migrations numbered below n.
func migrationsBefore(tb testing.TB, n string) fs.FS {
	tb.Helper()
	names, err := fs.Glob(readmodel.Migrations(), "*.sql")
	if err != nil {
		tb.Fatal(err)
	}
	out := fstest.MapFS{}
	for _, name := range names {
		if name >= n {
			continue
		}
		b, err := fs.ReadFile(readmodel.Migrations(), name)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = &fstest.MapFile{Data: b}
	}
	return out
}

func exec(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	tb.Helper()
	if _, err := pool.Exec(tb.Context(), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// ledgerDigest is every ledger row, by name, in key order: equal digests
// mean the same rows with the same values, whatever the column order.
const ledgerDigest = `SELECT count(*), md5(string_agg(
	concat_ws('|', sku_id, store_id, sku_version, event_id, event_type, quantity_delta, on_hand_after, reserved_after,
	          occurred_at, recorded_at, command_id, user_id, reason, metadata, allow_negative, adjustment_reason,
	          counterpart_store_id, log_partition, log_offset, reserved_delta, reservation_id, reservation_expires_at,
	          reorder_point, target_level, variance_threshold, variance_flagged),
	',' ORDER BY sku_id, sku_version)) FROM inventory_ledger`

// TestPartitioningMigrationKeepsEveryRow: a read model at migration 0005,
// its single ledger table holding events over fourteen months, comes out
// of 0006 partitioned by month with the same rows, the count variances
// view answering as before, and new events of any month storable.
func TestPartitioningMigrationKeepsEveryRow(t *testing.T) {
	ctx := t.Context()
	pool := env.NewDatabase(t)
	if err := pg.Migrate(ctx, pool, migrationsBefore(t, "0006"), nil); err != nil {
		t.Fatal(err)
	}
	first := time.Date(2025, 9, 15, 12, 0, 0, 0, time.UTC)
	exec(t, pool, `INSERT INTO inventory_ledger (sku_id, sku_version, event_id, event_type, store_id, quantity_delta,
		on_hand_after, reserved_after, occurred_at, recorded_at, command_id, user_id, reason, metadata,
		log_partition, log_offset, reservation_expires_at, variance_flagged, variance_threshold)
		SELECT 'sku-' || (v % 7), v, gen_random_uuid(), CASE WHEN v % 10 = 0 THEN 11 ELSE 2 END, 'store-' || (v % 3), -1,
		       1000 - v, 0, $1::timestamptz + v * interval '1 hour', $1::timestamptz + v * interval '1 hour' + interval '1 second',
		       'cmd-' || v, 'u', CASE WHEN v % 10 = 0 THEN 'count' ELSE '' END,
		       CASE WHEN v % 5 = 0 THEN '{"lane":"3"}'::jsonb END, v % 6, v,
		       CASE WHEN v % 9 = 0 THEN $1::timestamptz END, v % 20 = 0, 5
		FROM generate_series(1, 10000) v`, first)
	var before, after struct {
		n      int64
		digest string
	}
	if err := pool.QueryRow(ctx, ledgerDigest).Scan(&before.n, &before.digest); err != nil {
		t.Fatal(err)
	}
	var variances int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM stock_count_variances WHERE variance_flagged").Scan(&variances); err != nil {
		t.Fatal(err)
	}

	if err := readmodel.Migrate(ctx, pool, testenv.Logger()); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, ledgerDigest).Scan(&after.n, &after.digest); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("ledger after migration: %d rows, digest %s; before: %d rows, %s", after.n, after.digest, before.n, before.digest)
	}
	var partitioned bool
	if err := pool.QueryRow(ctx, "SELECT relkind = 'p' FROM pg_class WHERE relname = 'inventory_ledger'").Scan(&partitioned); err != nil || !partitioned {
		t.Fatalf("inventory_ledger partitioned: %v, %v", partitioned, err)
	}
	months, err := readmodel.LedgerMonths(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	last := first.Add(10000 * time.Hour)
	if months[0] != readmodel.Month(first) || months[len(months)-1].Before(readmodel.Month(time.Now()).AddDate(0, 2, 0)) ||
		months[len(months)-1].Before(readmodel.Month(last)) {
		t.Errorf("partitions from %s to %s; want from %s to at least two months from now", months[0], months[len(months)-1], readmodel.Month(first))
	}
	// Each month's rows are in its own partition.
	var misplaced int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inventory_ledger
		WHERE tableoid::regclass::text <> 'inventory_ledger_' || to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY_MM')`).Scan(&misplaced); err != nil {
		t.Fatal(err)
	}
	if misplaced != 0 {
		t.Errorf("%d rows outside their month's partition", misplaced)
	}
	var variancesAfter int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM stock_count_variances WHERE variance_flagged").Scan(&variancesAfter); err != nil {
		t.Fatal(err)
	}
	if variancesAfter != variances || variances == 0 {
		t.Errorf("stock_count_variances: %d flagged after, %d before", variancesAfter, variances)
	}
	// The idempotence key holds: the same event again is a conflict.
	_, err = pool.Exec(ctx, `INSERT INTO inventory_ledger SELECT * FROM inventory_ledger WHERE sku_id = 'sku-1' AND sku_version = 1`)
	if err == nil || !strings.Contains(err.Error(), "23505") {
		t.Errorf("inserting a stored event again: %v, want a unique violation", err)
	}
}

// TestRetentionDropsWholeMonthsOlderThanIt: maintenance at a given now
// keeps the months ahead, drops every month that ended before
// now-retention, and records how far back the ledger goes; a retention of
// 0 drops nothing.
func TestRetentionDropsWholeMonthsOlderThanIt(t *testing.T) {
	ctx := t.Context()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	jan := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var months []time.Time
	for i := range 6 {
		months = append(months, jan.AddDate(0, i, 0))
	}
	if _, err := readmodel.EnsureLedgerMonths(ctx, pool, months...); err != nil {
		t.Fatal(err)
	}
	for _, m := range months {
		exec(t, pool, `INSERT INTO inventory_ledger (sku_id, store_id, sku_version, event_id, event_type, quantity_delta, on_hand_after,
			reserved_after, occurred_at, recorded_at, command_id, log_partition, log_offset)
			VALUES ('s', 'x', $1, gen_random_uuid(), 2, -1, 0, 0, $2, $2, 'c', 0, $1)`, m.Unix(), m.Add(time.Hour))
	}
	now := time.Date(2030, 6, 10, 0, 0, 0, 0, time.UTC)

	res, err := readmodel.MaintainLedger(ctx, pool, now, readmodel.LedgerPolicy{Ahead: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []time.Time{jan.AddDate(0, 6, 0), jan.AddDate(0, 7, 0)}; !slices.Equal(res.Created, want) || len(res.Dropped) != 0 || !res.RetainedFrom.IsZero() {
		t.Errorf("keep forever: %+v, want created %v, nothing dropped", res, want)
	}

	// January to May ended more than a day before June 10: compacted.
	res, err = readmodel.MaintainLedger(ctx, pool, now, readmodel.LedgerPolicy{Ahead: 2, CompactAfter: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if compacted := slices.DeleteFunc(slices.Clone(res.Compacted), func(m time.Time) bool { return m.Before(jan) }); !slices.Equal(compacted, months[:5]) {
		t.Errorf("compacted %v, want January to May", compacted)
	}

	// 100 days before June 10 is March 2: January and February ended
	// before it, March did not.
	res, err = readmodel.MaintainLedger(ctx, pool, now, readmodel.LedgerPolicy{Ahead: 2, Retention: 100 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// (The months the migration made, around today, are older still.)
	march := jan.AddDate(0, 2, 0)
	dropped := slices.DeleteFunc(slices.Clone(res.Dropped), func(m time.Time) bool { return m.Before(jan) })
	if want := []time.Time{jan, jan.AddDate(0, 1, 0)}; !slices.Equal(dropped, want) || len(res.Created) != 0 ||
		!res.RetainedFrom.Equal(march) || !res.Oldest.Equal(march) {
		t.Errorf("retention 100 days: %+v, want dropped %v, retained from %s", res, want, march)
	}
	var oldest time.Time
	var chunksLeft bool
	if err := pool.QueryRow(ctx, `SELECT min(recorded_at), to_regclass('ledger_chunks_2030_02') IS NOT NULL FROM ledger_events`).Scan(&oldest, &chunksLeft); err != nil {
		t.Fatal(err)
	}
	if chunksLeft {
		t.Errorf("February's chunks were not dropped with its ledger partition")
	}
	if !oldest.Equal(march.Add(time.Hour)) {
		t.Errorf("oldest row left: %s, want %s", oldest, march.Add(time.Hour))
	}
	if got, err := readmodel.RetainedFrom(ctx, pool); err != nil || !got.Equal(march) {
		t.Errorf("RetainedFrom = %s, %v; want %s", got, err, march)
	}
}

// An event of a month without a partition is stored once the month is
// ensured: what the projector does before each batch.
func TestEnsureLedgerMonthsMakesAnyMonthStorable(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	at := time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)
	insert := `INSERT INTO inventory_ledger (sku_id, store_id, sku_version, event_id, event_type, quantity_delta, on_hand_after,
		reserved_after, occurred_at, recorded_at, command_id, log_partition, log_offset)
		VALUES ('s', 'x', 1, gen_random_uuid(), 2, -1, 0, 0, $1, $1, 'c', 0, 0)`
	if _, err := pool.Exec(ctx, insert, at); err == nil {
		t.Fatal("an event of a month without a partition was stored: is there a DEFAULT partition?")
	}
	created, err := readmodel.EnsureLedgerMonths(ctx, pool, readmodel.Month(at), readmodel.Month(at))
	if err != nil || len(created) != 1 {
		t.Fatalf("EnsureLedgerMonths: created %v, %v; want one month", created, err)
	}
	exec(t, pool, insert, at)
}

// Sessions that ensure the same months at once (two projectors, or a
// rebuild's parallel loads) all succeed, and each month is created once.
func TestEnsureLedgerMonthsRacesOtherSessions(t *testing.T) {
	ctx := context.Background()
	pool := env.NewDatabase(t)
	if err := readmodel.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		m := readmodel.Month(time.Date(1990+round, 3, 1, 0, 0, 0, 0, time.UTC))
		const sessions = 6
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			errs    []error
		)
		for range sessions {
			wg.Go(func() {
				c, err := readmodel.EnsureLedgerMonths(ctx, pool, m)
				mu.Lock()
				defer mu.Unlock()
				created += len(c)
				if err != nil {
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 || created != 1 {
			t.Fatalf("%d sessions ensuring %s: %d created, errors %v; want one created, no error", sessions, m.Format("2006-01"), created, errs)
		}
	}
}
