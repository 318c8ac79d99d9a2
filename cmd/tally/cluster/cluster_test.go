package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/cmd/tally/serve"
	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/testenv"
)

const partitions = 6

func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func() error{"kafka": runKafka, "command": runCommand, "projector": runProjector, "query": runQuery, "tally": runTally})
	os.Exit(m.Run())
}

// runKafka is `tally kafka` in a child process.
func runKafka() error {
	return runUntilReady(serve.RunKafka, os.Getenv("LISTEN"), func(ctx context.Context) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(os.Getenv("LISTEN")))
		if err != nil {
			return err
		}
		defer cl.Close()
		td, err := kadm.NewClient(cl).ListTopics(ctx, kafka.EventsTopic)
		if err == nil && !td.Has(kafka.EventsTopic) {
			err = errors.New("no events topic yet")
		}
		return err
	}, "--listen", os.Getenv("LISTEN"), "--data-dir", os.Getenv("DATA_DIR"), "--partitions", fmt.Sprint(partitions),
		"--sync-writes=false", "--log-level", "warn")
}

// runCommand is `tally command` in a child process.
func runCommand() error {
	addr := os.Getenv("ADDR")
	return runUntilReady(serve.RunCommand, addr, dialable(addr), "--addr", addr, "--kafka-brokers", os.Getenv("KAFKA"), "--group-session-timeout", "2s", "--log-level", "warn", "--insecure-no-auth")
}

// runProjector is `tally projector` in a child process.
func runProjector() error {
	addr := os.Getenv("ADDR")
	return runUntilReady(serve.RunProjector, addr, dialable(addr), "--addr", addr, "--kafka-brokers", os.Getenv("KAFKA"),
		"--database-url", os.Getenv("DATABASE_URL"), "--log-level", "warn")
}

// runQuery is `tally query` in a child process.
func runQuery() error {
	addr := os.Getenv("ADDR")
	return runUntilReady(serve.RunQuery, addr, dialable(addr), "--addr", addr, "--kafka-brokers", os.Getenv("KAFKA"),
		"--database-url", os.Getenv("DATABASE_URL"), "--log-level", "warn", "--insecure-no-auth")
}

// dialable: something listens on addr.
func dialable(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}
}

// runUntilReady runs a subcommand, says READY once ready succeeds, and
// returns when it ends (SIGTERM ends it gracefully).
func runUntilReady(run func(context.Context, []string) error, what string, ready func(context.Context) error, args ...string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(ctx, args) }()
	for {
		select {
		case err := <-done:
			return fmt.Errorf("%s exited before it was ready: %v", what, err)
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := ready(rctx)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.ChildReady()
	return <-done
}

func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := pg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// cluster is `tally kafka` and command instances, each its own process.
type cluster struct {
	kafka      string
	kafkaDir   string
	kafkaChild *testenv.Child
	addrs      []string
	instances  []*testenv.Child
	clients    []inventoryv1connect.CommandServiceClient
}

func startCluster(t *testing.T, instances int) *cluster {
	t.Helper()
	c := &cluster{kafka: freeAddr(t), kafkaDir: t.TempDir()}
	c.startKafka(t)
	for range instances {
		addr := freeAddr(t)
		c.addrs = append(c.addrs, addr)
		c.instances = append(c.instances, testenv.StartChild(t, "command", "ADDR="+addr, "KAFKA="+c.kafka))
		c.clients = append(c.clients, inventoryv1connect.NewCommandServiceClient(http.DefaultClient, "http://"+addr))
	}
	return c
}

// startKafka starts (or restarts) `tally kafka` on the cluster's address
// and data directory.
func (c *cluster) startKafka(t *testing.T) {
	t.Helper()
	c.kafkaChild = testenv.StartChild(t, "kafka", "LISTEN="+c.kafka, "DATA_DIR="+c.kafkaDir)
}

// owners asks the writers' group which instance writes each partition.
func (c *cluster) owners(t *testing.T) map[int32]string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	owners, _, err := command.Writers(t.Context(), kadm.NewClient(cl), command.WritersGroup, kafka.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	return owners
}

// ack is a command a client was told succeeded.
type ack struct {
	id, sku string
	version int64
	at      time.Time // when the answer came
	sentAt  time.Time // when the attempt that succeeded was sent
}

// load drives commands round-robin over the instances, each retried with
// the same command_id at the next instance on UNAVAILABLE or a deadline,
// as a client behind a load balancer would, until stop is closed.
type load struct {
	c       *cluster
	prefix  string
	mu      sync.Mutex
	acks    []ack
	refused int // answered with a definite refusal (not enough stock)
	retries int
	failed  []string // never succeeded: must be absent or once in the log
}

func (l *load) run(ctx context.Context, worker int, stop <-chan struct{}) {
	r := rand.New(rand.NewPCG(uint64(worker), 7))
	next := worker
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		sku := fmt.Sprintf("%s-%d", l.prefix, r.IntN(120))
		id := fmt.Sprintf("%s-w%d-%d", l.prefix, worker, n)
		sale := r.IntN(3) == 0
		deadline := time.Now().Add(30 * time.Second)
		for {
			next = (next + 1) % len(l.c.clients)
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			sent := time.Now()
			var res *inventoryv1.CommandResult
			var err error
			if sale {
				var resp *connect.Response[inventoryv1.RecordSaleResponse]
				resp, err = l.c.clients[next].RecordSale(cctx, connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 1}))
				if err == nil {
					res = resp.Msg.GetResult()
				}
			} else {
				var resp *connect.Response[inventoryv1.ReceiveStockResponse]
				resp, err = l.c.clients[next].ReceiveStock(cctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 2}))
				if err == nil {
					res = resp.Msg.GetResult()
				}
			}
			cancel()
			l.mu.Lock()
			switch code := connect.CodeOf(err); {
			case err == nil:
				l.acks = append(l.acks, ack{id: id, sku: sku, version: res.GetSkuVersion(), at: time.Now(), sentAt: sent})
			case code == connect.CodeFailedPrecondition:
				l.refused++
			case time.Now().After(deadline) || ctx.Err() != nil:
				l.failed = append(l.failed, id)
			default: // unavailable, deadline, connection refused: retry
				l.retries++
				l.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			l.mu.Unlock()
			break
		}
	}
}

// startLoad waits until c takes commands for every partition, then runs
// workers clients of a load on SKUs named after prefix for 2 s before it
// returns; stop ends the load and waits for its clients.
func startLoad(t *testing.T, c *cluster, prefix string, workers int) (l *load, stop func()) {
	t.Helper()
	prefix = fmt.Sprintf("%s%d", prefix, time.Now().UnixNano())
	c.waitAllWritable(t, prefix)
	l = &load{c: c, prefix: prefix}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(t.Context(), w, done) }()
	}
	time.Sleep(2 * time.Second)
	return l, func() { close(done); wg.Wait() }
}

// snapshot copies the acknowledgements so far.
func (l *load) snapshot() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// audit reads the log from outside (a CommittedReader resolving
// transactions itself) and checks every acknowledged command is in it
// exactly once, with the version it was acknowledged at; and runs `tally
// check`'s log checks (gap-free versions, levels, no unexplained negative
// stock). It returns the events read.
func (l *load) audit(t *testing.T) int {
	t.Helper()
	ctx := t.Context()
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: []string{l.c.kafka}, Topic: kafka.EventsTopic})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	inLog := map[string][]int64{}
	events := 0
	for !r.Done() {
		batches, err := r.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range batches {
			for _, rec := range b.Records {
				e := &inventoryv1.InventoryEvent{}
				if err := proto.Unmarshal(rec.Value, e); err != nil {
					t.Fatalf("undecodable record at %d/%d: %v", rec.Partition, rec.Offset, err)
				}
				if strings.HasPrefix(e.GetSkuId(), l.prefix) {
					inLog[e.GetCommandId()] = append(inLog[e.GetCommandId()], e.GetSkuVersion())
					events++
				}
			}
		}
	}
	for _, a := range l.acks {
		if v := inLog[a.id]; len(v) != 1 || v[0] != a.version {
			t.Errorf("acknowledged command %s (%s v%d) is in the log at versions %v; want exactly once at v%d", a.id, a.sku, a.version, v, a.version)
		}
	}
	for _, id := range l.failed {
		if v := inLog[id]; len(v) > 1 {
			t.Errorf("unacknowledged command %s is in the log %d times", id, len(v))
		}
	}
	rep, err := check.Check(ctx, check.Options{Brokers: []string{l.c.kafka}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProblemCount() > 0 {
		var b strings.Builder
		rep.Print(&b, 5)
		t.Errorf("tally check finds problems in the log:\n%s", b.String())
	}
	return events
}

// replayed re-sends a sample of acknowledged commands: each must answer
// replayed, at its original version.
func (l *load) replayed(t *testing.T, n int) {
	t.Helper()
	for i, a := range l.acks {
		if i%max(1, len(l.acks)/n) != 0 {
			continue
		}
		// At the next instance while one is down, as a client would.
		var res *inventoryv1.CommandResult
		var err error
		for j := range len(l.c.clients) {
			if res, err = l.retry(t, l.c.clients[(i+j)%len(l.c.clients)], a); connect.CodeOf(err) != connect.CodeUnavailable {
				break
			}
		}
		if err != nil {
			t.Fatalf("retry of %s: %v", a.id, err)
		}
		if !res.GetReplayed() || res.GetSkuVersion() != a.version {
			t.Fatalf("retry of acknowledged %s answered %v; want replayed at v%d", a.id, res, a.version)
		}
	}
}

// retry re-sends an acknowledged command to c. The kind does not matter
// for the answer of a replay, but the request must be the same: it tries
// both shapes, only one matches.
func (l *load) retry(t *testing.T, c inventoryv1connect.CommandServiceClient, a ack) (*inventoryv1.CommandResult, error) {
	resp, err := c.ReceiveStock(t.Context(), connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: a.id, SkuId: a.sku, StoreId: "S1", Quantity: 2}))
	if err == nil {
		return resp.Msg.GetResult(), nil
	}
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		return nil, err
	}
	sresp, err := c.RecordSale(t.Context(), connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: a.id, SkuId: a.sku, StoreId: "S1", Quantity: 1}))
	if err != nil {
		return nil, err
	}
	return sresp.Msg.GetResult(), nil
}

// waitAllWritable waits until every instance writes some partition and
// a command for every partition succeeds.
func (c *cluster) waitAllWritable(t *testing.T, prefix string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		writers := map[string]bool{}
		for _, addr := range c.owners(t) {
			writers[addr] = true
		}
		if len(writers) == len(c.addrs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d command instances write partitions after 60 s", len(writers), len(c.addrs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline := time.Now().Add(60 * time.Second)
	for p := int32(0); p < partitions; {
		sku := ""
		for i := 0; sku == ""; i++ {
			if s := fmt.Sprintf("%s-probe-%d", prefix, i); kafka.PartitionFor(s, partitions) == p {
				sku = s
			}
		}
		_, err := c.clients[0].ReceiveStock(t.Context(), connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: sku, SkuId: sku, StoreId: "S1", Quantity: 1}))
		if err == nil {
			p++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d not writable after 60s: %v", p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A command instance SIGKILLed under load: its partitions move to the
// others, which fence it and rebuild from the log; clients retrying with
// the same command_id lose nothing and double nothing.
func TestSIGKILLOfACommandInstanceLosesNothing(t *testing.T) {
	c := startCluster(t, 3)
	l, stopLoad := startLoad(t, c, "kill", 8)

	owners := c.owners(t)
	victim := 1
	var moved []int32
	for p, addr := range owners {
		if addr == c.addrs[victim] {
			moved = append(moved, p)
		}
	}
	if len(moved) == 0 {
		t.Fatalf("instance %s writes no partition (owners %v)", c.addrs[victim], owners)
	}
	killedAt := time.Now()
	c.instances[victim].Kill(t)
	time.Sleep(6 * time.Second)
	stopLoad()

	// Takeover: the first command of a moved partition acknowledged after
	// the kill, sent after it.
	var takeover time.Duration
	ackedBefore := 0
	for _, a := range l.acks {
		if a.at.Before(killedAt) {
			ackedBefore++
		}
		if slices.Contains(moved, kafka.PartitionFor(a.sku, partitions)) && a.sentAt.After(killedAt) && (takeover == 0 || a.at.Sub(killedAt) < takeover) {
			takeover = a.at.Sub(killedAt)
		}
	}
	if takeover == 0 {
		t.Fatalf("no command of the moved partitions %v was acknowledged in the 6 s after the kill", moved)
	}
	events := l.audit(t)
	l.replayed(t, 50)
	t.Logf("SIGKILL of 1 of 3 command instances (partitions %v moved): %d commands acknowledged (%d before the kill), %d refused for stock, %d retries, %d never acknowledged; %d events in the log, each acknowledged command once; takeover %v",
		moved, len(l.acks), ackedBefore, l.refused, l.retries, len(l.failed), events, takeover.Round(time.Millisecond))
	if len(l.failed) > 0 {
		t.Errorf("%d commands were never acknowledged in 30 s of retries", len(l.failed))
	}
}

// zombieCommits reads the raw log (uncommitted records and transaction
// markers included) and returns the commit markers written by a producer
// epoch older than one already seen for the same producer id: a writer
// committing after a newer owner fenced it.
func zombieCommits(t *testing.T, brokers string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(kafka.EventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(t.Context(), kafka.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	newest := map[int64]int16{} // producer id → newest epoch seen
	var out []string
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading the raw log: %v (left %v)", ctx.Err(), left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.ProducerEpoch > newest[r.ProducerID] {
				newest[r.ProducerID] = r.ProducerEpoch
			}
			// A commit marker's key is version 0, type 1.
			if r.Attrs.IsControl() && len(r.Key) >= 4 && r.Key[3] == 1 && r.ProducerEpoch < newest[r.ProducerID] {
				out = append(out, fmt.Sprintf("partition %d offset %d: commit by producer %d epoch %d after epoch %d", r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch, newest[r.ProducerID]))
			}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

// A command instance paused (SIGSTOP) while it holds partitions, past the
// group's session timeout, then resumed: its partitions have moved and
// their new owner fenced it, so it commits nothing after it wakes; clients
// lose and double nothing.
func TestPausedCommandInstanceCommitsNothingAfterItWakes(t *testing.T) {
	c := startCluster(t, 3)
	l, stopLoad := startLoad(t, c, "zombie", 8)
	victim := 2
	c.instances[victim].Signal(t, syscall.SIGSTOP)
	pausedAt := time.Now()
	time.Sleep(6 * time.Second) // the session timeout (2 s) and a takeover
	c.instances[victim].Signal(t, syscall.SIGCONT)
	time.Sleep(6 * time.Second)
	stopLoad()

	afterPause := 0
	for _, a := range l.acks {
		if a.at.After(pausedAt) {
			afterPause++
		}
	}
	if afterPause == 0 {
		t.Fatal("no command acknowledged after the pause")
	}
	events := l.audit(t)
	l.replayed(t, 50)
	if z := zombieCommits(t, c.kafka); len(z) > 0 {
		t.Errorf("a fenced writer committed:\n%s", strings.Join(z, "\n"))
	}
	t.Logf("SIGSTOP 6 s then SIGCONT of 1 of 3 command instances: %d commands acknowledged (%d after the pause), %d retries, %d never acknowledged; %d events; no commit by a fenced epoch",
		len(l.acks), afterPause, l.retries, len(l.failed), events)
	if len(l.failed) > 0 {
		t.Errorf("%d commands were never acknowledged in 30 s of retries", len(l.failed))
	}
}
