package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/backoff"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/tracing"
)

// WriterConfig configures partition writers.
type WriterConfig struct {
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Kafka is how to reach them: TLS and SASL. nil is plaintext.
	Kafka *kafka.Security
	// Topic is the events topic. Default kafka.EventsTopic.
	Topic string
	// CommitTimeout bounds one transaction (produce + commit). Default 10s.
	CommitTimeout time.Duration
	// MaxBatch is the most commands group-committed in one transaction.
	// Default 4096.
	MaxBatch int
	// DedupeWindow is how long (by recorded time) a partition remembers
	// the command ids it accepted, so a retry is answered "replayed"; see
	// window.go for the guarantee beyond it. Default 72h.
	DedupeWindow time.Duration
	// Logger receives writer events. Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, is updated by every writer.
	Metrics *Metrics
	// ExpiryInterval is how often a writer releases expired reservations.
	// Default 250ms.
	ExpiryInterval time.Duration
	// Now is the writer's clock. Default time.Now.
	Now func() time.Time
	// SnapshotTopic is the compacted topic of the writers' snapshots.
	// Default kafka.SnapshotsTopic.
	SnapshotTopic string
	// SnapshotEvery is how many committed events make a snapshot
	// increment due; SnapshotInterval how long, if any event was committed.
	// SnapshotEvery < 0 turns snapshots off (every start folds the whole
	// log). Defaults 100000 and 1m.
	SnapshotEvery    int
	SnapshotInterval time.Duration
	// RebuildStall is how long a rebuild may make no progress towards the
	// end of the log before it fails (and the writer retries). Default 30s.
	RebuildStall time.Duration
	// BeforeCommit, for tests only, runs in every transaction after its
	// records are produced and before it is committed: where a crash
	// leaves a transaction open with its records in the log.
	BeforeCommit func(partition int32)
}

func (c *WriterConfig) defaults() {
	if c.Topic == "" {
		c.Topic = kafka.EventsTopic
	}
	if c.SnapshotTopic == "" {
		c.SnapshotTopic = kafka.SnapshotsTopic
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 100_000
	}
	if c.SnapshotInterval <= 0 {
		c.SnapshotInterval = time.Minute
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 10 * time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 4096
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ExpiryInterval <= 0 {
		c.ExpiryInterval = 250 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultDedupeWindow is how long command ids are remembered by default.
const DefaultDedupeWindow = 72 * time.Hour

// TransactionalID is the transactional.id of a partition's writer. Every
// instance uses the same id for the same partition, so a new owner's
// InitProducerID fences the previous one.
func TransactionalID(partition int32) string { return fmt.Sprintf("tally-writer-%d", partition) }

// Result is what an accepted command left behind.
type Result struct {
	SKU      string
	Version  int64
	Stores   []StoreLevel
	EventIDs []string
	// Replayed is set when the result is remembered from an earlier command
	// with the same id: nothing was appended this time.
	Replayed bool
	// Negative is set when the command took available stock below zero
	// under allow_negative.
	Negative bool
	// ExpiresAt is when a new reservation expires.
	ExpiresAt time.Time
	// Delta is the command's net change to on_hand: the sum of its events'
	// quantity_delta.
	Delta int64
	// fingerprint is what the command asked for (zero when its events
	// predate fingerprints), checked against retries.
	fingerprint domain.Fingerprint
}

// StoreLevel is a store's stock after a command.
type StoreLevel struct {
	Store string
	Level
}

// resultOf summarises the events of one command.
func resultOf(events []*inventoryv1.InventoryEvent) *Result {
	r := &Result{SKU: events[0].GetSkuId(), fingerprint: domain.FingerprintOfEvent(events[0].GetCommandFingerprint())}
	for _, e := range events {
		r.addEvent(e)
	}
	return r
}

func (r *Result) addEvent(e *inventoryv1.InventoryEvent) {
	r.Version = e.GetSkuVersion()
	r.EventIDs = append(r.EventIDs, e.GetEventId())
	r.Stores = append(r.Stores, StoreLevel{Store: e.GetStoreId(), Level: Level{OnHand: e.GetOnHandAfter(), Reserved: e.GetReservedAfter()}})
	r.Negative = r.Negative || e.GetAllowNegative()
	r.Delta += e.GetQuantityDelta()
	if e.GetReservationExpiresAt() != nil {
		r.ExpiresAt = e.GetReservationExpiresAt().AsTime()
	}
}

type request struct {
	ctx  context.Context
	cmd  *Command
	done chan<- reply
	idx  int
}

type reply struct {
	idx int
	res *Result
	err error
	// from, when set instead of res, is a command accepted before whose
	// result the caller reads from the log (readResult).
	from *logRef
}

// logRef is where an accepted command's events are.
type logRef struct {
	partition int32
	offset    int64
	events    int
	sku, id   string // the command's, checked against what the log holds
}

// replayReads bounds the retries answered from the log at once: each
// reads with a client of its own.
var replayReads = make(chan struct{}, 8)

// Writer is the only writer of one partition: it holds the state of every
// SKU in the partition, decides commands against it and group-commits the
// events in Kafka transactions.
type Writer struct {
	cfg       WriterConfig
	partition int32
	log       *slog.Logger

	mu     sync.RWMutex // guards closed against concurrent submits
	closed bool         // reqs is closed: by Close, or by stop
	reqs   chan []*request
	// stopped is closed when run takes no more requests, done when the
	// writer has also answered what was queued and let go of its state.
	stopped chan struct{}
	done    chan struct{}
	lastErr error // set by run before stopped closes

	// Owned by the run goroutine after OpenWriter returns.
	producer *txnProducer
	skus     map[string]*SKU
	dedupe   *window
	next     int64        // the events offset after the last committed transaction's records
	events   int64        // events folded into the state: the sum of the SKUs' versions
	snap     *snapshotter // nil: snapshots off
	// reserving are the SKUs with active reservations, which expiry scans.
	reserving map[string]struct{}
}

// OpenWriter takes over partition: it fences any previous writer of it (its
// next commit fails), rebuilds the partition's state from the log
// (read_committed) and starts accepting commands.
func OpenWriter(ctx context.Context, cfg WriterConfig, partition int32) (*Writer, error) {
	cfg.defaults()
	w := &Writer{
		cfg:       cfg,
		partition: partition,
		log:       cfg.Logger.With("partition", partition),
		reqs:      make(chan []*request, 256),
		stopped:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	if err := w.open(ctx); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// open fences the previous owner and rebuilds state.
func (w *Writer) open(ctx context.Context) error {
	start := time.Now()
	producer, err := newTxnProducer(w.log, append(kafka.Options(w.cfg.Brokers, w.cfg.Kafka, nil),
		kgo.TransactionalID(TransactionalID(w.partition)),
		kgo.TransactionTimeout(w.cfg.CommitTimeout+5*time.Second),
		kgo.DefaultProduceTopic(w.cfg.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(4*w.cfg.MaxBatch+1024),
		kgo.ProducerBatchMaxBytes(8<<20),
		kgo.RecordRetries(3),
	)...)
	if err != nil {
		return err
	}
	// InitProducerID: from here on the previous owner's transactions fail
	// and its open transaction, if any, is aborted, so the log below the
	// last stable offset is final.
	if _, _, err := producer.ProducerID(ctx); err != nil {
		producer.Close()
		return fmt.Errorf("%w: fence partition %d: %w", ErrUnavailable, w.partition, err)
	}
	var snapProducer *txnProducer
	if w.cfg.SnapshotEvery > 0 {
		if snapProducer, err = w.openSnapshotProducer(ctx); err != nil {
			producer.Close()
			return err
		}
	}
	st, err := w.restore(ctx)
	if err != nil {
		producer.Close()
		if snapProducer != nil {
			snapProducer.Close()
		}
		return err
	}
	w.producer, w.skus, w.dedupe, w.next = producer, st.skus, st.window, st.next
	w.reserving, w.events = map[string]struct{}{}, 0
	for id, sku := range st.skus {
		w.track(id, sku)
		w.events += sku.Version
	}
	if snapProducer != nil {
		epoch := 0
		if w.snap != nil {
			w.snap.producer.Close()
			epoch = w.snap.epoch + 1
		}
		if st.dirty == nil {
			st.dirty = map[string]struct{}{}
		}
		w.snap = &snapshotter{producer: snapProducer, dirty: st.dirty, appended: st.appended, segments: st.segments,
			nextSeq: st.nextSeq, full: st.full, stale: st.stale, last: time.Now(), done: make(chan snapshotDone, 1), epoch: epoch,
			events: st.events} // a long tail folded at open makes the next increment due
	}
	took := time.Since(start)
	w.cfg.Metrics.observeOpen(w.partition, st.fromSnapshot, took)
	w.cfg.Metrics.observeDedupe(w.partition, st.window.len())
	w.log.Info("partition writer ready", "skus", len(st.skus), "from_snapshot", st.fromSnapshot, "snapshot_offset", st.snapshotAt,
		"events_replayed", st.events, "dedupe_commands", st.window.len(), "took", took.Round(time.Millisecond))
	return nil
}

// restored is the state a writer starts from.
type restored struct {
	loaded
	fromSnapshot bool
	snapshotAt   int64 // the snapshot's offset
	events       int   // folded from the log
	full         bool  // no snapshot to build on: the next one is full
	// dirty are the SKUs the log after the snapshot changed, appended the
	// window's commands before it: what the next increment must add.
	dirty    map[string]struct{}
	appended uint64
}

// restore builds the partition's state: from its snapshot and the log
// after it when there is one it can trust, else from the whole log.
func (w *Writer) restore(ctx context.Context) (*restored, error) {
	var keys [][]byte
	if w.cfg.SnapshotEvery > 0 {
		l, ks, err := w.loadSnapshot(ctx)
		keys = ks
		switch {
		case err == nil:
			// What the log after the snapshot changes goes into the next
			// increment: the SKUs it touches and the commands it adds.
			appended, touched := l.window.appended, map[string]struct{}{}
			n, next, err := w.fold(ctx, l.next, l.skus, l.window, touched)
			if err == nil && next < l.next {
				// The log ends before the snapshot's offset: not the log
				// the snapshot was taken of (a recreated topic).
				err = fmt.Errorf("%w: the snapshot reflects the log up to offset %d, the log ends at %d", errVersionGap, l.next, next)
			}
			if err == nil {
				return &restored{loaded: loaded{skus: l.skus, window: l.window, next: next, segments: l.segments, nextSeq: l.nextSeq, stale: l.stale},
					fromSnapshot: true, snapshotAt: l.next, events: n, dirty: touched, appended: appended}, nil
			}
			if !errors.Is(err, errVersionGap) {
				return nil, err
			}
			w.log.Warn("the log after the partition's snapshot does not continue it; snapshot ignored, rebuilding from offset 0", "snapshot_offset", l.next, "error", err)
		case errors.Is(err, errNoSnapshot):
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: read partition %d's snapshot: %w", ErrUnavailable, w.partition, err)
		default:
			w.log.Warn("partition snapshot ignored; rebuilding from offset 0", "error", err)
		}
	}
	st := &restored{loaded: loaded{skus: map[string]*SKU{}, window: newWindow(w.cfg.DedupeWindow)}, full: true}
	n, next, err := w.fold(ctx, 0, st.skus, st.window, nil)
	if err != nil {
		if errors.Is(err, errVersionGap) {
			w.cfg.Metrics.observeRebuildFailure(w.partition, "version_gap")
			w.log.Error("partition log is not a gap-free sequence of versions; the partition takes no commands until it is repaired", "error", err)
		}
		return nil, err
	}
	st.next, st.events = next, n
	// The full snapshot that follows deletes whatever is there and is not
	// rewritten by it.
	for _, k := range keys {
		if id, ok := strings.CutPrefix(string(k), prefixSKU); !ok || st.skus[id] == nil {
			st.stale = append(st.stale, k)
		}
	}
	return st, nil
}

// errVersionGap: the log does not continue the state's versions.
var errVersionGap = errors.New("versions not gap-free")

// fold folds the partition's committed events from offset from into skus
// and dedupe, and returns how many it folded and the offset it reached. It
// reads the raw log up to the last stable offset and resolves transactions
// itself (kafka.CommittedReader), so a transaction the broker aborted
// without a marker can neither hide the records after it nor stop the read.
// A SKU whose versions do not continue (1, 2, 3 … from the state's) fails
// it with errVersionGap: a writer must never append on a state it cannot
// trust.
func (w *Writer) fold(ctx context.Context, from int64, skus map[string]*SKU, dedupe *window, touched map[string]struct{}) (int, int64, error) {
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{
		Brokers: w.cfg.Brokers, Security: w.cfg.Kafka, Topic: w.cfg.Topic, Starts: map[int32]int64{w.partition: from},
		Stall: w.cfg.RebuildStall,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%w: rebuild partition %d: %w", ErrUnavailable, w.partition, err)
	}
	defer r.Close()
	n := 0
	var (
		lastKey    windowKey
		lastOffset int64
		lastN      int
		lastFP     domain.Fingerprint
	)
	for !r.Done() {
		batches, err := r.Poll(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.cfg.Metrics.observeRebuildFailure(w.partition, "stalled")
				w.log.Error("partition rebuild cannot reach the end of the log", "error", err)
			}
			return 0, 0, fmt.Errorf("%w: rebuild partition %d: %w", ErrUnavailable, w.partition, err)
		}
		for _, b := range batches {
			for _, rec := range b.Records {
				e := &inventoryv1.InventoryEvent{}
				if err := proto.Unmarshal(rec.Value, e); err != nil {
					// Not ours (the projectors dead-letter such records);
					// it changes no state.
					w.log.Warn("undecodable record skipped in rebuild", "offset", rec.Offset, "error", err)
					continue
				}
				sku := skus[e.GetSkuId()]
				if sku == nil {
					sku = domain.NewSKU(e.GetSkuId())
					skus[e.GetSkuId()] = sku
				}
				if err := sku.Apply(e); err != nil {
					return 0, 0, fmt.Errorf("%w: %w: rebuild partition %d at offset %d (event %s): %w", ErrUnavailable, errVersionGap, w.partition, rec.Offset, e.GetEventId(), err)
				}
				n++
				if n%65536 == 0 {
					dedupe.evict(w.cfg.Now()) // a long fold keeps only the window, not the history's commands
				}
				if touched != nil {
					touched[e.GetSkuId()] = struct{}{}
				}
				key := keyOf(e.GetSkuId(), e.GetCommandId())
				if key == lastKey && rec.Offset == lastOffset+int64(lastN) {
					lastN++ // the second event of a transfer
				} else {
					lastKey, lastOffset, lastN, lastFP = key, rec.Offset, 1, domain.FingerprintOfEvent(e.GetCommandFingerprint())
				}
				dedupe.put(key, rememberedOf(lastFP, lastOffset, lastN), e.GetRecordedAt().AsTime(), nil)
			}
		}
	}
	if u := r.Unmarked(); u > 0 {
		w.log.Warn("transactions without a marker read as aborted", "transactions", u)
	}
	dedupe.evict(w.cfg.Now())
	return n, r.Ends()[w.partition], nil
}

// Do submits one command and waits for its outcome.
func (w *Writer) Do(ctx context.Context, cmd *Command) (*Result, error) {
	ch := make(chan reply, 1)
	if err := w.submit([]*request{{ctx: ctx, cmd: cmd, done: ch}}); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.from != nil {
			return w.cfg.readResult(ctx, r.from)
		}
		return r.res, r.err
	case <-ctx.Done():
		// The command may still commit; a retry with its id tells.
		return nil, ctx.Err()
	}
}

// readResult answers a retry of a command the window remembers but whose
// result it no longer keeps: from the command's events, read back from the
// log (read_committed: they are committed). It runs in the caller's
// goroutine, never the writer's.
func (c *WriterConfig) readResult(ctx context.Context, ref *logRef) (*Result, error) {
	c.Metrics.observeReplayRead()
	select {
	case replayReads <- struct{}{}:
		defer func() { <-replayReads }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cl, err := kgo.NewClient(append(kafka.Options(c.Brokers, c.Kafka, nil),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{c.Topic: {ref.partition: kgo.NewOffset().At(ref.offset)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var events []*inventoryv1.InventoryEvent
	for len(events) < ref.events {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, fe := range fs.Errors() {
			return nil, fmt.Errorf("%w: read the original events of a retried command at offset %d of partition %d: %w", ErrUnavailable, ref.offset, ref.partition, fe.Err)
		}
		for it := fs.RecordIter(); !it.Done() && len(events) < ref.events; {
			rec := it.Next()
			if rec.Offset < ref.offset {
				continue
			}
			if len(events) == 0 && rec.Offset != ref.offset {
				return nil, fmt.Errorf("%w: the events of a retried command are no longer at offset %d of partition %d (the log starts later)", ErrUnavailable, ref.offset, ref.partition)
			}
			e := &inventoryv1.InventoryEvent{}
			if err := proto.Unmarshal(rec.Value, e); err != nil {
				return nil, fmt.Errorf("the event of a retried command at offset %d of partition %d: %w", rec.Offset, ref.partition, err)
			}
			if e.GetCommandId() != ref.id || e.GetSkuId() != ref.sku {
				return nil, fmt.Errorf("offset %d of partition %d is not the event of the retried command", rec.Offset, ref.partition)
			}
			events = append(events, e)
		}
	}
	return resultOf(events).replayed(), nil
}

// submit queues requests in order; they reply on their done channels.
func (w *Writer) submit(reqs []*request) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		select {
		case <-w.stopped:
			return w.err() // run has ended: lastErr, if any, is final
		default:
			return ErrShuttingDown // Close is draining the queue
		}
	}
	select {
	case w.reqs <- reqs:
		return nil
	case <-w.stopped:
		return w.err()
	}
}

func (w *Writer) err() error {
	if w.lastErr != nil {
		return fmt.Errorf("%w: partition %d writer stopped: %w", ErrUnavailable, w.partition, w.lastErr)
	}
	return ErrShuttingDown
}

// Done is closed when the writer has stopped, by Close or by losing the
// partition (fenced), and has let go of the partition's state.
func (w *Writer) Done() <-chan struct{} { return w.done }

// Close stops taking commands, commits what is queued, and releases the
// partition. It waits for the drain until ctx ends.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) run() {
	defer w.stop()
	var batch []*request
	expiry := time.NewTicker(w.cfg.ExpiryInterval)
	defer expiry.Stop()
	for {
		var (
			reqs     []*request
			snapDone <-chan snapshotDone
		)
		if w.snap != nil {
			snapDone = w.snap.done
		}
		select {
		case more, ok := <-w.reqs:
			if !ok {
				return
			}
			reqs = more
		case d := <-snapDone:
			w.snapshotAnswered(d)
			continue
		case <-expiry.C:
			w.maybeSnapshot()
			if reqs = w.expired(); len(reqs) == 0 {
				continue
			}
		}
		batch = append(batch[:0], reqs...)
		// Group commit: everything that queued while the previous
		// transaction was in flight goes into this one.
	drain:
		for len(batch) < w.cfg.MaxBatch {
			select {
			case more, ok := <-w.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, more...)
			default:
				break drain
			}
		}
		if err := w.commit(batch); err != nil {
			if w.recover(err) != nil {
				return
			}
			continue
		}
		w.maybeSnapshot()
	}
}

// stop ends the writer when run returns, whether Close asked or the writer
// stopped on its own (fenced, or closed while recovering). Nobody closes a
// writer that stopped on its own, so stop does what Close would: it refuses
// further submits, answers what is still queued, and drops the producer and
// the partition's state (the SKU map and the dedupe window), which must not
// outlive the writer's usefulness however long a *Writer stays referenced.
func (w *Writer) stop() {
	close(w.stopped) // submits blocked on a full queue give up and unlock mu
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	// Closed and no submit in flight: this drain ends.
	err := w.err()
	for reqs := range w.reqs {
		for _, r := range reqs {
			r.done <- reply{idx: r.idx, err: err}
		}
	}
	w.producer.Close()
	w.closeSnapshots()
	w.skus, w.dedupe, w.reserving = nil, nil, nil
	close(w.done)
}

// track keeps the set of SKUs with active reservations current.
func (w *Writer) track(id string, sku *SKU) {
	if len(sku.Reservations) > 0 {
		w.reserving[id] = struct{}{}
	} else {
		delete(w.reserving, id)
	}
}

// expired returns release requests for every reservation past its expiry.
// Their outcomes go nowhere: a release that loses a race with a commit is
// simply not needed any more.
func (w *Writer) expired() []*request {
	now := w.cfg.Now()
	var out []*request
	for id := range w.reserving {
		for _, c := range w.skus[id].Expired(now, KindReleaseReservation) {
			out = append(out, &request{ctx: context.Background(), cmd: c, done: make(chan reply, 1)})
		}
	}
	if len(out) > 0 {
		w.log.Debug("releasing expired reservations", "count", len(out))
	}
	return out
}

// recover reopens the writer after a failed transaction: the commit may or
// may not have landed, so the only truth is the log. It returns an error
// when the partition is lost (fenced) or the writer is closing.
func (w *Writer) recover(cause error) error {
	w.producer.Close()
	if isFenced(cause) {
		w.log.Error("partition writer fenced by a newer owner; stopping", "error", cause)
		// run returns and stop answers what is queued.
		w.lastErr = fmt.Errorf("moved to another writer: %w", cause)
		return cause
	}
	w.log.Warn("transaction failed; rebuilding partition state from the log", "error", cause)
	var b backoff.Backoff
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.open(ctx)
		cancel()
		if err == nil {
			return nil
		}
		d := b.Next()
		w.log.Warn("reopening partition writer failed", "error", err, "retry_in", d)
		// Commands that queue meanwhile are answered Unavailable rather
		// than left waiting.
		if !w.failQueuedFor(d, fmt.Errorf("%w: partition %d is recovering", ErrUnavailable, w.partition)) {
			w.lastErr = cause
			return cause
		}
	}
}

// failQueuedFor answers queued requests with err for d. It returns false
// when the writer was closed meanwhile.
func (w *Writer) failQueuedFor(d time.Duration, err error) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case reqs, ok := <-w.reqs:
			if !ok {
				return false
			}
			for _, r := range reqs {
				r.done <- reply{idx: r.idx, err: err}
			}
		case <-t.C:
			return true
		}
	}
}

func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// commit decides a batch against tentative state, appends the events in one
// transaction and answers every request only once the transaction's fate is
// known. On failure nothing of the batch is applied and all are answered
// Unavailable; the error is returned so the writer rebuilds.
func (w *Writer) commit(batch []*request) error {
	start := time.Now()
	now := w.cfg.Now().UTC()
	overlay := map[string]*SKU{}
	// pending are the batch's accepted commands: their results and the
	// index of their first record.
	type accepted struct {
		res   *Result
		first int
	}
	pending := map[windowKey]accepted{}
	var order []windowKey // pending's keys in batch order
	replies := make([]reply, len(batch))
	var recs []*kgo.Record
	var spans []trace.Span
	defer func() {
		for _, span := range spans {
			span.SetAttributes(attribute.Int("tally.batch_records", len(recs)))
			span.End()
		}
	}()
	w.dedupe.evict(now)
	for i, r := range batch {
		replies[i].idx = r.idx
		if err := r.ctx.Err(); err != nil {
			replies[i].err = err // gave up before we decided: never applied
			continue
		}
		key := keyOf(r.cmd.SKU, r.cmd.ID)
		if a, ok := pending[key]; ok {
			replies[i].res, replies[i].err = a.res.replay(r.cmd)
			continue
		}
		if rem, res, ok := w.dedupe.get(key); ok {
			switch {
			case !rem.matches(r.cmd):
				replies[i].err = &CommandIDReusedError{SKU: r.cmd.SKU, CommandID: r.cmd.ID}
			case res != nil:
				replies[i].res = res.replayed()
			default:
				replies[i].from = &logRef{partition: w.partition, offset: rem.offset(), events: rem.events(), sku: r.cmd.SKU, id: r.cmd.ID}
			}
			continue
		}
		if w.dedupe.tooOld(r.cmd) {
			replies[i].err = &CommandTooOldError{SKU: r.cmd.SKU, CommandID: r.cmd.ID, OccurredAt: r.cmd.OccurredAt, RememberedSince: w.dedupe.horizon}
			continue
		}
		sku := overlay[r.cmd.SKU]
		if sku == nil {
			if cur := w.skus[r.cmd.SKU]; cur != nil {
				sku = cur.Clone()
			} else {
				sku = domain.NewSKU(r.cmd.SKU)
			}
			overlay[r.cmd.SKU] = sku
		}
		events, err := decide(sku, r.cmd, now, newEventID)
		if err != nil {
			replies[i].err = err
			continue
		}
		// A traced command's span covers its batch's transaction; its
		// records carry it on to the projector.
		headers := []kgo.RecordHeader{
			{Key: kafka.HeaderSchema, Value: []byte(kafka.EventSchema)},
			{Key: kafka.HeaderSchemaVersion, Value: []byte(kafka.EventSchemaVersion)},
		}
		if trace.SpanContextFromContext(r.ctx).IsSampled() {
			sctx, span := tracing.Tracer().Start(r.ctx, "tally.writer.append", trace.WithTimestamp(start),
				trace.WithAttributes(attribute.String("tally.sku", r.cmd.SKU), attribute.Int("tally.partition", int(w.partition)),
					attribute.Int64("tally.sku_version", events[len(events)-1].GetSkuVersion())))
			spans = append(spans, span)
			if h, ok := tracing.RecordHeader(sctx); ok {
				headers = append(headers, h)
			}
		}
		first := len(recs)
		for _, e := range events {
			if err := sku.Apply(e); err != nil {
				panic(err) // decide and Apply disagree: a bug, not an input
			}
			v, err := proto.Marshal(e)
			if err != nil {
				panic(err)
			}
			recs = append(recs, &kgo.Record{
				Key:       []byte(e.GetSkuId()),
				Value:     v,
				Partition: w.partition,
				Timestamp: now,
				Headers:   headers,
			})
		}
		res := resultOf(events)
		pending[key] = accepted{res: res, first: first}
		order = append(order, key)
		replies[i].res = res
	}
	if len(recs) > 0 {
		if err := w.transact(recs); err != nil {
			for _, span := range spans {
				span.SetStatus(codes.Error, err.Error())
			}
			w.cfg.Metrics.observeCommit(w.partition, len(recs), time.Since(start), err)
			fail := fmt.Errorf("%w: %w", ErrUnavailable, err)
			for i, r := range batch {
				r.done <- reply{idx: replies[i].idx, err: fail}
			}
			return err
		}
		for id, sku := range overlay {
			w.skus[id] = sku
			w.track(id, sku)
			w.markDirty(id)
		}
		w.next = recs[len(recs)-1].Offset + 1
		w.events += int64(len(recs))
		if w.snap != nil {
			w.snap.events += len(recs)
		}
		for _, key := range order {
			a := pending[key]
			w.dedupe.put(key, rememberedOf(a.res.fingerprint, recs[a.first].Offset, len(a.res.EventIDs)), now, a.res)
		}
		w.cfg.Metrics.observeDedupe(w.partition, w.dedupe.len())
	}
	w.cfg.Metrics.observeCommit(w.partition, len(recs), time.Since(start), nil)
	for i, r := range batch {
		w.cfg.Metrics.observeOutcome(replies[i].err, replies[i].from != nil || replies[i].res != nil && replies[i].res.Replayed)
		r.done <- replies[i]
	}
	return nil
}

func (w *Writer) transact(recs []*kgo.Record) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.CommitTimeout)
	defer cancel()
	if err := w.producer.begin(); err != nil {
		return err
	}
	if err := w.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		if aerr := w.producer.EndTransaction(ctx, kgo.TryAbort); aerr != nil {
			return errors.Join(err, aerr)
		}
		return err
	}
	if w.cfg.BeforeCommit != nil {
		w.cfg.BeforeCommit(w.partition)
	}
	return w.producer.commit(ctx)
}

func (r *Result) replayed() *Result {
	c := *r
	c.Replayed = true
	return &c
}

func newEventID() string { return uuid.Must(uuid.NewV7()).String() }
