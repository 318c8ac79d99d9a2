package readmodel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The ledger is partitioned by UTC month of recorded_at (migration 0006):
// one table per month, inventory_ledger_YYYY_MM. Months are created ahead
// and on demand (EnsureLedgerMonths), never caught by a DEFAULT partition,
// and dropped whole once older than the retention (MaintainLedger).

// ledgerPartitionPrefix starts every partition's name; the rest is its
// month as YYYY_MM.
const ledgerPartitionPrefix = Ledger + "_"

// chunksPartitionPrefix starts the name of every partition of the
// compacted months' chunks (migration 0008), made and dropped with the
// ledger's.
const chunksPartitionPrefix = "ledger_chunks_"

// DB is a pool, a connection or a transaction (a nested Begin is a
// savepoint).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Month is the start of t's UTC month.
func Month(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// partitionable: PostgreSQL holds every time a valid protobuf Timestamp
// does (years 1 to 9999); an event's time outside them is refused by COPY
// (22008) and dead-lettered, so no partition is made for it.
func partitionable(t time.Time) bool { return t.Year() >= 1 && t.Year() <= 9999 }

// EnsureLedgerMonths creates the ledger partitions of months (each a
// Month) that do not exist, and returns the months it created.
func EnsureLedgerMonths(ctx context.Context, db DB, months ...time.Time) ([]time.Time, error) {
	var created []time.Time
	for _, m := range months {
		if !partitionable(m) {
			continue
		}
		var made bool
		err := db.QueryRow(ctx, "SELECT inventory_ledger_add_month($1)", m).Scan(&made)
		if createRace(err) {
			// Another session created the month between the function's
			// check and its CREATE: the second call finds it.
			err = db.QueryRow(ctx, "SELECT inventory_ledger_add_month($1)", m).Scan(&made)
		}
		if err != nil {
			return created, fmt.Errorf("ledger partition %s: %w", m.Format("2006-01"), err)
		}
		if made {
			created = append(created, m)
		}
	}
	return created, nil
}

// createRace reports an error of CREATE TABLE IF NOT EXISTS racing another
// session's: the table (42P07) or its row type (23505 on pg_type) exists.
func createRace(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "23505")
}

// LedgerMonths are the months the ledger has a partition for, oldest first.
func LedgerMonths(ctx context.Context, db DB) ([]time.Time, error) {
	rows, err := db.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, Ledger)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	months := make([]time.Time, 0, len(names))
	for _, n := range names {
		m, err := time.Parse("2006_01", strings.TrimPrefix(n, ledgerPartitionPrefix))
		if err != nil {
			return nil, fmt.Errorf("ledger partition %q is not named %sYYYY_MM", n, ledgerPartitionPrefix)
		}
		months = append(months, m)
	}
	slices.SortFunc(months, time.Time.Compare)
	return months, nil
}

// LedgerMaintenance is what one MaintainLedger run did.
type LedgerMaintenance struct {
	// Created and Dropped are the months whose partitions it created and
	// dropped.
	Created, Dropped []time.Time
	// Compacted are the months whose rows it moved into chunks, and
	// CompactedRows how many rows each.
	Compacted     []time.Time
	CompactedRows []int64
	// RetainedFrom is how far back the ledger goes: the start of the month
	// after the newest month ever dropped; zero when none ever was.
	RetainedFrom time.Time
	// Oldest is the oldest month with a partition; zero when none has.
	Oldest time.Time
}

// LedgerPolicy is what MaintainLedger keeps the ledger to.
type LedgerPolicy struct {
	// Ahead is how many months after now's have a partition made ahead.
	Ahead int
	// Retention drops the months whose whole month is older than
	// now-Retention; 0 keeps every month.
	Retention time.Duration
	// CompactAfter compacts the months that ended before now-CompactAfter;
	// 0 compacts none.
	CompactAfter time.Duration
	// Progress, if set, is told of a compaction's progress.
	Progress func(month time.Time, moved int64)
}

// MaintainLedger creates the partitions of the month of now and of the
// months ahead after it; with a retention, drops the partitions whose
// whole month is older than now-retention, moving ledger_retention's
// retained_from past them in the same transaction; and compacts the rows
// of the months that ended before now-CompactAfter.
func MaintainLedger(ctx context.Context, db DB, now time.Time, policy LedgerPolicy) (LedgerMaintenance, error) {
	var res LedgerMaintenance
	want := make([]time.Time, 0, policy.Ahead+1)
	for i := range policy.Ahead + 1 {
		want = append(want, Month(now).AddDate(0, i, 0))
	}
	created, err := EnsureLedgerMonths(ctx, db, want...)
	res.Created = created
	if err != nil {
		return res, err
	}
	months, err := LedgerMonths(ctx, db)
	if err != nil {
		return res, err
	}
	if policy.Retention > 0 {
		cutoff := now.Add(-policy.Retention)
		var drop []time.Time
		for _, m := range months {
			if !m.AddDate(0, 1, 0).After(cutoff) {
				drop = append(drop, m)
			}
		}
		if len(drop) > 0 {
			if err := dropMonths(ctx, db, drop); err != nil {
				return res, err
			}
			res.Dropped, months = drop, months[len(drop):]
		}
	}
	if len(months) > 0 {
		res.Oldest = months[0]
	}
	res.RetainedFrom, err = RetainedFrom(ctx, db)
	if err != nil || policy.CompactAfter <= 0 {
		return res, err
	}
	for _, m := range months {
		if m.AddDate(0, 1, 0).After(now.Add(-policy.CompactAfter)) {
			break
		}
		rows, size, err := monthRows(ctx, db, m)
		if err != nil {
			return res, err
		}
		if !rows {
			// Compacted, but its vacuum failed or did not finish (a
			// restart, a lock it would not wait for): try again.
			if size > 0 {
				if err := vacuumMonth(ctx, db, m); err != nil {
					return res, err
				}
			}
			continue
		}
		var progress func(int64)
		if policy.Progress != nil {
			progress = func(moved int64) { policy.Progress(m, moved) }
		}
		n, err := CompactLedgerMonth(ctx, db, m, progress)
		res.Compacted, res.CompactedRows = append(res.Compacted, m), append(res.CompactedRows, n)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// dropMonths drops the partitions of months (oldest first) and records how
// far back the ledger now goes, in one transaction.
func dropMonths(ctx context.Context, db DB, months []time.Time) error {
	// Dropping a partition locks the whole ledger.
	tx, err := beginLocking(ctx, db)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	for _, m := range months {
		for _, prefix := range []string{ledgerPartitionPrefix, chunksPartitionPrefix} {
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{prefix + m.Format("2006_01")}.Sanitize()); err != nil {
				return fmt.Errorf("drop ledger partition %s: %w", m.Format("2006-01"), err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_retention (retained_from) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET retained_from = greatest(ledger_retention.retained_from, excluded.retained_from), updated_at = now()`,
		months[len(months)-1].AddDate(0, 1, 0)); err != nil {
		return fmt.Errorf("ledger_retention: %w", err)
	}
	return tx.Commit(ctx)
}

// beginLocking begins a transaction that takes an exclusive lock on the
// ledger or a partition: rather than queue every read and write behind a
// long query holding it, its lock waits give up after 5 s (the caller
// tries again at the next maintenance).
func beginLocking(ctx context.Context, db DB) (pgx.Tx, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		tx.Rollback(context.Background()) //nolint:errcheck
		return nil, err
	}
	return tx, nil
}

// RetainedFrom is how far back the ledger goes: history recorded before it
// was dropped (BigQuery holds it). Zero when nothing ever was.
func RetainedFrom(ctx context.Context, db DB) (time.Time, error) {
	var t time.Time
	err := db.QueryRow(ctx, "SELECT retained_from FROM ledger_retention").Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	return t, err
}

// Events is the ledger as readers see it (migration 0008): the rows of the
// months not compacted yet and the events of the chunks of those that
// were, with inventory_ledger's columns, and span_first_version,
// span_last_version, span_first_recorded, span_last_recorded,
// span_first_occurred and span_last_occurred bounding the events stored
// with each one. A query that bounds an event column should bound its
// span_ column the same way: PostgreSQL then skips the chunks outside
// without unpacking them.
const Events = "ledger_events"

// compactBatchRows is about how many rows one compaction statement moves:
// a transaction of seconds, not of a month.
const compactBatchRows = 50000

// CompactLedgerMonth moves the rows of month (a Month) into chunks, one per
// (sku_id, store_id), in transactions of about compactBatchRows rows in
// sku_id order, then vacuums the month's partition (so its space is
// returned at once). db must not be a transaction (VACUUM runs outside one). progress is called
// after each transaction with the rows moved so far. Rows written to the
// month later (a lagging partition's) are moved by the next call, into
// chunks of their own.
func CompactLedgerMonth(ctx context.Context, db DB, month time.Time, progress func(moved int64)) (int64, error) {
	from, until := month, month.AddDate(0, 1, 0)
	var moved int64
	lo := ""
	for {
		var hi *string
		err := db.QueryRow(ctx, `SELECT sku_id FROM `+Ledger+`
			WHERE recorded_at >= $1 AND recorded_at < $2 AND sku_id > $3 ORDER BY sku_id OFFSET $4 LIMIT 1`,
			from, until, lo, compactBatchRows).Scan(&hi)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return moved, fmt.Errorf("compact ledger %s: %w", month.Format("2006-01"), err)
		}
		var n int64
		if err := db.QueryRow(ctx, "SELECT ledger_compact($1, $2, $3, $4)", from, until, lo, hi).Scan(&n); err != nil {
			return moved, fmt.Errorf("compact ledger %s: %w", month.Format("2006-01"), err)
		}
		moved += n
		if progress != nil {
			progress(moved)
		}
		if hi == nil {
			break
		}
		lo = *hi
	}
	return moved, vacuumMonth(ctx, db, month)
}

// vacuumMonth vacuums month's ledger partition: the rows compaction
// deleted are removed and, the pages being empty, the file is cut short,
// so the space is returned now rather than marked free in a month no
// longer written. Not TRUNCATE: that would hold an exclusive lock on the
// partition (and so stall every ledger read, which touches every
// partition) and is not MVCC-safe (a repeatable-read reader such as tally
// check would see the month's rows gone before its chunks). VACUUM keeps
// what an open snapshot can still see, and takes its short truncation
// lock only when nobody waits for the table.
func vacuumMonth(ctx context.Context, db DB, month time.Time) error {
	if _, err := db.Exec(ctx, "VACUUM "+pgx.Identifier{ledgerPartitionPrefix + month.Format("2006_01")}.Sanitize()); err != nil {
		return fmt.Errorf("vacuum ledger partition %s: %w", month.Format("2006-01"), err)
	}
	return nil
}

// monthRows reports whether month's ledger partition holds a row, and its
// size on disk.
func monthRows(ctx context.Context, db DB, month time.Time) (rows bool, size int64, err error) {
	part := pgx.Identifier{ledgerPartitionPrefix + month.Format("2006_01")}.Sanitize()
	err = db.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+part+"), pg_relation_size($1::regclass)", part).Scan(&rows, &size)
	return rows, size, err
}
