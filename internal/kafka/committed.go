package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Resolver decides which records of one partition are committed, from the
// raw log (read_uncommitted, control records kept) alone: the records of a
// transaction are released when its commit marker arrives, dropped when its
// abort marker arrives, and released in offset order, as a read_committed
// consumer delivers them. It does not trust the broker's index of aborted
// transactions, so it reads a log correctly where that index and the markers
// disagree:
//
//   - A transactional record from a newer epoch of a producer ends that
//     producer's open transaction of an older epoch as aborted: an epoch is
//     bumped only by fencing or by a broker that aborted the transaction,
//     and Kafka never commits a transaction of a fenced epoch. (kfake aborts a
//     transaction left open by a crash without writing a marker and bumps the
//     epoch; read_committed clients then hide every later transaction of that
//     producer until a marker comes.)
//   - At the last stable offset every transaction below it is decided, so
//     one still open there was aborted without a marker (Finish).
type Resolver struct {
	queue []pending
	head  int
	open  map[int64]*txn // producer id -> its open transaction

	// Aborted counts the data records dropped as aborted.
	Aborted int
	// Unmarked counts the transactions decided as aborted without an abort
	// marker (by a newer epoch, or open at Finish).
	Unmarked int
}

type txnState int8

const (
	txnOpen txnState = iota
	txnCommitted
	txnAborted
)

type txn struct {
	producerID int64
	epoch      int16
	state      txnState
}

type pending struct {
	rec *kgo.Record
	txn *txn // nil for a record produced outside a transaction
}

// Add takes the partition's next record in offset order and appends to out
// the records it makes visible, in offset order.
func (r *Resolver) Add(rec *kgo.Record, out []*kgo.Record) []*kgo.Record {
	if r.open == nil {
		r.open = map[int64]*txn{}
	}
	switch {
	case rec.Attrs.IsControl():
		if t := r.open[rec.ProducerID]; t != nil {
			t.state = txnAborted
			if isCommitMarker(rec.Key) {
				t.state = txnCommitted
			}
			delete(r.open, rec.ProducerID)
		}
	case rec.Attrs.IsTransactional():
		t := r.open[rec.ProducerID]
		if t != nil && rec.ProducerEpoch > t.epoch {
			t.state = txnAborted
			r.Unmarked++
			t = nil
		}
		if t == nil {
			t = &txn{producerID: rec.ProducerID, epoch: rec.ProducerEpoch}
			r.open[rec.ProducerID] = t
		}
		r.queue = append(r.queue, pending{rec: rec, txn: t})
	default:
		r.queue = append(r.queue, pending{rec: rec})
	}
	return r.drain(out)
}

// Settle takes a record at or beyond the end of the read. It only decides
// the transactions already open, by a marker or a newer epoch of their
// producer, and queues nothing: what lies beyond the end is not read. (A
// transaction that began below the last stable offset is decided, but its
// marker may lie beyond it, after another producer's open transaction.)
func (r *Resolver) Settle(rec *kgo.Record, out []*kgo.Record) []*kgo.Record {
	t := r.open[rec.ProducerID]
	switch {
	case t == nil:
		return out
	case rec.Attrs.IsControl():
		t.state = txnAborted
		if isCommitMarker(rec.Key) {
			t.state = txnCommitted
		}
		delete(r.open, rec.ProducerID)
	case rec.Attrs.IsTransactional() && rec.ProducerEpoch > t.epoch:
		t.state = txnAborted
		r.Unmarked++
		delete(r.open, rec.ProducerID)
	}
	return r.drain(out)
}

// HeldFrom returns the offset of the first record held back (a record of
// an open transaction, or one after it); ok is false when none is held.
// A consumer's position is safe to store up to it, not beyond.
func (r *Resolver) HeldFrom() (offset int64, ok bool) {
	if r.head < len(r.queue) {
		return r.queue[r.head].rec.Offset, true
	}
	return 0, false
}

// Pending reports whether a transaction is open.
func (r *Resolver) Pending() bool { return len(r.open) > 0 }

// Finish declares the log decided up to here (the last stable offset): any
// transaction still open was aborted without a marker. It returns what that
// releases (nothing: aborted records are dropped) and resets the resolver.
func (r *Resolver) Finish(out []*kgo.Record) []*kgo.Record {
	for id, t := range r.open {
		t.state = txnAborted
		r.Unmarked++
		delete(r.open, id)
	}
	return r.drain(out)
}

// OpenTransactions returns the producer id and epoch of every transaction
// that has records and no marker yet, by producer id.
func (r *Resolver) OpenTransactions() map[int64]int16 {
	out := map[int64]int16{}
	for id, t := range r.open {
		out[id] = t.epoch
	}
	return out
}

func (r *Resolver) drain(out []*kgo.Record) []*kgo.Record {
	for r.head < len(r.queue) {
		p := r.queue[r.head]
		if p.txn != nil && p.txn.state == txnOpen {
			break
		}
		if p.txn != nil && p.txn.state == txnAborted {
			r.Aborted++
		} else {
			out = append(out, p.rec)
		}
		r.queue[r.head] = pending{}
		r.head++
	}
	if r.head == len(r.queue) {
		r.queue, r.head = r.queue[:0], 0
	}
	return out
}

// isCommitMarker reports whether a control record's key (version int16,
// type int16) says commit; anything unreadable counts as abort, as brokers
// do.
func isCommitMarker(key []byte) bool {
	return len(key) >= 4 && binary.BigEndian.Uint16(key[2:4]) == 1
}

// StallError is returned when a read to the end of a partition makes no
// progress for the stall timeout: the broker did not return the offsets
// between Offset and End.
type StallError struct {
	Topic     string
	Partition int32
	Offset    int64
	End       int64
	For       time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("reading %s[%d]: no progress at offset %d of %d for %s", e.Topic, e.Partition, e.Offset, e.End, e.For)
}

// Batch is what one Poll read of one partition.
type Batch struct {
	Partition int32
	// Records are the committed records, control records and aborted
	// records resolved away.
	Records []*kgo.Record
	// Next is the offset the read has reached (for progress). Records
	// below it that belong to a transaction whose marker has not been read
	// yet are delivered in a later batch.
	Next int64
}

// CommittedReader reads partitions of a topic from start offsets up to
// the last stable offset each has when the reader opens, and returns their
// committed records, resolving transactions itself (see Resolver). It is
// how Tally reads "to the end": the writers' rebuild, replays, audits and
// `tally check`.
type CommittedReader struct {
	cl        *kgo.Client
	topic     string
	stall     time.Duration
	starts    map[int32]int64
	ends      map[int32]int64
	hwms      map[int32]int64 // high watermarks: how far to look for markers
	next      map[int32]int64
	beyond    map[int32]int64     // how far past the end markers were looked for
	resolvers map[int32]*Resolver // partitions still being read
	done      map[int32]*Resolver // partitions read to their end
	progress  time.Time
	keepOpen  bool
	openAtEnd map[int32]map[int64]int16
}

// ReaderConfig configures a CommittedReader.
type ReaderConfig struct {
	// Brokers are the seed brokers.
	Brokers []string
	// Security is how to reach them; nil is plaintext.
	Security *Security
	// Topic is the topic to read.
	Topic string
	// Starts are the start offsets by partition; nil reads every partition
	// from its log start. A start below the log start reads from the log
	// start.
	Starts map[int32]int64
	// Stall is how long a read may make no progress before Poll fails
	// with a *StallError. Default 30s.
	Stall time.Duration
	// ToHighWatermark reads up to each partition's high watermark instead of
	// its last stable offset, and leaves transactions open at the end open
	// (see OpenAtEnd): for repairs and checks of the raw log.
	ToHighWatermark bool
	// Opts are extra client options (a logger, fetch sizes).
	Opts []kgo.Opt
}

// OpenCommittedReader lists the partitions' ends and starts reading.
func OpenCommittedReader(ctx context.Context, cfg ReaderConfig) (*CommittedReader, error) {
	if cfg.Stall <= 0 {
		cfg.Stall = 30 * time.Second
	}
	admCl, err := kgo.NewClient(Options(cfg.Brokers, cfg.Security, nil)...)
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(admCl)
	list := adm.ListCommittedOffsets
	if cfg.ToHighWatermark {
		list = adm.ListEndOffsets
	}
	ends, err := list(ctx, cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	var logStarts, hwms kadm.ListedOffsets
	if err == nil {
		// After the ends: every marker of a transaction that began below
		// a last stable offset is below this high watermark.
		hwms, err = adm.ListEndOffsets(ctx, cfg.Topic)
		if err == nil {
			err = hwms.Error()
		}
	}
	if err == nil {
		logStarts, err = adm.ListStartOffsets(ctx, cfg.Topic)
		if err == nil {
			err = logStarts.Error()
		}
	}
	admCl.Close()
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", cfg.Topic, err)
	}
	if len(ends[cfg.Topic]) == 0 {
		return nil, fmt.Errorf("topic %s not found", cfg.Topic)
	}
	r := &CommittedReader{
		topic: cfg.Topic, stall: cfg.Stall,
		starts: map[int32]int64{}, ends: map[int32]int64{}, next: map[int32]int64{},
		hwms: map[int32]int64{}, beyond: map[int32]int64{},
		resolvers: map[int32]*Resolver{}, done: map[int32]*Resolver{}, progress: time.Now(),
		keepOpen: cfg.ToHighWatermark, openAtEnd: map[int32]map[int64]int16{},
	}
	consume := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		start := int64(0)
		if ls, ok := logStarts.Lookup(cfg.Topic, o.Partition); ok {
			start = ls.Offset
		}
		if cfg.Starts != nil {
			s, ok := cfg.Starts[o.Partition]
			if !ok {
				return
			}
			start = max(start, s)
		}
		r.starts[o.Partition], r.ends[o.Partition], r.next[o.Partition] = start, o.Offset, start
		r.beyond[o.Partition] = o.Offset
		r.hwms[o.Partition] = o.Offset
		if h, ok := hwms.Lookup(cfg.Topic, o.Partition); ok {
			r.hwms[o.Partition] = max(h.Offset, o.Offset)
		}
		if start < o.Offset {
			consume[o.Partition] = kgo.NewOffset().At(start)
			r.resolvers[o.Partition] = &Resolver{}
		}
	})
	if len(consume) == 0 {
		return r, nil
	}
	r.cl, err = kgo.NewClient(append(append(Options(cfg.Brokers, cfg.Security, nil),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: consume}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond),
	), cfg.Opts...)...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Starts and Ends are the range the reader covers, by partition.
func (r *CommittedReader) Starts() map[int32]int64 { return maps.Clone(r.starts) }

// Ends are the last stable offsets the reader reads up to (exclusive).
func (r *CommittedReader) Ends() map[int32]int64 { return maps.Clone(r.ends) }

// Done reports whether every partition has been read to its end.
func (r *CommittedReader) Done() bool { return len(r.resolvers) == 0 }

// Unmarked is the number of transactions the reader found decided without a
// marker (see Resolver).
func (r *CommittedReader) Unmarked() int {
	n := 0
	for _, res := range r.done {
		n += res.Unmarked
	}
	for _, res := range r.resolvers {
		n += res.Unmarked
	}
	return n
}

// OpenAtEnd returns, by partition, the transactions (producer id -> epoch)
// that had records and no marker when the read reached the partition's end.
// Read to the last stable offset, these were aborted by the broker without a
// marker; read to the high watermark, they may also still be in flight.
func (r *CommittedReader) OpenAtEnd() map[int32]map[int64]int16 { return maps.Clone(r.openAtEnd) }

// Poll waits for more of the log and returns what it read, per partition.
// It returns nil, nil once Done.
func (r *CommittedReader) Poll(ctx context.Context) ([]Batch, error) {
	for !r.Done() {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := r.cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("read %s[%d]: %w", r.topic, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		var out []Batch
		moved := false
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := fp.Partition
			res := r.resolvers[p]
			if res == nil {
				return
			}
			b := Batch{Partition: p}
			end := r.ends[p]
			for _, rec := range fp.Records {
				switch {
				case rec.Offset < r.next[p] || rec.Offset < r.beyond[p] && rec.Offset >= end:
					continue // already seen
				case rec.Offset < end:
					b.Records = res.Add(rec, b.Records)
					r.next[p] = rec.Offset + 1
					moved = true
					continue
				}
				// At or past the end. A gap before it (records deleted or
				// compacted away) ends the read there.
				if r.next[p] < end {
					r.next[p], moved = end, true
				}
				if r.keepOpen || !res.Pending() {
					break
				}
				b.Records = res.Settle(rec, b.Records)
				r.beyond[p], moved = rec.Offset+1, true
			}
			if r.next[p] >= end && (r.keepOpen || !res.Pending() || r.beyond[p] >= r.hwms[p]) {
				if open := res.OpenTransactions(); len(open) > 0 {
					r.openAtEnd[p] = open
				}
				if !r.keepOpen {
					b.Records = res.Finish(b.Records)
				}
				r.finish(p)
				moved = true
			}
			b.Next = r.next[p]
			if len(b.Records) > 0 || moved {
				out = append(out, b)
			}
		})
		if moved {
			r.progress = time.Now()
		}
		if len(out) > 0 {
			return out, nil
		}
		if stalled := time.Since(r.progress); stalled > r.stall {
			p := slices.Min(slices.Collect(maps.Keys(r.resolvers)))
			return nil, &StallError{Topic: r.topic, Partition: p, Offset: r.next[p], End: r.ends[p], For: stalled.Round(time.Second)}
		}
	}
	return nil, nil
}

func (r *CommittedReader) finish(p int32) {
	r.done[p] = r.resolvers[p]
	delete(r.resolvers, p)
	r.cl.PauseFetchPartitions(map[string][]int32{r.topic: {p}})
}

// Close releases the client.
func (r *CommittedReader) Close() {
	if r.cl != nil {
		r.cl.Close()
	}
}
