package projector

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tally-oss/tally/internal/readmodel"
)

// The ledger is partitioned by month of recorded_at (readmodel/ledger.go).
// The projector keeps the partitions: the current month and monthsAhead
// after it exist before their events come, and any other month gets its
// partition before the first batch holding one of its events is written.
// There is deliberately no DEFAULT partition: once it held a row of a
// month, creating that month's partition fails (PostgreSQL will not move
// the row), which would stop the projection; and it would hold rows no
// retention drops.

// monthsAhead are the months after the current one whose partitions
// maintenance creates.
const monthsAhead = 2

// ledgerMonths are the months known to have a partition.
type ledgerMonths struct {
	mu    sync.Mutex
	known map[time.Time]bool
}

// missing are the months of times not known to have a partition.
func (l *ledgerMonths) missing(times func(yield func(time.Time) bool)) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Time
	seen := map[time.Time]bool{}
	for t := range times {
		m := readmodel.Month(t)
		if !l.known[m] && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

func (l *ledgerMonths) add(months ...time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.known == nil {
		l.known = map[time.Time]bool{}
	}
	for _, m := range months {
		l.known[m] = true
	}
}

func (l *ledgerMonths) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.known = nil
}

// ensureMonths creates the partitions the events' months lack, each in its
// own statement before the batch's transaction (so the batch does not hold
// the ledger's lock for a partition's creation).
func (p *Postgres) ensureMonths(ctx context.Context, evs []event) error {
	missing := p.months.missing(func(yield func(time.Time) bool) {
		for _, ev := range evs {
			if !yield(ev.e.GetRecordedAt().AsTime()) {
				return
			}
		}
	})
	if len(missing) == 0 {
		return nil
	}
	created, err := readmodel.EnsureLedgerMonths(ctx, p.cfg.Pool, missing...)
	for _, m := range created {
		p.log.Info("ledger partition created for an event's month", "month", m.Format("2006-01"))
	}
	p.cfg.Metrics.partitionsCreated(len(created))
	if err != nil {
		return err
	}
	p.months.add(missing...)
	return nil
}

// noPartition: a row's month had no partition (SQLSTATE 23514, "no
// partition of relation … found for row").
func noPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514"
}

// MaintainLedger creates the partitions of now's month and the months
// ahead, and drops those past HistoryRetention, as of now. Run calls it at
// start and every MaintainEvery; tests call it with the now they need.
func (p *Postgres) MaintainLedger(ctx context.Context, now time.Time) (readmodel.LedgerMaintenance, error) {
	res, err := readmodel.MaintainLedger(ctx, p.cfg.Pool, now, readmodel.LedgerPolicy{
		Ahead: monthsAhead, Retention: p.cfg.HistoryRetention, CompactAfter: p.cfg.CompactAfter, Progress: p.compactProgress,
	})
	p.cfg.Metrics.partitionsCreated(len(res.Created))
	p.cfg.Metrics.partitionsDropped(len(res.Dropped))
	if len(res.Dropped) > 0 {
		// A later event of a dropped month must create it again.
		p.months.forget()
	}
	for _, m := range res.Created {
		p.log.Info("ledger partition created", "month", m.Format("2006-01"))
	}
	for _, m := range res.Dropped {
		p.log.Info("ledger partition dropped", "month", m.Format("2006-01"), "retention", p.cfg.HistoryRetention)
	}
	for i, m := range res.Compacted {
		p.log.Info("ledger month compacted", "month", m.Format("2006-01"), "rows", res.CompactedRows[i])
	}
	if err != nil {
		return res, err
	}
	p.cfg.Metrics.ledgerRetained(res)
	return res, nil
}

// compactProgress logs a month's compaction as it goes (a month of a busy
// chain is billions of rows: hours), at most every 10 s, and counts the
// rows moved.
func (p *Postgres) compactProgress(month time.Time, moved int64) {
	if !month.Equal(p.compacting.month) {
		p.compacting.month, p.compacting.moved = month, 0
	}
	p.cfg.Metrics.rowsCompacted(moved - p.compacting.moved)
	p.compacting.moved = moved
	if time.Since(p.compacting.logged) >= 10*time.Second {
		p.compacting.logged = time.Now()
		p.log.Info("compacting ledger month", "month", month.Format("2006-01"), "rows_moved", moved)
	}
}

// maintainLoop runs MaintainLedger at start and every MaintainEvery until
// ctx ends. A failure is logged and tried again at the next tick: the
// projection does not need it (ensureMonths creates what a batch needs).
func (p *Postgres) maintainLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.MaintainEvery)
	defer t.Stop()
	for {
		if res, err := p.MaintainLedger(ctx, time.Now()); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("ledger maintenance failed", "error", err)
			p.cfg.Metrics.maintenanceFailed()
		} else {
			p.log.Debug("ledger maintained", "oldest_month", res.Oldest.Format("2006-01"), slog.Time("retained_from", res.RetainedFrom))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
