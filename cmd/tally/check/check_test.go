package check_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/cmd/tally/serve"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/projector"
)

const partitions = 3

func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func() error{"serve": runServe})
	os.Exit(m.Run())
}

// runServe is `tally serve` in a child process, on the data directory and
// addresses the parent gives; it says READY once a command round-trips.
func runServe() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	addr := os.Getenv("ADDR")
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []string{"--addr", addr, "--data-dir", os.Getenv("DATA_DIR"), "--kafka-listen", os.Getenv("KAFKA"),
			"--partitions", strconv.Itoa(partitions), "--log-level", "warn", "--insecure-no-auth"})
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c := inventoryv1.NewCommandServiceClient(conn)
	for {
		select {
		case err := <-done:
			return fmt.Errorf("tally serve exited: %v", err)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.ReceiveStock(cctx, &inventoryv1.ReceiveStockRequest{CommandId: "ready", SkuId: "ready", StoreId: "ready", Quantity: 1})
		cancel()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.ChildReady()
	return <-done
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := pg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// waitPostmasterGone waits for the PostgreSQL of a killed `tally serve` to
// finish its shutdown, so the test's directory can be removed.
func waitPostmasterGone(t *testing.T, dataDir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "pg", "data", "postmaster.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("postgres %d still running 30s after tally serve was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// acked is what a client was told about an accepted command.
type acked struct {
	sku      string
	version  int64
	eventIDs []string
}

// load sends receipts and sales for skus from workers goroutines until stop
// closes, and records every acknowledged command by id.
func load(c inventoryv1.CommandServiceClient, cycle int, skus []string, stop <-chan struct{}, mu *sync.Mutex, acks map[string]acked) *sync.WaitGroup {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cycle), uint64(g)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-g%d-%d", cycle, g, i)
				sku := skus[rng.IntN(len(skus))]
				store := fmt.Sprintf("S%d", rng.IntN(2))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				var res *inventoryv1.CommandResult
				if rng.IntN(3) == 0 {
					r, _ := c.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: 5})
					res = r.GetResult() // nil unless accepted
				} else {
					r, _ := c.RecordSale(ctx, &inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: store, Quantity: 1 + rng.Int64N(3)})
					res = r.GetResult()
				}
				cancel()
				if res != nil {
					mu.Lock()
					acks[id] = acked{sku: sku, version: res.GetSkuVersion(), eventIDs: res.GetEventIds()}
					mu.Unlock()
				} else {
					time.Sleep(5 * time.Millisecond) // refused or unavailable: don't spin
				}
			}
		}()
	}
	return &wg
}

// SIGKILL of a real `tally serve` process under load, ten times, restarting
// on the same data directory each time: no acknowledged command is lost or
// doubled, every partition takes commands again, the projection catches up,
// and `tally check` finds the log well-formed and the read model equal to
// its fold.
func TestSIGKILLUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts tally serve ten times")
	}
	dataDir := t.TempDir()
	addr, kafkaAddr := freeAddr(t), freeAddr(t)
	env := []string{"DATA_DIR=" + dataDir, "ADDR=" + addr, "KAFKA=" + kafkaAddr}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmds, qry := inventoryv1.NewCommandServiceClient(conn), inventoryv1.NewQueryServiceClient(conn)
	skus := make([]string, 40)
	for i := range skus {
		skus[i] = fmt.Sprintf("sku-%02d", i)
	}
	var mu sync.Mutex
	acks := map[string]acked{}
	const cycles = 10
	for cycle := range cycles {
		child := testenv.StartChild(t, "serve", env...)
		stop := make(chan struct{})
		wg := load(cmds, cycle, skus, stop, &mu, acks)
		time.Sleep(time.Duration(700+rand.IntN(800)) * time.Millisecond)
		child.Kill(t)
		close(stop)
		wg.Wait()
		// Restarted at once, as a supervisor does: the killed process's
		// PostgreSQL may still be shutting down.
	}
	child := testenv.StartChild(t, "serve", env...)
	t.Cleanup(func() { child.Kill(t); waitPostmasterGone(t, dataDir) })
	t.Logf("%d commands acknowledged over %d kills", len(acks), cycles)
	if len(acks) < cycles {
		t.Fatalf("only %d commands acknowledged: the load did not run", len(acks))
	}

	// Every partition takes commands.
	for p := range int32(partitions) {
		sku := skuOfPartition(p)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, err := cmds.ReceiveStock(ctx, &inventoryv1.ReceiveStockRequest{CommandId: fmt.Sprintf("after-%d", p), SkuId: sku, StoreId: "S0", Quantity: 1})
		cancel()
		if err != nil {
			t.Errorf("partition %d after the last restart: %v", p, err)
		}
	}
	// The projection catches up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := qry.GetProjectionStatus(t.Context(), &inventoryv1.GetProjectionStatusRequest{})
		if err == nil && st.GetTotalLag() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection lag after 60s: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// An ordinary read_committed consumer finds every acknowledged event
	// exactly once, at the version the client was told.
	seen, versions := readCommittedEventIDs(t, []string{kafkaAddr})
	lost, doubled := 0, 0
	for id, a := range acks {
		if v := versions[a.eventIDs[len(a.eventIDs)-1]]; v != a.version && seen[a.eventIDs[0]] > 0 {
			t.Errorf("command %s was acknowledged at version %d; the log has it at %d", id, a.version, v)
		}
		for _, ev := range a.eventIDs {
			switch seen[ev] {
			case 0:
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged command %s (sku %s version %d): event %s not in the log", id, a.sku, a.version, ev)
				}
			case 1:
			default:
				doubled++
				t.Errorf("event %s of command %s is in the log %d times", ev, id, seen[ev])
			}
		}
	}
	t.Logf("acknowledged events: %d lost, %d doubled", lost, doubled)

	dsn, err := os.ReadFile(filepath.Join(dataDir, "pg", "DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := check.Check(t.Context(), check.Options{Brokers: []string{kafkaAddr}, DatabaseURL: strings.TrimSpace(string(dsn))})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Print(&out, 10)
	t.Logf("tally check:\n%s", out.String())
	if r.ProblemCount() > 0 || r.Unmarked > 0 || r.ReadModel == nil || r.ReadModel.EventsBehind > 0 {
		t.Errorf("tally check found problems")
		dumpDoubledVersions(t, strings.TrimSpace(string(dsn)))
	}
}

// dumpDoubledVersions logs the ledger rows of every (sku, version) the
// ledger holds more than once, to tell a projection fault from a log fault.
func dumpDoubledVersions(t *testing.T, dsn string) {
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Log(err)
		return
	}
	defer pool.Close()
	rows, err := pool.Query(context.Background(), `SELECT sku_id, sku_version, store_id, event_id::text, event_type, quantity_delta, recorded_at, command_id, log_partition, log_offset
		FROM inventory_ledger l WHERE (SELECT count(*) FROM inventory_ledger d WHERE d.sku_id = l.sku_id AND d.sku_version = l.sku_version) > 1 ORDER BY 1, 2, log_offset`)
	if err != nil {
		t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			t.Log(err)
			return
		}
		t.Logf("doubled version: %v", v)
	}
}

func skuOfPartition(p int32) string {
	for i := 0; ; i++ {
		sku := fmt.Sprintf("probe-%d", i)
		if kafka.PartitionFor(sku, partitions) == p {
			return sku
		}
	}
}

// readCommittedEventIDs counts each event id in the events topic, and
// returns its sku_version, read by franz-go's read_committed consumer up to
// the last stable offset.
func readCommittedEventIDs(t *testing.T, brokers []string) (map[string]int, map[string]int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(kafka.EventsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r, err := kafka.OpenCommittedReader(t.Context(), kafka.ReaderConfig{Brokers: brokers, Topic: kafka.EventsTopic})
	if err != nil {
		t.Fatal(err)
	}
	ends := r.Ends()
	r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	seen, versions, next := map[string]int{}, map[string]int64{}, map[int32]int64{}
	for {
		done := true
		for p, end := range ends {
			if next[p] < end {
				done = false
			}
		}
		if done {
			return seen, versions
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read_committed consumer stuck at %v of %v", next, ends)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			next[rec.Partition] = rec.Offset + 1
			if rec.Attrs.IsControl() {
				return
			}
			e := &inventoryv1.InventoryEvent{}
			if err := proto.Unmarshal(rec.Value, e); err == nil {
				seen[e.GetEventId()]++
				versions[e.GetEventId()] = e.GetSkuVersion()
			}
		})
	}
}

// tally check finds each kind of damage it knows, in a log produced by hand
// and a read model edited behind the projector's back.
func TestCheckReportsWhatDiffers(t *testing.T) {
	ctx := t.Context()
	env := testenv.New(t)
	pool := env.NewDatabase(t)
	log := testenv.Logger()
	if err := readmodel.Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.DefaultProduceTopic(kafka.EventsTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kafka.EnsureTopic(ctx, kadm.NewClient(cl), kafka.EventsTopic, partitions, kafka.EventTopicConfigs()); err != nil {
		t.Fatal(err)
	}
	n := 0
	event := func(sku string, version, delta, onHand int64, partition int32) *kgo.Record {
		n++
		reason, cmd := "", fmt.Sprintf("cmd-%d", n)
		if sku == "twice" {
			cmd = "the-same-command" // a command applied twice, at consecutive versions
		}
		if sku == "poisoned" {
			reason = "a\x00b" // PostgreSQL refuses it: dead-lettered, not a difference
		}
		v, err := proto.Marshal(&inventoryv1.InventoryEvent{
			EventId: uuid.NewString(), EventType: inventoryv1.EventType_EVENT_TYPE_RECEIPT,
			OccurredAt: timestamppb.Now(), RecordedAt: timestamppb.Now(), SkuId: sku, StoreId: "S1",
			QuantityDelta: delta, CommandId: cmd, SkuVersion: version, OnHandAfter: onHand, Reason: reason,
		})
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Key: []byte(sku), Value: v, Partition: partition}
	}
	p := func(sku string) int32 { return kafka.PartitionFor(sku, partitions) }
	recs := []*kgo.Record{
		event("tampered", 1, 10, 10, p("tampered")),
		event("tampered", 2, -1, 9, p("tampered")),
		event("gap", 1, 5, 5, p("gap")),
		event("gap", 3, -1, 4, p("gap")),              // version 2 is missing
		event("miscounted", 1, 5, 7, p("miscounted")), // 0+5 is not 7
		event("misplaced", 1, 5, 5, (p("misplaced")+1)%partitions),
		event("poisoned", 1, 5, 5, p("poisoned")),
		event("twice", 1, 5, 5, p("twice")),
		event("twice", 2, 5, 10, p("twice")),
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	proj, err := projector.NewPostgres(projector.Config{Consume: projector.Consume{Brokers: env.Brokers, Logger: log}, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proj.Run(pctx) }()
	for deadline := time.Now().Add(time.Minute); ; {
		r, err := check.Check(ctx, check.Options{Brokers: env.Brokers, DatabaseURL: dsnOf(pool)})
		if err != nil {
			t.Fatal(err)
		}
		if r.ReadModel.EventsBehind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection still %d events behind after a minute", r.ReadModel.EventsBehind)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	if _, err := pool.Exec(ctx, `UPDATE stock_levels SET on_hand = 100 WHERE sku_id = 'tampered'`); err != nil {
		t.Fatal(err)
	}
	r, err := check.Check(ctx, check.Options{Brokers: env.Brokers, DatabaseURL: dsnOf(pool)})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Print(&out, 10)
	t.Logf("tally check:\n%s", out.String())
	want := map[string]int{"version sequence": 1, "fold": 1, "misplaced": 1, "read model": 1, "applied twice": 1}
	for kind, n := range want {
		if got := len(r.Problems[kind]); got != n {
			t.Errorf("%d %q problems, want %d", got, kind, n)
		}
	}
	if len(r.Problems) != len(want) {
		t.Errorf("problems of kinds %v, want only %v", r.Problems, want)
	}
	if r.ReadModel.DeadLettered != 1 {
		t.Errorf("%d dead-lettered events reported, want 1", r.ReadModel.DeadLettered)
	}
}

func dsnOf(pool *pgxpool.Pool) string {
	c := pool.Config().ConnConfig
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", c.User, c.Host, c.Port, c.Database)
}
