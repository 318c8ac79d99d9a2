package command_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tally-oss/tally/command"
)

// Tests that make Kafka transactions fail run on a kfake cluster of their
// own, so that the faults they inject reach no other test's writers.

// faultCluster starts a one-broker cluster the test can inject faults into,
// closed when the test ends.
func faultCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// faultService starts a command service with a one-partition events topic
// on c, so that every command goes through the same writer, and waits until
// that writer takes commands. It is closed when the test ends.
func faultService(t testing.TB, c *kfake.Cluster, cfg command.WriterConfig) *command.Service {
	t.Helper()
	cfg.Brokers = c.ListenAddrs()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	svc, err := command.NewService(t.Context(), command.ServiceConfig{WriterConfig: cfg, Partitions: 1, AssignWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	// A command for a SKU nothing else uses waits for the writer.
	if _, err := svc.Do(t.Context(), &command.Command{ID: "warm-up", Kind: command.KindReceipt, SKU: uniq("warm-up"), Store: "S1", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	return svc
}

// failNextCommit makes the broker answer the next EndTxn that commits with
// UNKNOWN_SERVER_ERROR without acting on it: the transaction stays open
// until the writer's next InitProducerID aborts it.
func failNextCommit(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.EndTxnRequest)
		if !req.Commit || !eventsTxn(req.TransactionalID) {
			return nil, nil, false // aborts and snapshots pass; the control waits for an events commit
		}
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.UnknownServerError.Code
		return resp, nil, true // handled: the control is dropped
	})
}

func sale(id, sku string, q int64) *command.Command {
	return &command.Command{ID: id, Kind: command.KindSale, SKU: sku, Store: "S1", Quantity: q}
}

func receipt(id, sku string, q int64) *command.Command {
	return &command.Command{ID: id, Kind: command.KindReceipt, SKU: sku, Store: "S1", Quantity: q}
}

// A transaction the broker refuses to commit leaves no trace: its callers
// are told Unavailable, read_committed consumers never see its events, and
// the writer, rebuilt from the log, decides the next commands as if the
// batch had never been (its overlay and its command ids are dropped).
func TestRefusedCommitIsDroppedAndTheWriterRebuilds(t *testing.T) {
	c := faultCluster(t)
	svc := faultService(t, c, command.WriterConfig{})
	sku, other := uniq("refused"), uniq("refused-other")
	if _, err := svc.Do(t.Context(), receipt("r1", sku, 10)); err != nil {
		t.Fatal(err)
	}

	failNextCommit(c)
	for i, o := range svc.DoBatch(t.Context(), []*command.Command{sale("s1", sku, 3), receipt("r2", other, 5)}) {
		if !errors.Is(o.Err, command.ErrUnavailable) {
			t.Errorf("command %d of the refused batch: %+v, want ErrUnavailable", i, o)
		}
	}

	res, err := svc.Do(t.Context(), sale("s2", sku, 10))
	if err != nil {
		t.Fatalf("sale of all 10 after the refused sale of 3: %v", err)
	}
	if res.Replayed || res.Version != 2 || res.Stores[0].OnHand != 0 {
		t.Fatalf("sale after the refused batch: %+v, want version 2 and on_hand 0", res)
	}
	if ev := readEvents(t, c.ListenAddrs(), sku); len(ev) != 2 || ev[0].GetCommandId() != "r1" || ev[1].GetCommandId() != "s2" {
		t.Fatalf("committed events of %s: %v, want r1 and s2 only", sku, ev)
	}
	if ev := readEvents(t, c.ListenAddrs(), other); len(ev) != 0 {
		t.Fatalf("committed events of %s: %v, want none", other, ev)
	}

	// The refused commands' ids were not remembered: their retries are
	// decided anew.
	var short *command.InsufficientStockError
	if _, err := svc.Do(t.Context(), sale("s1", sku, 3)); !errors.As(err, &short) {
		t.Fatalf("retry of the refused sale: %v, want InsufficientStockError (s2 took everything)", err)
	}
	if res, err := svc.Do(t.Context(), receipt("r2", other, 5)); err != nil || res.Replayed || res.Version != 1 {
		t.Fatalf("retry of the refused receipt: %+v, %v; want it applied at version 1", res, err)
	}
}

// A commit that lands on the broker but whose answer never reaches the
// writer looks, to the writer, like any failed transaction: its callers are
// told Unavailable and the writer rebuilds. The rebuild must find the
// commit, so that the client's retry with the same command_id is answered
// with the original result instead of being applied a second time.
func TestCommitWhoseAnswerIsLostIsReplayedOnRetry(t *testing.T) {
	c := faultCluster(t)
	svc := faultService(t, c, command.WriterConfig{CommitTimeout: 2 * time.Second})
	sku := uniq("lost")
	if _, err := svc.Do(t.Context(), receipt("r1", sku, 10)); err != nil {
		t.Fatal(err)
	}

	// The broker holds the next commit until the writer, its answer
	// overdue, gives up and reopens; the commit lands before the reopen's
	// InitProducerID (which would otherwise abort it), and its answer goes
	// to a client that is no longer listening.
	ctx := t.Context()
	committed := c.Fault(kfake.Fault{
		Keys:    []kmsg.Key{kmsg.EndTxn},
		Observe: true,
		When: func(r kmsg.Request) bool {
			return r.(*kmsg.EndTxnRequest).Commit && eventsTxn(r.(*kmsg.EndTxnRequest).TransactionalID)
		},
	})
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if r := kreq.(*kmsg.EndTxnRequest); !r.Commit || !eventsTxn(r.TransactionalID) {
			return nil, nil, false
		}
		c.SleepControl(func() { <-release })
		c.DropControl()
		return nil, nil, false // now the broker commits
	})
	c.ControlKey(int16(kmsg.InitProducerID), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if id := kreq.(*kmsg.InitProducerIDRequest).TransactionalID; id == nil || !eventsTxn(*id) {
			return nil, nil, false // the snapshot producer's
		}
		close(release)
		c.SleepControl(func() { _ = committed.Wait(ctx, 1) })
		c.DropControl()
		return nil, nil, false
	})

	if _, err := svc.Do(ctx, sale("s1", sku, 3)); !errors.Is(err, command.ErrUnavailable) {
		t.Fatalf("sale whose commit answer is lost: %v, want ErrUnavailable", err)
	}

	// The retry queues behind the writer's rebuild.
	again, err := svc.Do(ctx, sale("s1", sku, 3))
	if err != nil {
		t.Fatalf("retry of the sale: %v", err)
	}
	if committed.Hits() != 1 {
		t.Fatalf("the held commit reached the broker %d times, want 1", committed.Hits())
	}
	if !again.Replayed || again.Version != 2 || again.Stores[0].OnHand != 7 {
		t.Fatalf("retry of the sale: %+v, want the original result replayed (version 2, on_hand 7)", again)
	}
	next, err := svc.Do(ctx, sale("s2", sku, 7))
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != 3 || next.Stores[0].OnHand != 0 {
		t.Fatalf("sale after the retry: %+v, want version 3 and on_hand 0", next)
	}
	ev := readEvents(t, c.ListenAddrs(), sku)
	var ids []string
	for _, e := range ev {
		ids = append(ids, e.GetCommandId())
	}
	if strings.Join(ids, " ") != "r1 s1 s2" {
		t.Fatalf("committed commands %v, want [r1 s1 s2]: s1 exactly once", ids)
	}
}

// eventsTxn reports whether a transactional id is a partition writer's
// events producer (not its snapshot producer).
func eventsTxn(id string) bool { return strings.HasPrefix(id, "tally-writer-") }
