package command

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tally-oss/tally/internal/kafka"
)

// The franz-go in go.mod turns EndTransaction(TryCommit) into an abort, and
// returns nil, when it holds no partition as added although records were
// produced; it logs the line the guard watches for. Here the broker refuses
// the produce, so the client has such a transaction: the commit must fail
// (if the client's wording changes, this fails and the guard must follow).
func TestCommitGuardSeesTheClientAbort(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	adm, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := kafka.EnsureTopic(t.Context(), kadm.NewClient(adm), "guarded", 1, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := newTxnProducer(slog.New(slog.NewTextHandler(io.Discard, nil)), kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.TransactionalID("guarded"), kgo.DefaultProduceTopic("guarded"), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, _, err := cl.ProducerID(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.InvalidRecord.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	if err := cl.begin(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err == nil {
		t.Fatal("the broker refused the produce, the client says it succeeded")
	}
	if err := cl.commit(ctx); !errors.Is(err, errCommitAborted) {
		t.Fatalf("the commit of a transaction the client aborted returned %v, want errCommitAborted", err)
	}
}

// A transaction the client aborts while the writer asked for a commit
// (the guard saw it) is not acknowledged: its command is answered
// Unavailable, the writer rebuilds from the log, and the next command's
// version follows the log, so a rebuild finds no gap.
func TestCommitTheClientAbortedIsNotAcknowledged(t *testing.T) {
	brokers := snapshotBroker(t)
	var (
		w     *Writer
		armed atomic.Bool
	)
	armed.Store(true)
	cfg := WriterConfig{Brokers: brokers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SnapshotEvery: -1,
		BeforeCommit: func(int32) {
			if !armed.CompareAndSwap(true, false) {
				return
			}
			// What the client does when it takes the commit for an
			// empty transaction: it aborts, logs, and returns nil.
			if err := w.producer.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
				t.Error(err)
			}
			w.producer.guard.Log(kgo.LogLevelInfo, clientAbortedCommit+" but produces were attempted; issuing an abort")
		}}
	var err error
	if w, err = OpenWriter(t.Context(), cfg, 0); err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	rcv := func(id string, q int64) (*Result, error) {
		return w.Do(t.Context(), &Command{ID: id, Kind: KindReceipt, SKU: "guarded", Store: "S1", Quantity: q})
	}
	if res, err := rcv("lost", 5); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a receipt whose transaction was aborted: %+v, %v; want Unavailable", res, err)
	}
	res, err := rcv("kept", 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 1 || res.Stores[0].OnHand != 3 {
		t.Fatalf("the next receipt made version %d with %d on hand; the log holds none before it, so want version 1 with 3", res.Version, res.Stores[0].OnHand)
	}
	st := restoredBy(t, cfg, false)
	if s := st.skus["guarded"]; s == nil || s.Version != 1 || s.Stores["S1"].OnHand != 3 {
		t.Fatalf("the log folds to %+v, want version 1 with 3 on hand", s)
	}
}
