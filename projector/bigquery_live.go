package projector

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/iterator"
)

// The live BigQuery projection (DESIGN.md, "Analytical model"): batches are
// buffered, not written; every MergeInterval (or MaxPendingRows) a flush
// appends each partition's rows to a pending stream of inventory_events,
// refreshes current_inventory with one MERGE, records the streams in
// projector_offsets (one conditional UPDATE per partition) and commits
// them. Nothing on the way reads inventory_events; current_inventory is
// read once per flush, by its MERGE.
//
// A partition's row in projector_offsets is either settled (next_offset:
// every event before it is in inventory_events; pending_stream NULL) or
// intended (pending_stream: a finalized stream holding the events from
// next_offset to pending_next_offset, committed or about to be). Whoever
// reads an intended row commits the stream if it is not committed yet and
// settles the row: every finalized stream that a row ever named is
// committed exactly once, and no other stream ever is.

// bqPart is one partition's state in the live projection.
type bqPart struct {
	// settled is the partition's next_offset as last read or written,
	// its row settled.
	settled int64
	// intent is the pending stream this projector recorded for the
	// partition and has not settled yet; intentNext its end.
	intent     string
	intentNext int64
	// intentRecorded are the recorded_at of the intent's events, for the
	// visibility metric once it is committed.
	intentRecorded []time.Time
	// pos is the offset after the records buffered; records below
	// skipBelow are another projector's (found by a lost intent).
	pos, skipBelow int64
	rows           []bqRow
	// unknown: the partition was not assigned through the loop (its row
	// is read before its next intent).
	unknown bool
}

// bqRow is an encoded inventory_events row and its record.
type bqRow struct {
	offset   int64
	b        []byte
	recorded time.Time
	rec      *kgo.Record
}

// bqLevel is a (sku, store) of current_inventory.
type bqLevel struct{ sku, store string }

// levelRow is current_inventory's row for a level: the newest event's.
type levelRow struct {
	onHand, reserved, version int64
	updated                   time.Time
}

// live is the live projection's state, guarded by mu: the loop's flush
// and the consumer group's assignment both change it.
type live struct {
	mu       sync.Mutex
	parts    map[int32]*bqPart
	latest   map[bqLevel]levelRow
	buffered int
	// since is when the interval of the buffered records began (zero:
	// nothing buffered): the oldest one's recorded_at, but not before
	// floor nor after it was buffered. floor is the later of when the
	// last flush began and three quarters of an interval before it ended
	// (or when partitions were assigned). So a record that arrives during a flush
	// waits at most the interval plus one flush, not that flush, a whole
	// interval and the next flush; and a projector that is behind (a
	// flush longer than the interval) still gathers a quarter interval of
	// records per flush, not one batch.
	since time.Time
	floor time.Time
	// unsent are dead letters not yet sent: sent before the flush that
	// moves the offsets past them, through lp's client.
	unsent []deadRecord
	lp     *loop
}

// flushAt is when the buffered records are due (zero: none are).
func (b *BigQuery) flushAt() time.Time {
	b.live.mu.Lock()
	defer b.live.mu.Unlock()
	return b.flushAtLocked()
}

func (b *BigQuery) flushAtLocked() time.Time {
	l := &b.live
	switch {
	case l.since.IsZero():
		return time.Time{}
	case l.buffered >= b.cfg.MaxPendingRows:
		return l.since
	}
	return l.since.Add(b.cfg.MergeInterval)
}

// projectLive buffers a live batch, and flushes when it is due.
func (b *BigQuery) projectLive(ctx context.Context, bt *batch) error {
	l := &b.live
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lp = bt.loop
	if bt.attempt == 1 {
		b.buffer(bt)
	}
	if err := b.sendDead(ctx); err != nil {
		return err
	}
	if at := b.flushAtLocked(); !at.IsZero() && !time.Now().Before(at) {
		return b.flushLocked(ctx)
	}
	return nil
}

// flush writes what is buffered (the loop calls it when it is due and no
// record came).
func (b *BigQuery) flush(ctx context.Context) error {
	b.live.mu.Lock()
	defer b.live.mu.Unlock()
	return b.flushLocked(ctx)
}

func (b *BigQuery) sendDead(ctx context.Context) error {
	l := &b.live
	if len(l.unsent) == 0 {
		return nil
	}
	bt := &batch{loop: l.lp}
	if err := bt.deadLetter(ctx, l.unsent); err != nil {
		return err
	}
	b.cfg.Metrics.deadLettered(len(l.unsent))
	l.unsent = nil
	return nil
}

// buffer encodes bt's events into their partitions' rows and keeps the
// newest state of each level they touch.
func (b *BigQuery) buffer(bt *batch) {
	l := &b.live
	start := l.since.IsZero()
	if start {
		l.since = time.Now()
	}
	l.unsent = append(l.unsent, bt.dead...)
	part := func(p int32) *bqPart {
		pt := l.parts[p]
		if pt == nil {
			pt = &bqPart{unknown: true, settled: -1}
			l.parts[p] = pt
		}
		return pt
	}
	for _, ev := range bt.events {
		pt := part(ev.rec.Partition)
		if ev.rec.Offset < pt.skipBelow {
			continue
		}
		row, _, _ := eventRow{e: ev.e, partition: ev.rec.Partition, offset: ev.rec.Offset}.Save()
		enc, err := b.eventsRT.encode(row)
		if err != nil {
			l.unsent = append(l.unsent, deadRecord{rec: ev.rec, ev: &ev, err: fmt.Errorf("bigquery cannot hold the event: %w", err)})
			continue
		}
		recorded := ev.e.GetRecordedAt().AsTime()
		if start && recorded.Before(l.since) {
			l.since = maxTime(recorded, l.floor)
		}
		pt.rows = append(pt.rows, bqRow{offset: ev.rec.Offset, b: enc, recorded: recorded, rec: ev.rec})
		l.buffered++
		k := bqLevel{ev.e.GetSkuId(), ev.e.GetStoreId()}
		if cur, ok := l.latest[k]; !ok || ev.e.GetSkuVersion() > cur.version {
			l.latest[k] = levelRow{onHand: ev.e.GetOnHandAfter(), reserved: ev.e.GetReservedAfter(), version: ev.e.GetSkuVersion(), updated: recorded}
		}
	}
	for _, pb := range bt.parts {
		pt := part(pb.partition)
		pt.pos = max(pt.pos, pb.next)
	}
}

// flushLocked writes everything buffered. Each step can fail and be
// retried: the flush starts again from what the previous attempt left.
func (b *BigQuery) flushLocked(ctx context.Context) error {
	l := &b.live
	start := time.Now()
	l.floor = start
	if err := b.settle(ctx); err != nil {
		return err
	}
	// Partitions whose row this projector has not read (never assigned
	// through the loop) are read first.
	for p, pt := range l.parts {
		if pt.unknown {
			if err := b.reload(ctx, p, pt); err != nil {
				return err
			}
		}
	}
	// The partitions' streams side by side: a flush appends the events of
	// a whole interval.
	step := time.Now()
	streams := map[int32]string{}
	var mu sync.Mutex
	var g errgroup.Group
	for p, pt := range l.parts {
		if len(pt.rows) == 0 {
			continue
		}
		g.Go(func() error {
			s, refused, err := b.streamRows(ctx, p, pt)
			mu.Lock()
			defer mu.Unlock()
			l.unsent = append(l.unsent, refused...)
			if err == nil {
				streams[p] = s
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	b.cfg.Metrics.flushStep("append", time.Since(step))
	if err := b.sendDead(ctx); err != nil {
		return err
	}
	if len(l.latest) > 0 {
		step = time.Now()
		if err := b.refreshCurrent(ctx); err != nil {
			return fmt.Errorf("refresh current_inventory: %w", err)
		}
		b.cfg.Metrics.flushStep("refresh", time.Since(step))
		clear(l.latest)
	}
	if b.cfg.BeforeIntent != nil {
		if err := b.cfg.BeforeIntent(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	// One partition after the other: DML on one table is serialised by
	// BigQuery anyway, and the emulator's SQLite fails concurrent writers.
	step = time.Now()
	lost, err := b.intend(ctx, streams)
	if err != nil {
		return fmt.Errorf("record the flush in %s: %w", OffsetsTable, err)
	}
	for _, p := range lost {
		b.log.Warn("another BigQuery projector moved the partition's offsets: its rows are dropped here and the partition goes on from the recorded offset",
			"partition", p, "stream", streams[p])
		if err := b.reload(ctx, p, l.parts[p]); err != nil {
			return err
		}
	}
	b.cfg.Metrics.flushStep("intent", time.Since(step))
	if b.cfg.BeforeCommit != nil {
		if err := b.cfg.BeforeCommit(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	step = time.Now()
	if err := b.settle(ctx); err != nil {
		return err
	}
	b.cfg.Metrics.flushStep("commit", time.Since(step))
	l.buffered, l.since = 0, time.Time{}
	l.floor = maxTime(start, time.Now().Add(-b.cfg.MergeInterval*3/4))
	for _, pt := range l.parts {
		l.buffered += len(pt.rows) // rows a lost intent left to write (none unless a row ran ahead)
	}
	if l.buffered > 0 {
		l.since = time.Now()
	}
	b.log.Debug("flushed", "partitions", len(streams), "took", time.Since(start))
	return nil
}

// streamRows appends a partition's buffered rows to a new pending stream
// and finalizes it. A stream is never appended to twice: an append that
// fails leaves its stream to expire uncommitted, and the next attempt
// starts a new one. Rows BigQuery refuses are dead-lettered and the rest
// streamed again.
func (b *BigQuery) streamRows(ctx context.Context, p int32, pt *bqPart) (string, []deadRecord, error) {
	var refusedRows []deadRecord
	for {
		s, err := b.sw.createPending(ctx, EventsTable)
		if err != nil {
			return "", refusedRows, err
		}
		enc := make([][]byte, len(pt.rows))
		for i, r := range pt.rows {
			enc[i] = r.b
		}
		err = b.sw.append(ctx, EventsTable, s, b.eventsRT, enc)
		var ae *AppendError
		if errors.As(err, &ae) {
			b.log.Warn("bigquery refused rows; they go to the dead-letter topic", "partition", p, "rows", len(ae.Rows), "error", ae.Rows[0].Err)
			refused := map[int]error{}
			for _, re := range ae.Rows {
				refused[re.Index] = re.Err
			}
			kept := pt.rows[:0]
			for i, r := range pt.rows {
				if e, ok := refused[i]; ok {
					refusedRows = append(refusedRows, deadRecord{rec: r.rec, err: fmt.Errorf("bigquery rejected the row: %w", e)})
					continue
				}
				kept = append(kept, r)
			}
			pt.rows = kept
			if len(kept) == 0 {
				return "", refusedRows, nil
			}
			continue
		}
		if err != nil {
			return "", refusedRows, err
		}
		if err := b.sw.finalize(ctx, s); err != nil {
			return "", refusedRows, err
		}
		return s, refusedRows, nil
	}
}

// intend records the flush of every partition with something new in one
// conditional UPDATE of projector_offsets (one DML job per flush however
// many partitions: BigQuery runs a table's DML one statement at a time and
// bills each at least 10 MB): each partition's stream (or, with none, its
// new offset), on condition that its row is still as this projector last
// saw it. It returns the partitions whose row another projector moved.
func (b *BigQuery) intend(ctx context.Context, streams map[int32]string) ([]int32, error) {
	var parts []int32
	for p, pt := range b.live.parts {
		if pt.pos > pt.settled {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	slices.Sort(parts)
	// Literals, not parameters: the emulator matches nothing against an
	// array parameter, and a flush's partitions are a few hundred at most.
	var pending, pendingNext, next, newest, where []string
	for _, p := range parts {
		pt := b.live.parts[p]
		var nw time.Time
		for _, r := range pt.rows {
			nw = maxTime(nw, r.recorded)
		}
		if !nw.IsZero() {
			newest = append(newest, fmt.Sprintf("WHEN %d THEN TIMESTAMP_MICROS(%d)", p, nw.UnixMicro()))
		}
		if s := streams[p]; s != "" {
			if !streamName.MatchString(s) {
				return nil, fmt.Errorf("unexpected write stream name %q", s)
			}
			pending = append(pending, fmt.Sprintf("WHEN %d THEN '%s'", p, s))
			pendingNext = append(pendingNext, fmt.Sprintf("WHEN %d THEN %d", p, pt.pos))
		} else {
			next = append(next, fmt.Sprintf("WHEN %d THEN %d", p, pt.pos))
		}
		where = append(where, fmt.Sprintf("(log_partition = %d AND next_offset = %d)", p, pt.settled))
	}
	set := []string{"updated_at = CURRENT_TIMESTAMP()"}
	for _, c := range []struct {
		col   string
		whens []string
	}{{"pending_stream", pending}, {"pending_next_offset", pendingNext}, {"next_offset", next}, {"newest_recorded_at", newest}} {
		if len(c.whens) > 0 {
			set = append(set, fmt.Sprintf("%s = CASE log_partition %s ELSE %[1]s END", c.col, strings.Join(c.whens, " ")))
		}
	}
	n, err := b.dml(ctx, "intent", fmt.Sprintf(`UPDATE %s SET %s
WHERE consumer = @consumer AND pending_stream IS NULL AND (%s)`, b.table(OffsetsTable), strings.Join(set, ", "), strings.Join(where, " OR ")),
		[]bigquery.QueryParameter{{Name: "consumer", Value: b.cfg.Consumer}})
	if err != nil {
		return nil, err
	}
	won := func(int32) bool { return true }
	if n != int64(len(parts)) || b.dupOffsets.Load() {
		// Some lost, or an emulator that does not count the rows a DML
		// changed, or a partition with two rows (an old version of
		// Tally, or two projectors creating its row at once), whose two
		// changed rows could hide another partition's lost one: the rows
		// tell.
		states, err := b.readOffsets(ctx)
		if err != nil {
			return nil, err
		}
		won = func(p int32) bool {
			st, s := states[p], streams[p]
			return (s != "" && st.pending == s) || (s == "" && !st.hasPending && st.next == b.live.parts[p].pos)
		}
	}
	var lost []int32
	for _, p := range parts {
		pt := b.live.parts[p]
		if !won(p) {
			lost = append(lost, p)
			continue
		}
		if s := streams[p]; s != "" {
			pt.intent, pt.intentNext = s, pt.pos
			pt.intentRecorded = pt.intentRecorded[:0]
			for _, r := range pt.rows {
				pt.intentRecorded = append(pt.intentRecorded, r.recorded)
			}
		} else {
			pt.settled = pt.pos
		}
		pt.rows = nil
	}
	return lost, nil
}

// settle commits the streams this projector recorded and marks their rows
// settled.
func (b *BigQuery) settle(ctx context.Context) error {
	var streams []string
	for _, pt := range b.live.parts {
		if pt.intent != "" {
			streams = append(streams, pt.intent)
		}
	}
	if len(streams) == 0 {
		return nil
	}
	// A stop does not cut a commit short: a commit whose answer is lost
	// is committed again by the next attempt, which BigQuery refuses
	// (STREAM_ALREADY_COMMITTED) but the emulator, which does not record
	// commits, would carry out.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := b.settleStreams(sctx, streams); err != nil {
		return err
	}
	var done []offsetRow
	var recorded []time.Time
	for p, pt := range b.live.parts {
		if pt.intent != "" {
			pt.settled, pt.intent = pt.intentNext, ""
			row := offsetRow{partition: p, next: pt.settled, events: len(pt.intentRecorded)}
			for _, r := range pt.intentRecorded {
				if r.After(row.newest) {
					row.newest = r
				}
			}
			done = append(done, row)
			recorded = append(recorded, pt.intentRecorded...)
			pt.intentRecorded = nil
		}
	}
	b.cfg.Metrics.flushed(done, recorded)
	b.recordProgress(sctx, done)
	return nil
}

// recordProgress copies settled offsets into the PostgreSQL read model's
// projector_offsets (Progress), where GetProjectionStatus reports them.
// BigQuery's own offsets stay the truth: a failure here is only logged.
func (b *BigQuery) recordProgress(ctx context.Context, done []offsetRow) {
	if b.cfg.Progress == nil || len(done) == 0 {
		return
	}
	parts, nexts, newest := make([]int32, len(done)), make([]int64, len(done)), make([]*time.Time, len(done))
	for i, o := range done {
		parts[i], nexts[i] = o.partition, o.next
		if !o.newest.IsZero() {
			newest[i] = &done[i].newest
		}
	}
	// Never long: the flush it follows is done, and waits for nothing here.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.cfg.Progress.Exec(ctx, `INSERT INTO projector_offsets (consumer, log_partition, next_offset, newest_recorded_at, updated_at)
		SELECT $1, o.*, now() FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[]) o
		ON CONFLICT (consumer, log_partition) DO UPDATE
		SET next_offset = excluded.next_offset,
		    newest_recorded_at = COALESCE(excluded.newest_recorded_at, projector_offsets.newest_recorded_at),
		    updated_at = now()
		WHERE projector_offsets.next_offset < excluded.next_offset`, b.cfg.Consumer, parts, nexts, newest); err != nil {
		b.log.Warn("recording BigQuery's offsets in PostgreSQL for GetProjectionStatus", "error", err)
	}
}

// settleStreams commits streams (those not committed yet) and settles the
// rows that name them.
func (b *BigQuery) settleStreams(ctx context.Context, streams []string) error {
	if err := b.sw.commit(ctx, EventsTable, streams); err != nil {
		return err
	}
	// The names as literals: the emulator matches nothing against an
	// ARRAY<STRING> parameter. A stream name is BigQuery's resource path.
	quoted := make([]string, len(streams))
	for i, s := range streams {
		if !streamName.MatchString(s) {
			return fmt.Errorf("unexpected write stream name %q", s)
		}
		quoted[i] = "'" + s + "'"
	}
	_, err := b.dml(ctx, "settle", fmt.Sprintf(`UPDATE %s SET next_offset = pending_next_offset, pending_stream = NULL, pending_next_offset = NULL, updated_at = CURRENT_TIMESTAMP()
WHERE consumer = @consumer AND pending_stream IN (%s)`, b.table(OffsetsTable), strings.Join(quoted, ", ")),
		[]bigquery.QueryParameter{{Name: "consumer", Value: b.cfg.Consumer}})
	if err == nil {
		b.sw.settled(streams)
	}
	return err
}

// streamName is what a write stream's name is made of.
var streamName = regexp.MustCompile(`^[A-Za-z0-9/_.-]+$`)

// offsetState is a partition's row of projector_offsets.
type offsetState struct {
	next          int64
	pending       string
	pendingNext   int64
	hasPending    bool
	newestRecords time.Time
}

// readOffsets reads the consumer's rows (the greatest next_offset where an
// old version of Tally left two rows of a partition).
func (b *BigQuery) readOffsets(ctx context.Context) (map[int32]offsetState, error) {
	rows, err := b.query(ctx, "read_offsets", fmt.Sprintf(`SELECT log_partition, next_offset, pending_stream, pending_next_offset FROM %s WHERE consumer = @consumer`, b.table(OffsetsTable)),
		[]bigquery.QueryParameter{{Name: "consumer", Value: b.cfg.Consumer}})
	if err != nil {
		return nil, err
	}
	out := map[int32]offsetState{}
	for _, r := range rows {
		p := int32(r[0].(int64))
		st := offsetState{next: r[1].(int64)}
		if s, ok := r[2].(string); ok && s != "" {
			st.pending, st.hasPending = s, true
			st.pendingNext, _ = r[3].(int64)
		}
		if cur, ok := out[p]; ok {
			b.dupOffsets.Store(true)
			if cur.next > st.next {
				continue
			}
		}
		out[p] = st
	}
	return out, nil
}

// recovered commits and settles the intended rows among states: what
// another projector recorded and did not settle (it stopped, or lost the
// partition). It returns each partition's settled next offset.
func (b *BigQuery) recovered(ctx context.Context, states map[int32]offsetState) (map[int32]int64, error) {
	var streams []string
	out := map[int32]int64{}
	for p, st := range states {
		out[p] = st.next
		if st.hasPending {
			streams = append(streams, st.pending)
			out[p] = st.pendingNext
		}
	}
	if len(streams) > 0 {
		slices.Sort(streams)
		b.log.Info("committing the streams a stopped BigQuery projector recorded", "streams", len(streams))
		if err := b.settleStreams(ctx, slices.Compact(streams)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// reload reads the partition's row again and drops what it says is
// already written.
func (b *BigQuery) reload(ctx context.Context, p int32, pt *bqPart) error {
	states, err := b.readOffsets(ctx)
	if err != nil {
		return err
	}
	st, ok := states[p]
	if !ok {
		if err := b.ensureOffsetRows(ctx, []int32{p}); err != nil {
			return err
		}
		st = offsetState{}
	}
	next, err := b.recovered(ctx, map[int32]offsetState{p: st})
	if err != nil {
		return err
	}
	pt.settled, pt.intent, pt.unknown = next[p], "", false
	i := 0
	for i < len(pt.rows) && pt.rows[i].offset < pt.settled {
		i++
	}
	pt.rows = pt.rows[i:]
	if pt.pos < pt.settled {
		pt.pos, pt.skipBelow = pt.settled, pt.settled
	}
	return nil
}

// ensureOffsetRows creates the rows of partitions that have none.
func (b *BigQuery) ensureOffsetRows(ctx context.Context, parts []int32) error {
	// The partitions as literals: the emulator takes an ARRAY<INT64>
	// parameter for strings.
	ps := make([]string, len(parts))
	for i, p := range parts {
		ps[i] = strconv.Itoa(int(p))
	}
	_, err := b.dml(ctx, "create_offsets", fmt.Sprintf(`INSERT INTO %[1]s (consumer, log_partition, next_offset, updated_at)
SELECT @consumer, p, 0, CURRENT_TIMESTAMP() FROM UNNEST([%[2]s]) AS p
WHERE p NOT IN (SELECT log_partition FROM %[1]s WHERE consumer = @consumer)`, b.table(OffsetsTable), strings.Join(ps, ", ")),
		[]bigquery.QueryParameter{{Name: "consumer", Value: b.cfg.Consumer}})
	return err
}

// assigned is the consumer group giving this projector partitions: their
// rows are read (recovering what a stopped projector recorded), anything
// buffered for them dropped, and the consumer starts at their offsets.
func (b *BigQuery) assigned(ctx context.Context, parts []int32) (map[int32]int64, error) {
	b.live.mu.Lock()
	defer b.live.mu.Unlock()
	states, err := b.readOffsets(ctx)
	if err != nil {
		return nil, fmt.Errorf("load bigquery offsets: %w", err)
	}
	var missing []int32
	for _, p := range parts {
		if _, ok := states[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		if err := b.ensureOffsetRows(ctx, missing); err != nil {
			return nil, err
		}
	}
	mine := map[int32]offsetState{}
	for _, p := range parts {
		mine[p] = states[p]
	}
	next, err := b.recovered(ctx, mine)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		if old := b.live.parts[p]; old != nil {
			b.live.buffered -= len(old.rows)
		}
		b.live.parts[p] = &bqPart{settled: next[p], pos: next[p]}
	}
	// Consuming starts here, as after a flush: a projector catching up on
	// old events gathers an interval's worth before its first flush, not
	// one batch.
	b.live.floor = time.Now()
	return next, nil
}

// refreshCurrent merges the newest state of each level buffered since the
// last refresh into current_inventory, through a table of those rows
// (streamed in, dropped after): a row only ever moves to a higher
// sku_version.
func (b *BigQuery) refreshCurrent(ctx context.Context) error {
	name := stagingPrefix + sanitize(b.cfg.Consumer) + "_" + newBatchID() + "_current"
	t := b.cfg.Client.Dataset(b.cfg.Dataset).Table(name)
	if err := t.Create(ctx, &bigquery.TableMetadata{
		Schema: currentSchema, ExpirationTime: time.Now().Add(24 * time.Hour),
		Description: "Tally BigQuery projector: the levels of one refresh of current_inventory; dropped when merged.",
	}); err != nil && !isAlreadyExists(err) {
		return err
	}
	rows := make([][]byte, 0, len(b.live.latest))
	for k, v := range b.live.latest {
		enc, err := b.currentRT.encode(map[string]bigquery.Value{
			"sku_id": k.sku, "store_id": k.store, "on_hand": v.onHand, "reserved": v.reserved, "sku_version": v.version, "updated_at": v.updated,
		})
		if err != nil {
			return err
		}
		rows = append(rows, enc)
	}
	s, err := b.sw.createCommitted(ctx, name)
	if err != nil {
		return err
	}
	if err := b.sw.append(ctx, name, s, b.currentRT, rows); err != nil {
		return err
	}
	if _, err := b.dml(ctx, "refresh_current", mergeCurrent(b.table(CurrentTable), b.table(name)), nil); err != nil {
		return err
	}
	// Dropped now, not beside the next statements (the emulator's SQLite
	// fails concurrent writers); a table left behind expires, or goes at
	// the next start.
	if err := t.Delete(ctx); err != nil && !isNotFound(err) {
		b.log.Warn("dropping a refresh table failed; it is dropped at a later start", "table", name, "error", err)
	}
	return nil
}

// mergeCurrent is the MERGE of a table of levels (one row per sku_id,
// store_id) into current_inventory, never moving a row back.
func mergeCurrent(current, levels string) string {
	return fmt.Sprintf(`MERGE %s AS T
USING %s AS S
ON T.sku_id = S.sku_id AND T.store_id = S.store_id
WHEN MATCHED AND S.sku_version > T.sku_version THEN
  UPDATE SET on_hand = S.on_hand, reserved = S.reserved, sku_version = S.sku_version, updated_at = S.updated_at
WHEN NOT MATCHED THEN
  INSERT (sku_id, store_id, on_hand, reserved, sku_version, updated_at)
  VALUES (S.sku_id, S.store_id, S.on_hand, S.reserved, S.sku_version, S.updated_at)`, current, levels)
}

func (b *BigQuery) table(t string) string {
	return fmt.Sprintf("`%s.%s.%s`", b.cfg.Client.Project(), b.cfg.Dataset, t)
}

// dml runs a DML statement as a job and returns the rows it changed; the
// bytes BigQuery billed for it are counted under name.
func (b *BigQuery) dml(ctx context.Context, name, sql string, params []bigquery.QueryParameter) (int64, error) {
	st, err := b.job(ctx, name, sql, params)
	if err != nil {
		return 0, err
	}
	return st.NumDMLAffectedRows, nil
}

// query runs a query as a job and returns its rows.
func (b *BigQuery) query(ctx context.Context, name, sql string, params []bigquery.QueryParameter) ([][]bigquery.Value, error) {
	job, err := b.run(ctx, name, sql, params)
	if err != nil {
		return nil, err
	}
	it, err := job.Read(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b.billed(name, job.LastStatus())
	var out [][]bigquery.Value
	for {
		var row []bigquery.Value
		err := it.Next(&row)
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, row)
	}
}

// run starts a statement as a job, telling cfg.Statement.
func (b *BigQuery) run(ctx context.Context, name, sql string, params []bigquery.QueryParameter) (*bigquery.Job, error) {
	if b.cfg.Statement != nil {
		b.cfg.Statement(name, sql)
	}
	q := b.cfg.Client.Query(sql)
	q.Parameters = params
	job, err := q.Run(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return job, nil
}

func (b *BigQuery) job(ctx context.Context, name, sql string, params []bigquery.QueryParameter) (*bigquery.QueryStatistics, error) {
	job, err := b.run(ctx, name, sql, params)
	if err != nil {
		return nil, err
	}
	status, err := job.Wait(ctx)
	if err == nil {
		err = status.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b.billed(name, status)
	st, _ := status.Statistics.Details.(*bigquery.QueryStatistics)
	if st == nil {
		st = &bigquery.QueryStatistics{}
	}
	return st, nil
}

// billed counts what BigQuery billed (or, where it does not say, processed)
// for a statement.
func (b *BigQuery) billed(name string, status *bigquery.JobStatus) {
	if status == nil || status.Statistics == nil {
		return
	}
	bytes := status.Statistics.TotalBytesProcessed
	if st, ok := status.Statistics.Details.(*bigquery.QueryStatistics); ok && st.TotalBytesBilled > 0 {
		bytes = st.TotalBytesBilled
	}
	b.cfg.Metrics.statementBilled(name, bytes)
}
