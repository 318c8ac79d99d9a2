package command

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
)

// Snapshots: a writer starts from its partition's newest snapshot and folds
// only the log after it, so a takeover costs the partition's state and the
// events since the snapshot, not its whole history.
//
// A snapshot lives in partition p of the compacted topic
// kafka.SnapshotsTopic (the records are described in snapshot.proto). It is
// written in increments, each one Kafka transaction of the snapshot
// producer (transactional id SnapshotTransactionalID(p), fenced by the next
// owner like the events producer): the SKUs changed since the previous
// increment, the window's commands accepted since, tombstones for window
// segments that have expired, and the checkpoint saying which events offset
// it all reflects. Compaction keeps the newest record of each SKU, so the
// topic holds one state per SKU plus the window, whatever the history.
//
// The run goroutine only collects pointers (committed SKU states are never
// changed in place: a commit replaces them) and the new window entries;
// encoding and the transaction happen in the background while group
// commits go on. An increment that fails makes the next one full.
//
// Reading trusts nothing it cannot check: a record of another format, one
// whose CRC does not match, a checkpoint naming a missing segment, or a log
// after the checkpoint that does not continue the SKUs' versions means a
// full rebuild from offset 0, with a warning, and a full snapshot after it.

// Snapshot record headers and keys.
const (
	headerSnapshotFormat = "tally-snapshot-format"
	headerSnapshotCRC    = "tally-snapshot-crc32c"
	snapshotFormat       = "1"
	keyCheckpoint        = "c"
	prefixSKU            = "s\x00"
	prefixSegment        = "w\x00"
	// segmentCommands is the most window commands in one record (640 KB,
	// under Kafka's default 1 MB message limit).
	segmentCommands = 16384
	packedCommand   = 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SnapshotTransactionalID is the transactional.id of partition's snapshot
// producer.
func SnapshotTransactionalID(partition int32) string {
	return fmt.Sprintf("tally-snapshot-%d", partition)
}

// snapshot is what one increment writes.
type snapshot struct {
	full     bool
	skus     []*SKU
	commands []packed // the window's commands accepted since the last increment (all, when full)
	next     int64    // events offset the state reflects
	horizon  time.Time
	// segments are the window's segments after this increment, oldest
	// first; expired the ones it deletes; stale are keys a full snapshot
	// deletes (whatever an earlier snapshot left that this one replaces).
	segments       []segment
	newSegments    []uint64
	expired        []uint64
	stale          [][]byte
	windowCommands int
	totalSKUs      int
	events         int64 // the sum of the SKUs' versions
}

// segment is a window segment written to the snapshot: its number and the
// newest command in it (unix nanoseconds), after which it can go.
type segment struct {
	seq    uint64
	newest int64
}

// packed is one window command as a snapshot stores it.
type packed struct {
	key windowKey
	r   remembered
	at  int64
}

func (p packed) append(b []byte) []byte {
	b = append(b, p.key[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.r.fp))
	b = binary.BigEndian.AppendUint64(b, p.r.loc)
	return binary.BigEndian.AppendUint64(b, uint64(p.at))
}

func unpack(b []byte) packed {
	var p packed
	copy(p.key[:], b[:16])
	p.r.fp = uint32(binary.BigEndian.Uint64(b[16:]))
	p.r.loc = binary.BigEndian.Uint64(b[24:])
	p.at = int64(binary.BigEndian.Uint64(b[32:]))
	return p
}

func segmentKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixSegment), seq)
}

func skuSnapshot(s *SKU) *inventoryv1.WriterSkuSnapshot {
	out := &inventoryv1.WriterSkuSnapshot{SkuId: s.ID, Version: s.Version}
	for _, store := range slices.Sorted(maps.Keys(s.Stores)) {
		l := s.Stores[store]
		out.Stores = append(out.Stores, &inventoryv1.WriterStoreSnapshot{StoreId: store, OnHand: l.OnHand, Reserved: l.Reserved})
	}
	for _, id := range slices.Sorted(maps.Keys(s.Reservations)) {
		r := s.Reservations[id]
		out.Reservations = append(out.Reservations, &inventoryv1.WriterReservationSnapshot{
			ReservationId: id, StoreId: r.Store, Quantity: r.Quantity, ExpiresAt: timestamppb.New(r.ExpiresAt), Version: r.Version,
		})
	}
	return out
}

func skuOf(m *inventoryv1.WriterSkuSnapshot) *SKU {
	s := domain.NewSKU(m.GetSkuId())
	s.Version = m.GetVersion()
	for _, l := range m.GetStores() {
		s.Stores[l.GetStoreId()] = Level{OnHand: l.GetOnHand(), Reserved: l.GetReserved()}
	}
	for _, r := range m.GetReservations() {
		s.Reserve(r.GetReservationId(), Reservation{Store: r.GetStoreId(), Quantity: r.GetQuantity(), ExpiresAt: r.GetExpiresAt().AsTime(), Version: r.GetVersion()})
	}
	return s
}

// snapshotRecord is a record of the snapshot with its format and CRC.
func snapshotRecord(partition int32, key []byte, m proto.Message) (*kgo.Record, error) {
	var v []byte
	if m != nil {
		var err error
		if v, err = proto.Marshal(m); err != nil {
			return nil, err
		}
	}
	return &kgo.Record{Key: key, Value: v, Partition: partition, Headers: []kgo.RecordHeader{
		{Key: headerSnapshotFormat, Value: []byte(snapshotFormat)},
		{Key: headerSnapshotCRC, Value: binary.BigEndian.AppendUint32(nil, crc32.Checksum(v, castagnoli))},
	}}, nil
}

// records encodes the increment, checkpoint last.
func (s *snapshot) records(partition int32) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	add := func(key []byte, m proto.Message) error {
		r, err := snapshotRecord(partition, key, m)
		if err == nil {
			if m == nil {
				r.Value = nil // a tombstone
			}
			recs = append(recs, r)
		}
		return err
	}
	for _, k := range s.stale {
		if err := add(k, nil); err != nil {
			return nil, err
		}
	}
	for _, sku := range s.skus {
		if err := add([]byte(prefixSKU+sku.ID), skuSnapshot(sku)); err != nil {
			return nil, err
		}
	}
	for i, seq := range s.newSegments {
		part := s.commands[i*segmentCommands : min(len(s.commands), (i+1)*segmentCommands)]
		b := make([]byte, 0, len(part)*packedCommand)
		for _, p := range part {
			b = p.append(b)
		}
		if err := add(segmentKey(seq), &inventoryv1.WriterWindowSnapshot{Commands: b}); err != nil {
			return nil, err
		}
	}
	for _, seq := range s.expired {
		if err := add(segmentKey(seq), nil); err != nil {
			return nil, err
		}
	}
	cp := &inventoryv1.WriterCheckpoint{
		NextOffset: s.next, Skus: int64(s.totalSKUs), WindowCommands: int64(s.windowCommands), WrittenAt: timestamppb.Now(), Events: s.events,
	}
	if !s.horizon.IsZero() {
		cp.Horizon = timestamppb.New(s.horizon)
	}
	for _, g := range s.segments {
		cp.WindowSegments = append(cp.WindowSegments, g.seq)
	}
	if err := add([]byte(keyCheckpoint), cp); err != nil {
		return nil, err
	}
	return recs, nil
}

// snapshotter is a writer's snapshot state, owned by its run goroutine.
type snapshotter struct {
	producer *txnProducer
	dirty    map[string]struct{} // SKUs changed since the last increment
	appended uint64              // window commands appended when the last increment was taken
	segments []segment
	nextSeq  uint64
	full     bool // the next increment writes everything
	stale    [][]byte
	events   int       // events committed since the last increment
	last     time.Time // when the last increment was taken
	inFlight bool
	taken    *snapshot // the increment in flight
	failed   time.Time // the last failure: the next try waits an interval
	done     chan snapshotDone
	epoch    int // bumped by every open: answers of an earlier epoch are ignored
}

type snapshotDone struct {
	epoch int
	err   error
}

// openSnapshotProducer fences the previous owner's snapshot producer.
func (w *Writer) openSnapshotProducer(ctx context.Context) (*txnProducer, error) {
	cl, err := newTxnProducer(w.log.With("producer", "snapshots"), append(kafka.Options(w.cfg.Brokers, w.cfg.Kafka, nil),
		kgo.TransactionalID(SnapshotTransactionalID(w.partition)),
		kgo.TransactionTimeout(time.Minute),
		kgo.DefaultProduceTopic(w.cfg.SnapshotTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// A record batch must stay under the broker's message limit
		// (max.message.bytes, 1 MB by default on Kafka and kfake), which
		// bounds the whole compressed batch, not one record: franz-go's
		// default batch size (1,000,012 bytes) keeps every batch of these
		// records (a window segment is at most 640 KB) under it.
		kgo.MaxBufferedRecords(1<<20),
	)...)
	if err != nil {
		return nil, err
	}
	// The snapshots topic has a partition for each of the events topic's.
	adm := kadm.NewClient(cl.Client)
	topics, err := adm.ListTopics(ctx, w.cfg.Topic)
	if err == nil {
		err = topics.Error()
	}
	if err == nil {
		_, err = kafka.EnsureTopic(ctx, adm, w.cfg.SnapshotTopic, int32(len(topics[w.cfg.Topic].Partitions)), kafka.SnapshotTopicConfigs())
	}
	if err == nil {
		_, _, err = cl.ProducerID(ctx)
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("%w: fence partition %d's snapshot producer: %w", ErrUnavailable, w.partition, err)
	}
	return cl, nil
}

// loaded is a partition's state read from its snapshot.
type loaded struct {
	skus     map[string]*SKU
	window   *window
	next     int64
	segments []segment
	nextSeq  uint64
	stale    [][]byte // keys a full snapshot must delete
}

// errNoSnapshot: the partition has no snapshot to start from.
var errNoSnapshot = errors.New("no snapshot")

// loadSnapshot reads partition's snapshot. Any record it cannot trust makes
// it return an error (the caller rebuilds from offset 0); stale lists every
// key found, for the full snapshot that follows a rebuild.
func (w *Writer) loadSnapshot(ctx context.Context) (*loaded, [][]byte, error) {
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{
		Brokers: w.cfg.Brokers, Security: w.cfg.Kafka, Topic: w.cfg.SnapshotTopic, Starts: map[int32]int64{w.partition: 0}, Stall: w.cfg.RebuildStall,
	})
	if err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, nil, errNoSnapshot
		}
		return nil, nil, err
	}
	defer r.Close()
	latest := map[string]*kgo.Record{}
	for !r.Done() {
		batches, err := r.Poll(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, b := range batches {
			for _, rec := range b.Records {
				if rec.Value == nil {
					delete(latest, string(rec.Key))
				} else {
					latest[string(rec.Key)] = rec
				}
			}
		}
	}
	keys := make([][]byte, 0, len(latest))
	for k := range latest {
		keys = append(keys, []byte(k))
	}
	cpRec := latest[keyCheckpoint]
	if cpRec == nil {
		if len(latest) > 0 {
			return nil, keys, errors.New("records but no checkpoint")
		}
		return nil, keys, errNoSnapshot
	}
	cp := &inventoryv1.WriterCheckpoint{}
	if err := decodeSnapshotRecord(cpRec, cp); err != nil {
		return nil, keys, err
	}
	l := &loaded{skus: make(map[string]*SKU, len(latest)), window: newWindow(w.cfg.DedupeWindow), next: cp.GetNextOffset()}
	if cp.GetHorizon() != nil {
		l.window.horizon = cp.GetHorizon().AsTime()
	}
	for k, rec := range latest {
		if len(k) > len(prefixSKU) && k[:len(prefixSKU)] == prefixSKU {
			m := &inventoryv1.WriterSkuSnapshot{}
			if err := decodeSnapshotRecord(rec, m); err != nil {
				return nil, keys, err
			}
			if m.GetSkuId() != k[len(prefixSKU):] {
				return nil, keys, fmt.Errorf("record %q holds sku %q", k, m.GetSkuId())
			}
			l.skus[m.GetSkuId()] = skuOf(m)
		}
	}
	for _, seq := range cp.GetWindowSegments() {
		rec := latest[string(segmentKey(seq))]
		if rec == nil {
			return nil, keys, fmt.Errorf("window segment %d missing", seq)
		}
		m := &inventoryv1.WriterWindowSnapshot{}
		if err := decodeSnapshotRecord(rec, m); err != nil {
			return nil, keys, err
		}
		b := m.GetCommands()
		if len(b)%packedCommand != 0 || len(b) == 0 {
			return nil, keys, fmt.Errorf("window segment %d: %d bytes", seq, len(b))
		}
		var newest int64
		for i := 0; i < len(b); i += packedCommand {
			p := unpack(b[i:])
			l.window.put(p.key, p.r, time.Unix(0, p.at), nil)
			newest = max(newest, p.at)
		}
		l.segments = append(l.segments, segment{seq: seq, newest: newest})
		l.nextSeq = max(l.nextSeq, seq+1)
	}
	if int64(len(l.skus)) != cp.GetSkus() {
		return nil, keys, fmt.Errorf("checkpoint says %d SKUs, the snapshot has %d", cp.GetSkus(), len(l.skus))
	}
	var events int64
	for _, s := range l.skus {
		events += s.Version
	}
	if events != cp.GetEvents() {
		return nil, keys, fmt.Errorf("checkpoint says its state folds %d events, its SKUs' versions add up to %d", cp.GetEvents(), events)
	}
	// Keys not part of this snapshot (segments of another one) go with
	// the next full snapshot.
	live := map[string]bool{keyCheckpoint: true}
	for _, g := range l.segments {
		live[string(segmentKey(g.seq))] = true
	}
	for k := range latest {
		if !live[k] && (len(k) < len(prefixSKU) || k[:len(prefixSKU)] != prefixSKU) {
			l.stale = append(l.stale, []byte(k))
		}
	}
	return l, keys, nil
}

func decodeSnapshotRecord(rec *kgo.Record, m proto.Message) error {
	var format, crc []byte
	for _, h := range rec.Headers {
		switch h.Key {
		case headerSnapshotFormat:
			format = h.Value
		case headerSnapshotCRC:
			crc = h.Value
		}
	}
	if string(format) != snapshotFormat {
		return fmt.Errorf("record %q at offset %d is snapshot format %q, this version reads %q", rec.Key, rec.Offset, format, snapshotFormat)
	}
	if len(crc) != 4 || binary.BigEndian.Uint32(crc) != crc32.Checksum(rec.Value, castagnoli) {
		return fmt.Errorf("record %q at offset %d: CRC does not match its value (corrupt)", rec.Key, rec.Offset)
	}
	if err := proto.Unmarshal(rec.Value, m); err != nil {
		return fmt.Errorf("record %q at offset %d: %w", rec.Key, rec.Offset, err)
	}
	return nil
}

// maybeSnapshot starts an increment in the background when one is due and
// none is in flight. It runs in the run goroutine after a commit and on
// the expiry ticker.
func (w *Writer) maybeSnapshot() {
	sn := w.snap
	if sn == nil || sn.inFlight || time.Since(sn.failed) < w.cfg.SnapshotInterval {
		return
	}
	due := sn.full || sn.events >= w.cfg.SnapshotEvery || (sn.events > 0 && time.Since(sn.last) >= w.cfg.SnapshotInterval)
	if !due {
		return
	}
	s := w.takeSnapshot()
	sn.inFlight, sn.taken = true, s
	epoch, producer := sn.epoch, sn.producer
	go func() {
		start := time.Now()
		err := w.writeSnapshot(producer, s)
		w.cfg.Metrics.observeSnapshot(w.partition, s.full, time.Since(start), err)
		if err != nil {
			w.log.Warn("writing the partition snapshot failed; the next one is full", "error", err)
		} else {
			w.log.Debug("partition snapshot written", "full", s.full, "skus", len(s.skus), "window_commands", len(s.commands), "next_offset", s.next, "took", time.Since(start).Round(time.Millisecond))
		}
		sn.done <- snapshotDone{epoch: epoch, err: err}
	}()
}

// takeSnapshot collects an increment (everything, when a full one is due).
func (w *Writer) takeSnapshot() *snapshot {
	sn := w.snap
	s := &snapshot{full: sn.full, next: w.next, horizon: w.dedupe.horizon, totalSKUs: len(w.skus), windowCommands: w.dedupe.len(), events: w.events}
	if s.full {
		s.skus = make([]*SKU, 0, len(w.skus))
		for _, sku := range w.skus {
			s.skus = append(s.skus, sku)
		}
		s.commands = w.dedupe.packedSince(0)
		s.stale = sn.stale
		for _, g := range sn.segments {
			s.expired = append(s.expired, g.seq)
		}
		sn.segments = nil
	} else {
		s.skus = make([]*SKU, 0, len(sn.dirty))
		for id := range sn.dirty {
			s.skus = append(s.skus, w.skus[id])
		}
		s.commands = w.dedupe.packedSince(sn.appended)
		// Segments whose newest command the window has forgotten go.
		cutoff := w.cfg.Now().Add(-w.cfg.DedupeWindow).UnixNano()
		sn.segments = slices.DeleteFunc(sn.segments, func(g segment) bool {
			if g.newest < cutoff {
				s.expired = append(s.expired, g.seq)
				return true
			}
			return false
		})
	}
	for i := 0; i < len(s.commands); i += segmentCommands {
		part := s.commands[i:min(len(s.commands), i+segmentCommands)]
		g := segment{seq: sn.nextSeq}
		for _, p := range part {
			g.newest = max(g.newest, p.at)
		}
		sn.nextSeq++
		sn.segments = append(sn.segments, g)
		s.newSegments = append(s.newSegments, g.seq)
	}
	s.segments = slices.Clone(sn.segments)
	slices.SortFunc(s.skus, func(a, b *SKU) int { return cmp.Compare(a.ID, b.ID) })
	sn.dirty = map[string]struct{}{}
	sn.appended = w.dedupe.appended
	sn.events, sn.last, sn.full, sn.stale = 0, time.Now(), false, nil
	return s
}

// writeSnapshot commits one increment.
func (w *Writer) writeSnapshot(producer *txnProducer, s *snapshot) error {
	recs, err := s.records(w.partition)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := producer.begin(); err != nil {
		return err
	}
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return errors.Join(err, producer.EndTransaction(ctx, kgo.TryAbort))
	}
	return producer.commit(ctx)
}

// snapshotAnswered takes an increment's outcome in the run goroutine.
func (w *Writer) snapshotAnswered(d snapshotDone) {
	sn := w.snap
	if sn == nil || d.epoch != sn.epoch {
		return
	}
	sn.inFlight = false
	if d.err != nil {
		sn.full, sn.failed = true, time.Now()
		// What the failed increment was to delete, the full one deletes.
		if s := sn.taken; s != nil {
			sn.stale = append(sn.stale, s.stale...)
			for _, seq := range s.expired {
				sn.stale = append(sn.stale, segmentKey(seq))
			}
		}
	}
	sn.taken = nil
}

// markDirty records a committed change of sku for the next increment.
func (w *Writer) markDirty(sku string) {
	if w.snap != nil {
		w.snap.dirty[sku] = struct{}{}
	}
}

// closeSnapshots ends the writer's snapshots: when the writer was closed
// (not fenced), it first writes what changed since the last increment, so
// the next owner folds little of the log.
func (w *Writer) closeSnapshots() {
	sn := w.snap
	if sn == nil {
		return
	}
	defer sn.producer.Close()
	if sn.inFlight {
		select {
		case d := <-sn.done:
			w.snapshotAnswered(d)
		case <-time.After(10 * time.Second):
			return
		}
	}
	if w.lastErr != nil || (sn.events == 0 && !sn.full) {
		return
	}
	start := time.Now()
	s := w.takeSnapshot()
	err := w.writeSnapshot(sn.producer, s)
	w.cfg.Metrics.observeSnapshot(w.partition, s.full, time.Since(start), err)
	if err != nil {
		w.log.Warn("writing the partition snapshot at close failed", "error", err)
	}
}
