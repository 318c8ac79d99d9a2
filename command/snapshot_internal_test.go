package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/command/domain"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
)

// snapshotBroker starts a broker with a one-partition events topic.
func snapshotBroker(t *testing.T) []string {
	t.Helper()
	k, err := broker.Start("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kafka.EnsureTopic(t.Context(), kadm.NewClient(cl), kafka.EventsTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	return k.Addrs()
}

// randomHistory sends n random commands of every kind that changes
// state (receipts, sales, transfers, adjustments, counts, reservations
// committed, released and left to expire) over a few SKUs and stores.
func randomHistory(t *testing.T, w *Writer, rng *rand.Rand, prefix string, n int) {
	t.Helper()
	stores := []string{"S1", "S2", "S3"}
	var open []*Command // reservations made
	for i := range n {
		sku := fmt.Sprintf("sku-%d", rng.IntN(40))
		c := &Command{ID: fmt.Sprintf("%s-%d", prefix, i), SKU: sku, Store: stores[rng.IntN(3)], Quantity: 1 + rng.Int64N(5)}
		switch k := rng.IntN(10); {
		case k < 3:
			c.Kind = KindReceipt
		case k < 5:
			c.Kind = KindSale
		case k == 5:
			c.Kind, c.ToStore = KindTransfer, stores[(rng.IntN(2)+1+indexOf(stores, c.Store))%3]
		case k == 6:
			c.Kind, c.Quantity, c.AdjustmentReason = KindAdjustment, rng.Int64N(7)-3, 1
			if c.Quantity == 0 {
				c.Quantity = 1
			}
		case k == 7:
			c.Kind, c.ReservationID, c.TTL = KindReserve, "r"+c.ID, time.Duration(1+rng.IntN(3))*time.Second
			open = append(open, c)
		case k == 8 && len(open) > 0:
			r := open[rng.IntN(len(open))]
			c.Kind, c.SKU, c.ReservationID, c.Store, c.Quantity = []Kind{KindCommitReservation, KindReleaseReservation}[rng.IntN(2)], r.SKU, r.ReservationID, "", 0
		default:
			c.Kind = KindReceipt
		}
		_, _ = w.Do(t.Context(), c) // refusals (no stock, reservation gone) are part of a history
	}
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// restoredBy restores partition 0's state as a new owner would, with
// snapshots on or off (the whole log).
func restoredBy(t *testing.T, cfg WriterConfig, snapshots bool) *restored {
	t.Helper()
	if !snapshots {
		cfg.SnapshotEvery = -1
	}
	cfg.defaults()
	w := &Writer{cfg: cfg, log: cfg.Logger}
	st, err := w.restore(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sameState(t *testing.T, what string, got, want *restored) {
	t.Helper()
	if !reflect.DeepEqual(got.skus, want.skus) {
		for id, s := range want.skus {
			if !reflect.DeepEqual(got.skus[id], s) {
				t.Errorf("%s: sku %s is %+v, the whole log says %+v", what, id, got.skus[id], s)
			}
		}
		t.Fatalf("%s: %d SKUs, the whole log has %d", what, len(got.skus), len(want.skus))
	}
	if !reflect.DeepEqual(got.window.m, want.window.m) || !got.window.horizon.Equal(want.window.horizon) {
		t.Fatalf("%s: window of %d commands (horizon %v), the whole log's has %d (horizon %v)", what, got.window.len(), got.window.horizon, want.window.len(), want.window.horizon)
	}
	if got.next != want.next {
		t.Fatalf("%s: next offset %d, the whole log's %d", what, got.next, want.next)
	}
}

// A writer restarted from its snapshot and the log after it has exactly
// the state of one that folds the whole log: every SKU (levels, reserved,
// reservations, version), the dedupe window and where the log ends.
func TestRestartFromSnapshotEqualsFullRebuild(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			brokers := snapshotBroker(t)
			reg := prometheus.NewRegistry()
			cfg := WriterConfig{Brokers: brokers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SnapshotEvery: 40, SnapshotInterval: time.Hour,
				ExpiryInterval: 100 * time.Millisecond, Metrics: NewMetrics(reg)}
			rng := rand.New(rand.NewPCG(seed, 5))
			w, err := OpenWriter(t.Context(), cfg, 0)
			if err != nil {
				t.Fatal(err)
			}
			randomHistory(t, w, rng, "a", 400)
			time.Sleep(1200 * time.Millisecond) // some reservations expire: releases by the writer
			randomHistory(t, w, rng, "b", 200)
			// Not closed: the tail after the last increment is folded
			// from the log. (Should an increment have just covered
			// everything, a few more commands make a tail: fewer events
			// than SnapshotEvery, so no increment takes them.)
			st := restoredBy(t, cfg, true)
			for i := 0; st.events == 0 && i < 3; i++ {
				randomHistory(t, w, rng, fmt.Sprintf("tail%d", i), 3)
				st = restoredBy(t, cfg, true)
			}
			if !st.fromSnapshot || st.events == 0 {
				t.Fatalf("restored from snapshot %v with %d events after it, want a snapshot and a tail", st.fromSnapshot, st.events)
			}
			sameState(t, "from the snapshot", st, restoredBy(t, cfg, false))

			// A takeover: the next owner fences this writer (whose last
			// increment then fails), starts from the snapshot and the
			// tail, and its own increments must carry what the tail
			// changed.
			next, err := OpenWriter(t.Context(), cfg, 0)
			if err != nil {
				t.Fatal(err)
			}
			_ = w.Close(context.Background()) // fenced
			w = next
			randomHistory(t, w, rng, "c", 150)
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Closed: the last increment covers everything.
			st = restoredBy(t, cfg, true)
			if !st.fromSnapshot || st.events != 0 {
				t.Fatalf("after a close: from snapshot %v with %d events after it, want the snapshot alone", st.fromSnapshot, st.events)
			}
			sameState(t, "from the snapshot written at close", st, restoredBy(t, cfg, false))
		})
	}
}

// A record of the snapshot that does not check out (its CRC, here) makes
// the writer ignore the snapshot, with a warning, and fold the whole log;
// the full snapshot written next replaces it.
func TestCorruptSnapshotRecordIsIgnoredAndTheLogRebuildsTheState(t *testing.T) {
	brokers := snapshotBroker(t)
	var logged safeBuffer
	cfg := WriterConfig{Brokers: brokers, Logger: slog.New(slog.NewTextHandler(&logged, nil)), SnapshotEvery: 20, SnapshotInterval: time.Hour}
	w, err := OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	randomHistory(t, w, rand.New(rand.NewPCG(9, 9)), "c", 200)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(kafka.SnapshotsTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	good, err := snapshotRecord(0, []byte(prefixSKU+"sku-1"), skuSnapshot(&SKU{ID: "sku-1", Version: 1}))
	if err != nil {
		t.Fatal(err)
	}
	good.Value[len(good.Value)-1] ^= 0xff // the value no longer matches its CRC
	if err := cl.ProduceSync(t.Context(), good).FirstErr(); err != nil {
		t.Fatal(err)
	}

	st := restoredBy(t, cfg, true)
	if st.fromSnapshot || !st.full {
		t.Fatal("a corrupt snapshot was trusted")
	}
	if !strings.Contains(logged.String(), "partition snapshot ignored") || !strings.Contains(logged.String(), "CRC does not match") {
		t.Fatalf("no warning naming the corrupt record in %q", logged.String())
	}
	sameState(t, "rebuilt past a corrupt snapshot", st, restoredBy(t, cfg, false))

	// The writer that takes over writes a full snapshot; the next one
	// starts from it.
	w, err = OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	randomHistory(t, w, rand.New(rand.NewPCG(9, 10)), "d", 30)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = restoredBy(t, cfg, true)
	if !st.fromSnapshot {
		t.Fatal("the full snapshot after a corrupt one is not used")
	}
	sameState(t, "from the full snapshot that replaced a corrupt one", st, restoredBy(t, cfg, false))
}

// safeBuffer is a log destination writers may use from any goroutine.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A window of more command ids than fit in one broker message (Kafka's and
// kfake's max.message.bytes, 1 MB by default, bounds a whole record
// batch) is still snapshotted: its segments must not be batched together
// past the limit, or no snapshot of a busy partition is ever written.
func TestSnapshotOfAWindowLargerThanOneMessage(t *testing.T) {
	brokers := snapshotBroker(t)
	const commands = 3 * segmentCommands
	// The log is produced directly, as a writer would have appended it:
	// tens of thousands of commands one by one would take too long here.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(kafka.EventsTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("test-large-window"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sku, now := domain.NewSKU("sku-1"), time.Now()
	var recs []*kgo.Record
	for i := range commands {
		events, err := decide(sku, &Command{ID: fmt.Sprintf("command-%06d", i), Kind: KindReceipt, SKU: "sku-1", Store: "S1", Quantity: 1}, now, newEventID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if err := sku.Apply(e); err != nil {
				t.Fatal(err)
			}
			v, _ := proto.Marshal(e)
			recs = append(recs, &kgo.Record{Key: []byte(e.GetSkuId()), Value: v})
		}
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(t.Context(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	var logged safeBuffer
	cfg := WriterConfig{Brokers: brokers, Logger: slog.New(slog.NewTextHandler(&logged, nil)), SnapshotInterval: time.Hour}
	w, err := OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := restoredBy(t, cfg, true)
	if !st.fromSnapshot || st.events != 0 || st.window.len() != commands {
		t.Fatalf("restored from snapshot %v, %d events after it, %d commands in the window; want the snapshot alone with %d commands\n%s",
			st.fromSnapshot, st.events, st.window.len(), commands, logged.String())
	}
}

// A snapshot of a log that is no longer there (the events topic deleted
// and created again) is not trusted: the writer folds the log it finds.
func TestSnapshotAheadOfTheLogIsIgnored(t *testing.T) {
	brokers := snapshotBroker(t)
	var logged safeBuffer
	cfg := WriterConfig{Brokers: brokers, Logger: slog.New(slog.NewTextHandler(&logged, nil)), SnapshotEvery: 20, SnapshotInterval: time.Hour}
	w, err := OpenWriter(t.Context(), cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	randomHistory(t, w, rand.New(rand.NewPCG(4, 4)), "e", 100)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopics(t.Context(), kafka.EventsTopic); err != nil {
		t.Fatal(err)
	}
	// The delete completes in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := kafka.EnsureTopic(t.Context(), adm, kafka.EventsTopic, 1, nil); err == nil {
			if ends, err := adm.ListEndOffsets(t.Context(), kafka.EventsTopic); err == nil && ends.Error() == nil {
				if o, ok := ends.Lookup(kafka.EventsTopic, 0); ok && o.Offset == 0 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the events topic was not created again")
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := restoredBy(t, cfg, true)
	if st.fromSnapshot || len(st.skus) != 0 || st.next != 0 {
		t.Fatalf("restored from snapshot %v with %d SKUs up to offset %d, want the empty log's state", st.fromSnapshot, len(st.skus), st.next)
	}
	if !strings.Contains(logged.String(), "does not continue it") {
		t.Fatalf("no warning in %q", logged.String())
	}
}
