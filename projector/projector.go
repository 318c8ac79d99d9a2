// Package projector turns the log into read models: the PostgreSQL
// operational model (this file), exactly once, by writing each poll's rows
// and its partitions' next offsets in one transaction, and the BigQuery
// analytical model (bigquery.go); both are sinks of one consumer loop
// (loop.go), which their replays reuse. It never imports
// command/ or query/: it meets them only in gen/, the log and the database.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/stocknotify"
	"github.com/tally-oss/tally/internal/tracing"
)

// Config configures the Postgres projector.
type Config struct {
	// Consume is how it reads the log. Default Group
	// "tally-projector-postgres", Consumer "postgres"; offsets live in
	// Postgres.
	Consume
	// Pool is the read model's database.
	Pool *pgxpool.Pool
	// MaxPollRecords bounds one poll (and so one batch). Default 20000.
	MaxPollRecords int
	// Silent turns off low-stock announcements (pg_notify), for rebuilds
	// into another schema that no watcher should hear.
	Silent bool
	// Metrics, when set, is updated.
	Metrics *Metrics
	// HistoryRetention is how long the ledger keeps an event, by its
	// recorded_at: whole months older than it are dropped (BigQuery keeps
	// them). 0 keeps every event. Default 0; tally's flag defaults to 400
	// days.
	HistoryRetention time.Duration
	// CompactAfter is how long after its month ends the ledger's rows of
	// the month are compacted into chunks (readmodel.CompactLedgerMonth).
	// 0 compacts nothing. Default 0; tally's flag defaults to a day.
	CompactAfter time.Duration
	// MaintainEvery is how often the ledger's partitions are created ahead
	// and dropped past HistoryRetention, besides at start. Default 1h.
	MaintainEvery time.Duration
	// AfterStage, when set, runs inside each batch's transaction after the
	// rows are written and before the commit: fault injection for tests
	// (cancel the context there and the batch must leave no trace).
	AfterStage func()
}

func (c *Config) defaults() {
	c.Consume.defaults("tally-projector-postgres", "postgres")
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 20000
	}
	if c.MaintainEvery <= 0 {
		c.MaintainEvery = time.Hour
	}
}

// Validate reports every problem with the configuration.
func (c *Config) Validate() error {
	err := c.Consume.validate("projector", required{c.Pool == nil, "database pool"})
	if c.HistoryRetention < 0 {
		err = errors.Join(err, fmt.Errorf("projector: history retention %v is negative", c.HistoryRetention))
	}
	if c.CompactAfter < 0 {
		err = errors.Join(err, fmt.Errorf("projector: ledger compact-after %v is negative", c.CompactAfter))
	}
	return err
}

// Postgres projects the events topic into the Postgres read model.
type Postgres struct {
	cfg      Config
	log      *slog.Logger
	policies *policies
	months   *ledgerMonths
	// retryingDead: RetryDeadLetters is storing old events, whose low-stock
	// changes are no news to announce.
	retryingDead bool
	// compacting is the ledger compaction under way, for its progress.
	compacting struct {
		month  time.Time
		moved  int64
		logged time.Time
	}
}

// NewPostgres prepares a projector; Run consumes.
func NewPostgres(cfg Config) (*Postgres, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Postgres{cfg: cfg, log: cfg.Logger.With("component", "projector", "consumer", cfg.Consumer), policies: &policies{}, months: &ledgerMonths{}}, nil
}

// Run consumes until ctx ends. A batch whose transaction fails is retried
// from the same records until it commits or ctx ends. Only records the read
// model can never hold are skipped, each dead-lettered: those that do not
// decode, and events Postgres refuses for their own data (refusedData).
//
// Beside the loop it maintains the ledger's partitions (ledger.go): at
// start, then every MaintainEvery.
func (p *Postgres) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); p.maintainLoop(ctx) }()
	err := runLoop(ctx, p, p.loopConfig())
	cancel()
	<-done
	return err
}

func (p *Postgres) loopConfig() loopConfig {
	return loopConfig{
		Consume: p.cfg.Consume, log: p.log,
		fetch: []kgo.Opt{kgo.FetchMaxBytes(64 << 20), kgo.FetchMaxPartitionBytes(16 << 20), kgo.FetchMaxWait(10 * time.Millisecond)},
		// One transaction per poll, for every partition in it: one commit
		// (and one WAL flush) makes the whole poll visible at once.
		batchRows: 1, most: p.cfg.MaxPollRecords,
		// A batch commits in well under a second: 30 s, not the
		// client's 60 s, bounds what a projector killed mid-rebalance
		// holds up.
		rebalance: 30 * time.Second,
	}
}

func (p *Postgres) setup(context.Context) error { return nil }

func (p *Postgres) retrying() (string, time.Duration, func()) {
	return "projecting batch", 5 * time.Second, p.cfg.Metrics.batchFailed
}

// storedOffsets returns Postgres's truth.
func (p *Postgres) storedOffsets(ctx context.Context) (map[int32]int64, error) {
	stored, err := LoadOffsets(ctx, p.cfg.Pool, p.cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("load projector offsets: %w", err)
	}
	// Another instance may have projected policy changes of these
	// partitions since we last looked.
	if err := p.policies.load(ctx, p.cfg.Pool); err != nil {
		return nil, fmt.Errorf("load reorder policies: %w", err)
	}
	return stored, nil
}

// LoadOffsets returns the next offset per partition of a consumer.
func LoadOffsets(ctx context.Context, pool *pgxpool.Pool, consumer string) (map[int32]int64, error) {
	rows, err := pool.Query(ctx, "SELECT log_partition, next_offset FROM projector_offsets WHERE consumer = $1", consumer)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var part int32
	var off int64
	_, err = pgx.ForEachRow(rows, []any{&part, &off}, func() error { out[part] = off; return nil })
	return out, err
}

var ledgerColumns = readmodel.LedgerColumns()

// ledgerEvent is a decoded record and its ledger row.
type ledgerEvent struct {
	event
	row []any
}

// ledgerMode is how a batch's events reach the ledger.
type ledgerMode int

const (
	// copyDirect COPYs straight into the ledger: the normal path.
	copyDirect ledgerMode = iota
	// copyStaged COPYs into a temp table and inserts the rows not there
	// yet: for a batch that meets events already in the ledger (a replay,
	// or two instances during a rebalance).
	copyStaged
	// isolate is copyStaged in parts, each under a savepoint, halving the
	// parts Postgres refuses for their data until each refused event stands
	// alone: those are dead-lettered, the rest stored.
	isolate
)

// project writes a batch's records of every partition, and each
// partition's next offset, in one transaction.
func (p *Postgres) project(ctx context.Context, b *batch) error {
	start := time.Now()
	evs := make([]ledgerEvent, len(b.events))
	for i, ev := range b.events {
		evs[i] = ledgerRow(ev)
	}
	if err := p.ensureMonths(ctx, b.events); err != nil {
		return err
	}
	c, err := p.commitBatch(ctx, b, evs, copyDirect)
	if noPartition(err) {
		// A month dropped since it was ensured (retention, maybe by
		// another instance): ensure again on the retry.
		p.months.forget()
	}
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		// Some of these events are already in the ledger: a replay.
		c, err = p.commitBatch(ctx, b, evs, copyStaged)
	}
	if refusedData(err) != nil {
		// Retrying the batch as it is would fail forever, and hold up
		// every partition in it: find the events at fault.
		p.log.Warn("batch refused for its data; isolating the events at fault", "error", err)
		c, err = p.commitBatch(ctx, b, evs, isolate)
	}
	if err != nil {
		return err
	}
	p.policies.set(c.state.policies)
	p.cfg.Metrics.batchCommitted(c.offsets, c.dead, time.Since(start), c.recorded)
	traceProjected(b.events, start, "tally.projector.project")
	return nil
}

// traceProjected ends a span, from start to now, for each event whose
// record carries a traced command's context: the command's trace goes on
// from the writer to the read model.
func traceProjected(evs []event, start time.Time, name string) {
	for _, ev := range evs {
		ctx, ok := tracing.FromRecord(ev.rec)
		if !ok {
			continue
		}
		_, span := tracing.Tracer().Start(ctx, name, trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("tally.sku", ev.e.GetSkuId()), attribute.Int64("tally.sku_version", ev.e.GetSkuVersion()),
				attribute.Int("tally.partition", int(ev.rec.Partition)), attribute.Int64("tally.offset", ev.rec.Offset),
				attribute.Int64("tally.visibility_ms", time.Since(ev.e.GetRecordedAt().AsTime()).Milliseconds()),
				attribute.Int("tally.batch_events", len(evs))))
		span.End()
	}
}

// levelKey is a (sku, store).
type levelKey struct{ sku, store string }

// batchState is the newest level per (sku, store) in a batch, folded in Go
// so Postgres upserts each key once.
type batchState struct {
	levels map[levelKey]*inventoryv1.InventoryEvent
	// before is the available quantity before the batch's first event of
	// each (sku, store).
	before map[levelKey]int64
	// policies set in the batch, newest per key.
	policies       map[levelKey]Policy
	policyVersions map[levelKey]*inventoryv1.InventoryEvent
}

// projected returns the levels the batch changed, by SKU, for the
// ProjectedChannel.
func (b *batchState) projected() []stocknotify.Projected {
	idx := make(map[string]int, len(b.levels))
	var out []stocknotify.Projected
	for k, ev := range b.levels {
		i, ok := idx[k.sku]
		if !ok {
			i = len(out)
			idx[k.sku] = i
			out = append(out, stocknotify.Projected{SKU: k.sku})
		}
		out[i].Stores = append(out[i].Stores, k.store)
		out[i].Version = max(out[i].Version, ev.GetSkuVersion())
	}
	return out
}

// newBatchState folds evs.
func newBatchState(evs []ledgerEvent) *batchState {
	b := &batchState{
		levels: map[levelKey]*inventoryv1.InventoryEvent{}, before: map[levelKey]int64{},
		policies: map[levelKey]Policy{}, policyVersions: map[levelKey]*inventoryv1.InventoryEvent{},
	}
	for _, ev := range evs {
		b.add(ev.e)
	}
	return b
}

func (b *batchState) add(e *inventoryv1.InventoryEvent) {
	k := levelKey{e.GetSkuId(), e.GetStoreId()}
	cur := b.levels[k]
	if cur == nil {
		b.before[k] = (e.GetOnHandAfter() - e.GetQuantityDelta()) - (e.GetReservedAfter() - e.GetReservedDelta())
	}
	if cur == nil || cur.GetSkuVersion() < e.GetSkuVersion() {
		b.levels[k] = e
	}
	if isPolicy(e) {
		if pv := b.policyVersions[k]; pv == nil || pv.GetSkuVersion() < e.GetSkuVersion() {
			b.policyVersions[k] = e
			b.policies[k] = Policy{e.GetReorderPoint(), e.GetTargetLevel()}
		}
	}
}

// uniqueViolation is the SQLSTATE of a row already in the ledger.
const uniqueViolation = "23505"

// refusedData returns the error by which Postgres refused a statement for
// the data it was given, or nil for any other error. Such a refusal is the
// same whenever the same rows are written, so retrying cannot help. Only
// codes a value in the event itself causes, whatever our schema says, count:
//   - 22021, 22P05: a NUL in text, \u0000 in jsonb (invalid characters);
//   - 22008, 22007, 22003: a time or a number its column cannot hold;
//   - 54000 "index row size … exceeds": an id of kilobytes.
//
// Everything else is retried, with the projection stopped and alerting:
// the moment's errors (connections, class 08; serialization failures and
// deadlocks, 40; shutdowns and cancellations, 57; resources, 53; lock
// timeouts, 55P03), and ours: a constraint or a column our own migration got
// wrong (class 23, 42, and the rest of 22 and 54) refuses every event alike,
// and dead-lettering them would skip the log at full speed.
func refusedData(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return nil
	}
	switch pgErr.Code {
	case "22021", "22P05", "22008", "22007", "22003":
		return pgErr
	case "54000":
		if strings.Contains(pgErr.Message, "index row") {
			return pgErr
		}
	}
	return nil
}

// refusedError is Postgres refusing an event for its own data.
type refusedError struct{ pg *pgconn.PgError }

func (e *refusedError) Error() string {
	msg := "postgres refused the event: " + e.pg.Message
	if e.pg.Where != "" { // such as "COPY ledger_stage, line 1, column reason"
		msg += " (" + strings.ReplaceAll(e.pg.Where, "\n", "; ") + ")"
	}
	return msg + " (SQLSTATE " + e.pg.Code + ")"
}

func (e *refusedError) Unwrap() error { return e.pg }

// committed is what a batch's transaction stored.
type committed struct {
	state    *batchState
	offsets  []offsetRow
	dead     int
	recorded []time.Time
}

// commitBatch writes evs, dead-letters dead (and, in isolate mode, the
// events Postgres refuses) and moves the partitions to their next offsets,
// in one transaction.
func (p *Postgres) commitBatch(ctx context.Context, b *batch, evs []ledgerEvent, mode ledgerMode) (*committed, error) {
	tx, err := p.cfg.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	stored, dead := evs, b.dead
	if mode == isolate {
		var refused []deadRecord
		if stored, refused, err = isolateRefused(ctx, tx, evs, p.policies); err != nil {
			return nil, err
		}
		dead = slices.Concat(dead, refused)
	}
	c := &committed{state: newBatchState(stored), dead: len(dead)}
	if len(stored) > 0 {
		// After isolate, every stored row is written already; this writes
		// none again, and announces the batch's changes as one.
		if err := writeRows(ctx, tx, stored, c.state, p.policies, mode != copyDirect, !p.cfg.Silent && !p.retryingDead); err != nil {
			return nil, err
		}
	}
	if len(dead) > 0 {
		if err := p.deadLetter(ctx, tx, b, dead); err != nil {
			return nil, err
		}
	}
	c.offsets, c.recorded = progress(b.offsets, len(stored), func(i int) *event { return &stored[i].event })
	parts, nexts, newest := make([]int32, len(c.offsets)), make([]int64, len(c.offsets)), make([]*time.Time, len(c.offsets))
	for i, o := range c.offsets {
		parts[i], nexts[i] = o.partition, o.next
		if !o.newest.IsZero() {
			newest[i] = &o.newest
		}
	}
	p50, p99 := visibilityMs(time.Now(), c.recorded)
	if _, err := tx.Exec(ctx, `INSERT INTO projector_offsets (consumer, log_partition, next_offset, newest_recorded_at, updated_at, visibility_p50_ms, visibility_p99_ms)
		SELECT $1, o.*, now(), $5, $6 FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[]) o
		ON CONFLICT (consumer, log_partition) DO UPDATE
		SET next_offset = excluded.next_offset,
		    newest_recorded_at = COALESCE(excluded.newest_recorded_at, projector_offsets.newest_recorded_at),
		    visibility_p50_ms = COALESCE(excluded.visibility_p50_ms, projector_offsets.visibility_p50_ms),
		    visibility_p99_ms = COALESCE(excluded.visibility_p99_ms, projector_offsets.visibility_p99_ms),
		    updated_at = now()
		WHERE projector_offsets.next_offset < excluded.next_offset`,
		p.cfg.Consumer, parts, nexts, newest, p50, p99); err != nil {
		return nil, err
	}
	if !p.cfg.Silent {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) p`,
			stocknotify.ProjectedChannel, stocknotify.EncodeProjected(c.state.projected())); err != nil {
			return nil, err
		}
	}
	if p.cfg.AfterStage != nil {
		p.cfg.AfterStage()
	}
	return c, tx.Commit(ctx)
}

// visibilityMs returns the median and 99th percentile of now - recorded,
// in milliseconds; nil for no events.
func visibilityMs(now time.Time, recorded []time.Time) (p50, p99 *int64) {
	if len(recorded) == 0 {
		return nil, nil
	}
	ms := make([]int64, len(recorded))
	for i, r := range recorded {
		ms[i] = max(0, now.Sub(r).Milliseconds())
	}
	slices.Sort(ms)
	// Nearest rank: the smallest value at least the given share of the
	// batch is at or below.
	rank := func(q float64) *int64 { return &ms[int(math.Ceil(q*float64(len(ms))))-1] }
	return rank(0.5), rank(0.99)
}

// progress returns the partitions' offsets with the events stored in each
// and the newest recorded_at among them, and every stored event's
// recorded_at.
func progress(offsets []offsetRow, n int, stored func(int) *event) ([]offsetRow, []time.Time) {
	out := slices.Clone(offsets)
	idx := make(map[int32]int, len(out))
	for i, o := range out {
		idx[o.partition] = i
	}
	recorded := make([]time.Time, n)
	for i := range n {
		ev := stored(i)
		recorded[i] = ev.e.GetRecordedAt().AsTime()
		if j, ok := idx[ev.rec.Partition]; ok {
			o := &out[j]
			o.events++
			if recorded[i].After(o.newest) {
				o.newest = recorded[i]
			}
		}
	}
	return out, recorded
}

// isolateRefused writes evs under savepoints, halving any part Postgres
// refuses for its data until each refused event stands alone, and returns
// the events written and the ones refused: k bad events among n cost about
// 2k·log2(n) parts. Each part's levels are upserted with it; as an upsert
// only moves a level to a newer version, the parts may land in any order.
// Any other error ends it: the batch is retried.
func isolateRefused(ctx context.Context, tx pgx.Tx, evs []ledgerEvent, cache *policies) (stored []ledgerEvent, refused []deadRecord, err error) {
	var write func(part []ledgerEvent) error
	write = func(part []ledgerEvent) error {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		err = writeRows(ctx, sp, part, newBatchState(part), cache, true, false)
		if err == nil {
			if err := sp.Commit(ctx); err != nil {
				return err
			}
			stored = append(stored, part...)
			return nil
		}
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return errors.Join(err, rbErr)
		}
		pgErr := refusedData(err)
		switch {
		case pgErr == nil:
			return err
		case len(part) == 1:
			refused = append(refused, deadRecord{rec: part[0].rec, ev: &part[0].event, err: &refusedError{pgErr}})
			return nil
		}
		if err := write(part[:len(part)/2]); err != nil {
			return err
		}
		return write(part[len(part)/2:])
	}
	err = write(evs)
	return stored, refused, err
}

// writeRows appends rows to the ledger and folds the batch into the levels,
// each idempotently, so a replayed batch changes nothing.
// The ledger is written by COPY straight into the table; when that meets a
// row already there (a replay), the transaction is retried by the caller
// with staged=true: COPY into a temp table, then INSERT … ON CONFLICT DO
// NOTHING.
func writeRows(ctx context.Context, tx pgx.Tx, evs []ledgerEvent, b *batchState, cache *policies, staged, announce bool) error {
	rows := pgx.CopyFromSlice(len(evs), func(i int) ([]any, error) { return evs[i].row, nil })
	if staged {
		// Emptied first: isolate stages several parts in one transaction.
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS ledger_stage
			(LIKE inventory_ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
			TRUNCATE ledger_stage`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger_stage"}, ledgerColumns, rows); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO inventory_ledger SELECT * FROM ledger_stage ON CONFLICT DO NOTHING`); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	} else if _, err := tx.CopyFrom(ctx, pgx.Identifier{"inventory_ledger"}, ledgerColumns, rows); err != nil {
		return fmt.Errorf("copy: %w", err)
	}

	n := len(b.levels)
	skus, stores := make([]string, 0, n), make([]string, 0, n)
	onHand, reserved, versions := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	updated := make([]time.Time, 0, n)
	for k, e := range b.levels {
		skus, stores = append(skus, k.sku), append(stores, k.store)
		onHand, reserved = append(onHand, e.GetOnHandAfter()), append(reserved, e.GetReservedAfter())
		versions, updated = append(versions, e.GetSkuVersion()), append(updated, e.GetRecordedAt().AsTime())
	}
	if _, err := tx.Exec(ctx, `INSERT INTO stock_levels (sku_id, store_id, on_hand, reserved, sku_version, updated_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[])
		ON CONFLICT (sku_id, store_id) DO UPDATE
		SET on_hand = excluded.on_hand, reserved = excluded.reserved, sku_version = excluded.sku_version,
		    updated_at = excluded.updated_at, projected_at = now()
		WHERE stock_levels.sku_version < excluded.sku_version`, skus, stores, onHand, reserved, versions, updated); err != nil {
		return fmt.Errorf("stock_levels: %w", err)
	}
	if len(b.policyVersions) > 0 {
		var pSKU, pStore []string
		var pPoint, pTarget, pVersion []int64
		var pAt []time.Time
		for k, e := range b.policyVersions {
			pSKU, pStore = append(pSKU, k.sku), append(pStore, k.store)
			pPoint, pTarget = append(pPoint, e.GetReorderPoint()), append(pTarget, e.GetTargetLevel())
			pVersion, pAt = append(pVersion, e.GetSkuVersion()), append(pAt, e.GetRecordedAt().AsTime())
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reorder_policies (sku_id, store_id, reorder_point, target_level, sku_version, updated_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[])
			ON CONFLICT (sku_id, store_id) DO UPDATE
			SET reorder_point = excluded.reorder_point, target_level = excluded.target_level,
			    sku_version = excluded.sku_version, updated_at = excluded.updated_at
			WHERE reorder_policies.sku_version < excluded.sku_version`, pSKU, pStore, pPoint, pTarget, pVersion, pAt); err != nil {
			return fmt.Errorf("reorder_policies: %w", err)
		}
	}
	if !announce {
		return nil
	}
	if notes := stocknotify.Encode(b.changes(cache)); len(notes) > 0 {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, n) FROM unnest($2::text[]) n`, stocknotify.Channel, notes); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	return nil
}

// ledgerRow is ev's ledger row.
func ledgerRow(ev event) ledgerEvent {
	return ledgerEvent{event: ev, row: readmodel.LedgerRow(ev.e, ev.id, ev.rec.Partition, ev.rec.Offset)}
}

// deadLetter dead-letters records in tx, the transaction that moves the
// offsets past them: to the DLQ first, then into projection_dead_letters.
// The table holds each once (tx commits or nothing does); the DLQ may hold
// one twice, if tx does not commit after the records were sent.
func (p *Postgres) deadLetter(ctx context.Context, tx pgx.Tx, b *batch, dead []deadRecord) error {
	n := len(dead)
	parts, offs := make([]int32, n), make([]int64, n)
	ids, skus, msgs, codes := make([]*string, n), make([]*string, n), make([]string, n), make([]*string, n)
	versions := make([]*int64, n)
	for i, d := range dead {
		parts[i], offs[i] = d.rec.Partition, d.rec.Offset
		// Everything from the record is made storable: the point is to
		// record what Postgres would not take.
		msgs[i] = storable(d.err.Error(), 2000)
		if d.ev != nil {
			id, sku, v := d.ev.id.String(), storable(d.ev.e.GetSkuId(), 256), d.ev.e.GetSkuVersion()
			ids[i], skus[i], versions[i] = &id, &sku, &v
		}
		if pgErr := (*pgconn.PgError)(nil); errors.As(d.err, &pgErr) {
			codes[i] = &pgErr.Code
		}
	}
	if err := b.deadLetter(ctx, dead); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_dead_letters
		(consumer, log_partition, log_offset, event_id, sku_id, sku_version, error, sqlstate)
		SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::uuid[], $5::text[], $6::bigint[], $7::text[], $8::text[])
		ON CONFLICT DO NOTHING`, p.cfg.Consumer, parts, offs, ids, skus, versions, msgs, codes); err != nil {
		return fmt.Errorf("projection_dead_letters: %w", err)
	}
	return nil
}

// storable returns s as valid UTF-8 without NULs, cut to at most max bytes.
func storable(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
