package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/backoff"
	"github.com/tally-oss/tally/internal/kafka"
)

// sink is a projection the consumer loop feeds (PostgreSQL, BigQuery): the
// loop polls, batches and decodes the log, and the sink stores each batch
// with its dead letters and, when the batch carries them, the partitions'
// next offsets, idempotently, so that a batch it is handed again changes
// nothing.
type sink interface {
	// setup prepares the sink before the loop consumes.
	setup(ctx context.Context) error
	// storedOffsets returns the next offset per partition the sink holds:
	// the loop's consumer starts each assigned partition there.
	storedOffsets(ctx context.Context) (map[int32]int64, error)
	// project is one attempt at storing b; the loop retries a failed one
	// (see retrying) with the same batch, b.attempt counting them.
	project(ctx context.Context, b *batch) error
	// retrying names a batch's attempts in the logs, bounds their backoff
	// and counts each failure.
	retrying() (what string, maxBackoff time.Duration, failed func())
}

// Consume is how a projection reads the log; each projection's
// configuration embeds it.
type Consume struct {
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Kafka is how to reach them: TLS and SASL. nil is plaintext.
	Kafka *kafka.Security
	// Topic is the events topic. Default kafka.EventsTopic.
	Topic string
	// Group is the consumer group the projection's instances share to
	// split the partitions. Offsets live in the projection's own store,
	// never in Kafka.
	Group string
	// Consumer names the projection in projector_offsets and its dead
	// letters.
	Consumer string
	// Logger, default slog.Default().
	Logger *slog.Logger
}

func (c *Consume) defaults(group, consumer string) {
	c.Topic = cmp.Or(c.Topic, kafka.EventsTopic)
	c.Group = cmp.Or(c.Group, group)
	c.Consumer = cmp.Or(c.Consumer, consumer)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// required is a setting a projection cannot run without: missing when it
// is unset.
type required struct {
	missing bool
	name    string
}

// validate reports every problem at once: no brokers, and each required
// setting missing, as "<what>: no <name>".
func (c *Consume) validate(what string, settings ...required) error {
	var errs []error
	for _, r := range append([]required{{len(c.Brokers) == 0, "Kafka brokers"}}, settings...) {
		if r.missing {
			errs = append(errs, errors.New(what+": no "+r.name))
		}
	}
	return errors.Join(errs...)
}

// loopConfig is what the loop needs of a sink's configuration.
type loopConfig struct {
	Consume
	log             *slog.Logger // the sink's
	fetch           []kgo.Opt    // fetch sizes and waits
	batchRows, most int          // a batch is written at batchRows events, never holds more than most
	batchWait       time.Duration
	// rebalance is the group's rebalance timeout: longer than the sink's
	// slowest batch or flush.
	rebalance time.Duration
}

// partBatch is one partition's records of a batch, and the offset the read
// reached in it.
type partBatch struct {
	partition int32
	recs      []*kgo.Record
	next      int64
}

// offsetRow is a partition's position after a batch.
type offsetRow struct {
	partition int32
	next      int64
	newest    time.Time
	events    int
}

// event is a decoded record.
type event struct {
	rec *kgo.Record
	e   *inventoryv1.InventoryEvent
	id  uuid.UUID
}

// deadRecord is a record the projection skips: ev is nil when it did not
// decode.
type deadRecord struct {
	rec *kgo.Record
	ev  *event
	err error
}

// batch is what the loop hands a sink: the records of a poll (or several),
// decoded.
type batch struct {
	parts  []partBatch
	events []event
	// dead are the records that did not decode.
	dead []deadRecord
	// offsets are the partitions' next offsets, events and newest unset;
	// nil for a replay that must leave the stored offsets where they are.
	offsets []offsetRow
	// attempt counts the sink's attempts at this batch, from 1.
	attempt int
	loop    *loop
}

// deadLetter sends dead to the dead-letter topic. Sinks call it before
// their offsets move past the records: a crash in between may dead-letter
// a record twice, never zero times.
func (b *batch) deadLetter(ctx context.Context, dead []deadRecord) error {
	recs, errs := make([]*kgo.Record, len(dead)), make([]error, len(dead))
	for i, d := range dead {
		recs[i], errs[i] = d.rec, d.err
	}
	return deadLetter(ctx, b.loop.cl, b.loop.cfg.Consumer, recs, errs, b.loop.cfg.log)
}

// assignee is a sink that keeps state per partition: it is told which
// partitions the group assigned and returns where they start, instead of
// storedOffsets.
type assignee interface {
	assigned(ctx context.Context, partitions []int32) (map[int32]int64, error)
}

// flusher is a sink that holds what project gives it and writes it later
// (BigQuery): the loop wakes it at flushAt even when no record comes.
type flusher interface {
	// flushAt is when what it holds is due; zero: it holds nothing.
	flushAt() time.Time
	flush(ctx context.Context) error
}

// source is where the loop reads records: the live consumer group, or a
// replay's range of the log.
type source interface {
	// poll returns up to most records, per partition, waiting no later
	// than deadline when it is set.
	poll(ctx context.Context, deadline time.Time, most int) ([]partBatch, error)
	// done reports that a bounded source has delivered everything.
	done() bool
	// release lets the consumer group rebalance once a batch is stored.
	release()
}

// loop runs one sink: poll, batch, decode, store with retries.
type loop struct {
	sink  sink
	cfg   loopConfig
	cl    *kgo.Client // consumes (live) and produces dead letters
	group *groupSource
}

// runLoop consumes the topic in cfg's consumer group into s until ctx ends,
// each partition from the offset s stores. Only records a sink can never
// hold are skipped, each dead-lettered.
func runLoop(ctx context.Context, s sink, cfg loopConfig) error {
	if err := s.setup(ctx); err != nil {
		return ignoreCanceled(ctx, err) // nil when stopped while starting
	}
	if err := ensureDLQ(ctx, cfg.Brokers, cfg.Kafka); err != nil {
		return ignoreCanceled(ctx, err)
	}
	l := &loop{sink: s, cfg: cfg, group: &groupSource{log: cfg.log, resolvers: map[int32]*kafka.Resolver{}}}
	cl, err := kgo.NewClient(append(append(kafka.Options(cfg.Brokers, cfg.Kafka, cfg.Logger),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		// A killed or paused projector's partitions move to the others
		// after this, not the client's default 45 s: the projection's lag
		// while they wait. 6 s is the least Kafka brokers accept by default.
		kgo.SessionTimeout(6*time.Second),
		kgo.HeartbeatInterval(time.Second),
		// A projector killed in the middle of a rebalance (joined, not
		// yet synced) holds its new partitions until this (the embedded
		// broker expires such a member only by this timeout). It must
		// cover finishing the batch in hand (BlockRebalanceOnPoll), or
		// the member is dropped and rejoins, again and again.
		kgo.RebalanceTimeout(cfg.rebalance),
		kgo.DisableAutoCommit(),
		// The raw log, transactions resolved here (kafka.Resolver) rather
		// than by the broker: kfake, reloaded after a crash, forgets a
		// transaction the crash left open and hands its records to
		// read_committed consumers as committed, although its writer
		// reused their versions (the abort marker written at start comes
		// too late for its index). Control records advance the stored
		// offset past commit markers, so a caught-up projection has zero
		// lag.
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(l.assign),
	), cfg.fetch...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	// With BlockRebalanceOnPoll a close waits for the poll to be released.
	defer cl.AllowRebalance()
	l.cl, l.group.cl = cl, cl
	return ignoreCanceled(ctx, l.consume(ctx, l.group, true, nil))
}

// assign replaces whatever the group thinks with the sink's truth.
func (l *loop) assign(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var stored map[int32]int64
	var err error
	if a, ok := l.sink.(assignee); ok {
		var parts []int32
		for _, ps := range assigned {
			for p := range ps {
				parts = append(parts, p)
			}
		}
		stored, err = a.assigned(ctx, parts)
	} else {
		stored, err = l.sink.storedOffsets(ctx)
	}
	if err != nil {
		return nil, err
	}
	l.cfg.log.Info("partitions assigned", "offsets", stored)
	if l.group != nil {
		l.group.reset(assigned)
	}
	return assignOffsets(assigned, stored), nil
}

// consume collects batches from src and stores each, until src is done or
// fails. With advance the batches carry their offsets. after, when set,
// runs after each stored batch.
func (l *loop) consume(ctx context.Context, src source, advance bool, after func(*batch)) error {
	for !src.done() {
		parts, err := l.collect(ctx, src)
		if err != nil || ctx.Err() != nil {
			return err
		}
		var b *batch
		if hasRecords(parts) {
			b = l.decode(parts, advance)
			err = l.store(ctx, b)
		} else if f, ok := l.sink.(flusher); ok && due(f) {
			what, maxBackoff, failed := l.sink.retrying()
			err = retry(ctx, l.cfg.log, what, maxBackoff, failed, func() error { return f.flush(ctx) })
		}
		src.release()
		if err != nil {
			return err
		}
		if b != nil && after != nil {
			after(b)
		}
	}
	return nil
}

func due(f flusher) bool {
	at := f.flushAt()
	return !at.IsZero() && !time.Now().Before(at)
}

func hasRecords(parts []partBatch) bool {
	for _, pb := range parts {
		if len(pb.recs) > 0 {
			return true
		}
	}
	return false
}

// collect polls until the batch holds batchRows records, or batchWait has
// passed since its first record, or it would exceed most.
func (l *loop) collect(ctx context.Context, src source) ([]partBatch, error) {
	var (
		byPart   = map[int32]int{}
		parts    []partBatch
		n        int
		deadline time.Time
	)
	for n < l.cfg.batchRows && !src.done() {
		if f, ok := l.sink.(flusher); ok && n == 0 {
			// Holding nothing new, wait no longer than the sink's flush.
			deadline = f.flushAt()
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		got, err := src.poll(ctx, deadline, l.cfg.most-n)
		if err != nil || ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), err)
		}
		if n == 0 && len(got) == 0 {
			// Nothing held yet: let a rebalance through. A poll that
			// returns only errors (the group lost its session, Kafka
			// restarted) still blocks rebalances until released, and
			// polling again without releasing would hold them off for
			// good: the group could never rejoin and the projection
			// would stop.
			src.release()
		}
		for _, pb := range got {
			i, ok := byPart[pb.partition]
			if !ok {
				i = len(parts)
				byPart[pb.partition] = i
				parts = append(parts, partBatch{partition: pb.partition})
			}
			parts[i].recs = append(parts[i].recs, pb.recs...)
			parts[i].next = pb.next
			n += len(pb.recs)
		}
		if n > 0 && deadline.IsZero() {
			deadline = time.Now().Add(l.cfg.batchWait)
		}
	}
	return parts, nil
}

// decode decodes a batch's records; those that do not decode are its dead
// letters.
func (l *loop) decode(parts []partBatch, advance bool) *batch {
	b := &batch{parts: parts, loop: l}
	for _, pb := range parts {
		if advance {
			b.offsets = append(b.offsets, offsetRow{partition: pb.partition, next: pb.next})
		}
		for _, r := range pb.recs {
			if r.Attrs.IsControl() {
				continue
			}
			ev := event{rec: r, e: &inventoryv1.InventoryEvent{}}
			var err error
			if ev.id, err = decodeEvent(r, ev.e); err != nil {
				b.dead = append(b.dead, deadRecord{rec: r, err: err})
				continue
			}
			b.events = append(b.events, ev)
		}
	}
	return b
}

// store hands b to the sink until it lands or ctx ends.
func (l *loop) store(ctx context.Context, b *batch) error {
	what, maxBackoff, failed := l.sink.retrying()
	log := l.cfg.log.With("partitions", len(b.parts), "first_offset", firstOffset(b.parts))
	return retry(ctx, log, what, maxBackoff, failed, func() error {
		b.attempt++
		return l.sink.project(ctx, b)
	})
}

func firstOffset(parts []partBatch) int64 {
	for _, pb := range parts {
		if len(pb.recs) > 0 {
			return pb.recs[0].Offset
		}
	}
	return -1
}

// groupSource is the live consumer group, read raw: each partition's
// records go through a kafka.Resolver, which releases a transaction's
// records at its commit marker and drops them at its abort (or at a newer
// epoch of its producer), and a partition's position only ever reaches the
// first record it still holds.
type groupSource struct {
	cl  *kgo.Client
	log *slog.Logger
	// resolvers by partition, replaced when the partition is assigned
	// (the consumer starts again at the stored offset).
	mu        sync.Mutex
	resolvers map[int32]*kafka.Resolver
}

func (g *groupSource) reset(assigned map[string]map[int32]kgo.Offset) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ps := range assigned {
		for p := range ps {
			g.resolvers[p] = &kafka.Resolver{}
		}
	}
}

func (g *groupSource) resolver(p int32) *kafka.Resolver {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.resolvers[p]
	if r == nil {
		r = &kafka.Resolver{}
		g.resolvers[p] = r
	}
	return r
}

func (g *groupSource) poll(ctx context.Context, deadline time.Time, most int) ([]partBatch, error) {
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if !deadline.IsZero() {
		pctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	fetches := g.cl.PollRecords(pctx, most)
	if fetches.IsClientClosed() || ctx.Err() != nil {
		return nil, ctx.Err()
	}
	fetches.EachError(func(t string, p int32, err error) {
		switch {
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		case kafka.IsAuthorization(err):
			g.log.Error("fetch error", "topic", t, "partition", p, "error", err, "hint", kafka.ACLHint)
		default:
			g.log.Warn("fetch error", "topic", t, "partition", p, "error", err)
		}
	})
	var out []partBatch
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		r := g.resolver(fp.Partition)
		var released, controls []*kgo.Record
		for _, rec := range fp.Records {
			if rec.Attrs.IsControl() {
				controls = append(controls, rec)
			}
			released = r.Add(rec, released)
		}
		next := fp.Records[len(fp.Records)-1].Offset + 1
		if held, ok := r.HeldFrom(); ok {
			next = held
		}
		// The released records with the markers below the position, in
		// offset order: a batch of only markers still moves the stored
		// offset (decode skips them).
		recs := make([]*kgo.Record, 0, len(released)+len(controls))
		i := 0
		for _, c := range controls {
			if c.Offset >= next {
				break
			}
			for i < len(released) && released[i].Offset < c.Offset {
				recs = append(recs, released[i])
				i++
			}
			recs = append(recs, c)
		}
		recs = append(recs, released[i:]...)
		if len(recs) > 0 || next > fp.Records[0].Offset {
			out = append(out, partBatch{fp.Partition, recs, next})
		}
	})
	return out, nil
}

func (g *groupSource) done() bool { return false }
func (g *groupSource) release()   { g.cl.AllowRebalance() }

// assignOffsets starts each assigned partition at its stored next offset,
// or at the log's start when nothing is stored.
func assignOffsets(assigned map[string]map[int32]kgo.Offset, stored map[int32]int64) map[string]map[int32]kgo.Offset {
	out := map[string]map[int32]kgo.Offset{}
	for topic, parts := range assigned {
		out[topic] = map[int32]kgo.Offset{}
		for part := range parts {
			if o, ok := stored[part]; ok {
				out[topic][part] = kgo.NewOffset().At(o)
			} else {
				out[topic][part] = kgo.NewOffset().AtStart()
			}
		}
	}
	return out
}

// decodeEvent decodes a record into e and checks what every projection
// needs of it; it returns the parsed event_id.
func decodeEvent(r *kgo.Record, e *inventoryv1.InventoryEvent) (uuid.UUID, error) {
	if err := proto.Unmarshal(r.Value, e); err != nil {
		return uuid.UUID{}, fmt.Errorf("decode InventoryEvent: %w", err)
	}
	id, err := uuid.Parse(e.GetEventId())
	switch {
	case err != nil:
		return id, fmt.Errorf("event_id %q: %w", e.GetEventId(), err)
	case e.GetSkuId() == "" || e.GetStoreId() == "":
		return id, errors.New("event without sku_id or store_id")
	case e.GetSkuVersion() <= 0:
		return id, fmt.Errorf("event with sku_version %d", e.GetSkuVersion())
	case e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_UNSPECIFIED:
		return id, errors.New("event without event_type")
	case e.GetOccurredAt() == nil || e.GetRecordedAt() == nil:
		return id, errors.New("event without occurred_at or recorded_at")
	}
	// Years 1 to 9999, as BigQuery's TIMESTAMP and JSON's encoding take
	// them: beyond, the BigQuery projection could never write the batch.
	if err := errors.Join(e.GetOccurredAt().CheckValid(), e.GetRecordedAt().CheckValid()); err != nil {
		return id, fmt.Errorf("event time: %w", err)
	}
	return id, nil
}

// deadLetter copies records the consumer cannot project to the DLQ with
// headers naming the error (and its SQLSTATE, when Postgres refused the
// record) and the source. Callers do it before their offsets move past the
// records: a crash in between may dead-letter a record twice, never zero
// times.
func deadLetter(ctx context.Context, cl *kgo.Client, consumer string, recs []*kgo.Record, errs []error, log *slog.Logger) error {
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		h := []kgo.RecordHeader{
			{Key: "tally-dlq-error", Value: []byte(errs[i].Error())},
			{Key: "tally-dlq-consumer", Value: []byte(consumer)},
			{Key: "tally-source-topic", Value: []byte(r.Topic)},
			{Key: "tally-source-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: "tally-source-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
		}
		if pgErr := (*pgconn.PgError)(nil); errors.As(errs[i], &pgErr) {
			h = append(h, kgo.RecordHeader{Key: "tally-dlq-sqlstate", Value: []byte(pgErr.Code)})
		}
		out[i] = &kgo.Record{Topic: kafka.DLQTopic, Key: r.Key, Value: r.Value, Headers: append(h, r.Headers...)}
		log.Warn("record dead-lettered", "partition", r.Partition, "offset", r.Offset, "error", errs[i])
	}
	if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("dead-letter: %w", err)
	}
	return nil
}

func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// retry runs f until it succeeds or ctx ends, with backoff from 100 ms
// doubling to maxBackoff; failed counts each failure.
func retry(ctx context.Context, log *slog.Logger, what string, maxBackoff time.Duration, failed func(), f func() error) error {
	b := backoff.Backoff{Max: maxBackoff}
	return b.Retry(ctx, f, func(err error, next time.Duration) {
		failed()
		log.Warn(what+" failed; retrying", "error", err, "retry_in", next)
	})
}

// ensureDLQ creates the dead-letter topic if it is missing, with a finite
// retention (kafka.DLQRetention).
func ensureDLQ(ctx context.Context, brokers []string, sec *kafka.Security) error {
	cl, err := kgo.NewClient(kafka.Options(brokers, sec, nil)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = kafka.EnsureTopic(ctx, kadm.NewClient(cl), kafka.DLQTopic, 1, kafka.DLQTopicConfigs())
	return err
}

// replayLog feeds s the committed records from starts (nil: every
// partition's log start) up to each partition's last stable offset as of
// the call, through the loop's batch path, read by a kafka.CommittedReader.
// With advance the batches move the sink's stored offsets. after, when
// set, runs after each stored batch with the offsets passed so far (of
// total) and the records the batches held.
func replayLog(ctx context.Context, s sink, cfg loopConfig, starts map[int32]int64, advance bool, after func(passed, total, records int64)) error {
	if err := ensureDLQ(ctx, cfg.Brokers, cfg.Kafka); err != nil {
		return err
	}
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: cfg.Brokers, Security: cfg.Kafka, Topic: cfg.Topic, Starts: starts, Stall: time.Minute, Opts: cfg.fetch})
	if err != nil {
		return err
	}
	defer r.Close()
	// The client dead letters go through.
	cl, err := kgo.NewClient(kafka.Options(cfg.Brokers, cfg.Kafka, cfg.Logger)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	src := &readerSource{r: r, passed: r.Starts()}
	var total, records int64
	for p, end := range r.Ends() {
		total += max(end-src.passed[p], 0)
	}
	l := &loop{sink: s, cfg: cfg, cl: cl}
	return l.consume(ctx, src, advance, func(b *batch) {
		for _, pb := range b.parts {
			records += int64(len(pb.recs))
		}
		if after != nil {
			after(src.moved, total, records)
		}
	})
}

// readerSource is a replay's range of the log.
type readerSource struct {
	r      *kafka.CommittedReader
	passed map[int32]int64 // per partition, the offset passed so far
	moved  int64           // offsets passed so far, every partition
}

// poll reads on past deadline: a CommittedReader's poll is not to be cut
// short (collect checks the deadline between polls), nor bounded.
func (s *readerSource) poll(ctx context.Context, _ time.Time, _ int) ([]partBatch, error) {
	got, err := s.r.Poll(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]partBatch, len(got))
	for i, pb := range got {
		s.moved += pb.Next - s.passed[pb.Partition]
		s.passed[pb.Partition] = pb.Next
		out[i] = partBatch{pb.Partition, pb.Records, pb.Next}
	}
	return out, nil
}

func (s *readerSource) done() bool { return s.r.Done() }
func (s *readerSource) release()   {}
