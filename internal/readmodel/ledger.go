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
		if err := db.QueryRow(ctx, "SELECT inventory_ledger_add_month($1)", m).Scan(&made); err != nil {
			return created, fmt.Errorf("ledger partition %s: %w", m.Format("2006-01"), err)
		}
		if made {
			created = append(created, m)
		}
	}
	return created, nil
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
	// RetainedFrom is how far back the ledger goes: the start of the month
	// after the newest month ever dropped; zero when none ever was.
	RetainedFrom time.Time
	// Oldest is the oldest month with a partition; zero when none has.
	Oldest time.Time
}

// MaintainLedger creates the partitions of the month of now and of the
// ahead months after it, and, with a retention, drops the partitions whose
// whole month is older than now-retention (0 keeps every month), moving
// ledger_retention's retained_from past them in the same transaction.
func MaintainLedger(ctx context.Context, db DB, now time.Time, ahead int, retention time.Duration) (LedgerMaintenance, error) {
	var res LedgerMaintenance
	want := make([]time.Time, 0, ahead+1)
	for i := range ahead + 1 {
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
	if retention > 0 {
		cutoff := now.Add(-retention)
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
	return res, err
}

// dropMonths drops the partitions of months (oldest first) and records how
// far back the ledger now goes, in one transaction.
func dropMonths(ctx context.Context, db DB, months []time.Time) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	// Dropping a partition locks the whole ledger: rather than queue every
	// read and write behind a long query, give up and try at the next run.
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		return err
	}
	for _, m := range months {
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{ledgerPartitionPrefix + m.Format("2006_01")}.Sanitize()); err != nil {
			return fmt.Errorf("drop ledger partition %s: %w", m.Format("2006-01"), err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO ledger_retention (retained_from) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET retained_from = greatest(ledger_retention.retained_from, excluded.retained_from), updated_at = now()`,
		months[len(months)-1].AddDate(0, 1, 0)); err != nil {
		return fmt.Errorf("ledger_retention: %w", err)
	}
	return tx.Commit(ctx)
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
