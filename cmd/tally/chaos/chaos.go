// Package chaos is `tally chaos`: it runs a whole Tally as separate OS
// processes (`tally kafka`, PostgreSQL, command, projector and query
// instances), drives a load through every API instance with clients that
// retry with the same command_id, and meanwhile kills (SIGKILL) or pauses
// (SIGSTOP, SIGCONT) a random instance at random moments and restarts it.
// At the end it audits from outside: every acknowledged command is in the
// log exactly once, versions are gap-free, the read model equals the fold
// of the log, and retries of acknowledged commands answer "replayed".
package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/command"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
)

// Spawn returns the command that runs `tally <args>` (not started).
type Spawn func(args ...string) *exec.Cmd

// Config is a chaos run.
type Config struct {
	Dir        string        // where the processes keep their data
	Faults     int           // faults to inject (0: a plain run, for throughput)
	Rate       float64       // commands per second offered
	Every      time.Duration // mean time between faults
	Partitions int
	Commands   int // command instances
	Projectors int
	Queries    int
	Seed       uint64
	// Roles, when set, are the only roles faults hit ("kafka",
	// "command", "projector", "query", "postgres").
	Roles []string
	Log   *slog.Logger
	Out   io.Writer // the report
}

func (c *Config) defaults() {
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Every <= 0 {
		c.Every = 4 * time.Second
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.Commands <= 0 {
		c.Commands = 3
	}
	if c.Projectors <= 0 {
		c.Projectors = 2
	}
	if c.Queries <= 0 {
		c.Queries = 2
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
}

// Report is what a run found.
type Report struct {
	Seed        uint64 // the run's Config.Seed: the same faults, in the same order, again
	Faults      []Fault
	Acked       int // commands acknowledged
	Checked     int // acknowledged commands found once in the log
	Refused     int // refused for stock (a definite answer)
	Retries     int
	Unanswered  int // never acknowledged within their retry window
	Replayed    int // retries of acknowledged commands answered "replayed"
	Events      int
	Takeovers   []time.Duration
	RatePerSec  []int           // definite answers (acknowledged or refused for stock) per second of the run
	Latency     []time.Duration // of each acknowledging call, sorted
	Problems    []string
	CheckReport *check.Report
}

// Fault is one injected fault.
type Fault struct {
	At     time.Duration // since the load started
	Kind   string        // kill, pause
	Target string        // e.g. command-1
	Moved  []int32       // partitions the killed or paused command instance wrote
}

// OK reports whether the run found nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Run is a chaos run with spawn starting the tally processes.
func Run(ctx context.Context, cfg Config, spawn Spawn) (*Report, error) {
	cfg.defaults()
	h := &harness{cfg: cfg, spawn: spawn, rng: rand.New(rand.NewPCG(cfg.Seed, 99)), load: rand.New(rand.NewPCG(cfg.Seed, 7)), prefix: fmt.Sprintf("chaos%d", time.Now().UnixNano()%1e9)}
	defer h.stopAll()
	if err := h.start(ctx); err != nil {
		return nil, err
	}
	return h.run(ctx)
}

// proc is one tally process the harness supervises.
type proc struct {
	name, role, addr string
	args             []string
	cmd              *exec.Cmd
	exited           chan struct{}
}

type harness struct {
	cfg     Config
	spawn   Spawn
	rng     *rand.Rand // the faults'
	load    *rand.Rand // the load's
	prefix  string
	kafka   *proc
	db      *pg.Cluster
	dbPort  int
	dsn     string
	cmds    []*proc
	others  []*proc // projectors and queries
	clients []inventoryv1connect.CommandServiceClient

	mu         sync.Mutex
	acks       []ack
	answered   []time.Time // every definite answer: acknowledged or refused for stock
	refused    int
	retries    int
	unanswered []string
}

type ack struct {
	id, sku string
	kind    string
	version int64
	sent    time.Time
	at      time.Time
}

// h2c is the clients' HTTP: HTTP/2 without TLS, as the instances serve
// it, so the load shares a connection per instance instead of opening one
// per call in flight.
var h2c = func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}()

func freeAddr() (string, error) {
	port, err := pg.FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

func (h *harness) start(ctx context.Context) error {
	var err error
	if h.dbPort, err = pg.FreePort(); err != nil {
		return err
	}
	if err := h.startDB(ctx); err != nil {
		return err
	}
	if h.dsn, err = h.db.CreateDatabase(ctx, "tally"); err != nil {
		return err
	}
	kaddr, err := freeAddr()
	if err != nil {
		return err
	}
	h.kafka = &proc{name: "kafka", role: "kafka", addr: kaddr, args: []string{"kafka", "--listen", kaddr,
		"--data-dir", filepath.Join(h.cfg.Dir, "kafka"), "--partitions", fmt.Sprint(h.cfg.Partitions), "--sync-writes=false", "--log-level", "warn"}}
	if err := h.launch(ctx, h.kafka); err != nil {
		return err
	}
	for i := range h.cfg.Commands {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p := &proc{name: fmt.Sprintf("command-%d", i), role: "command", addr: addr, args: []string{"command", "--addr", addr,
			"--kafka-brokers", kaddr, "--group-session-timeout", "2s", "--log-level", "error", "--insecure-no-auth"}}
		h.cmds = append(h.cmds, p)
		h.clients = append(h.clients, inventoryv1connect.NewCommandServiceClient(h2c, "http://"+addr))
	}
	for i := range h.cfg.Projectors + h.cfg.Queries {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		role, n := "projector", i
		if i >= h.cfg.Projectors {
			role, n = "query", i-h.cfg.Projectors
		}
		args := []string{role, "--addr", addr, "--kafka-brokers", kaddr, "--database-url", h.dsn, "--log-level", "error"}
		if role == "query" {
			args = append(args, "--insecure-no-auth") // the harness's own cluster, on loopback
		}
		h.others = append(h.others, &proc{name: fmt.Sprintf("%s-%d", role, n), role: role, addr: addr, args: args})
	}
	for _, p := range append(slices.Clone(h.cmds), h.others...) {
		if err := h.launch(ctx, p); err != nil {
			return err
		}
	}
	return h.waitWritable(ctx)
}

func (h *harness) startDB(ctx context.Context) error {
	db, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: filepath.Join(h.cfg.Dir, "pg"), Port: h.dbPort, Logger: h.cfg.Log, WaitForPrevious: time.Minute})
	if err != nil {
		return err
	}
	h.db = db
	return nil
}

// launch starts p and waits until it listens (kafka: serves the topic).
func (h *harness) launch(ctx context.Context, p *proc) error {
	p.cmd = h.spawn(p.args...)
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting", p.name)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if h.ready(ctx, p) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready in 2 minutes", p.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) ready(ctx context.Context, p *proc) bool {
	conn, err := net.DialTimeout("tcp", p.addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	if p.role != "kafka" {
		return true
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.addr))
	if err != nil {
		return false
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(cctx, kafka.EventsTopic)
	return err == nil && td.Has(kafka.EventsTopic)
}

func (h *harness) kill(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (h *harness) stopAll() {
	for _, p := range append(append(slices.Clone(h.cmds), h.others...), h.kafka) {
		if p != nil && p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
	if h.db != nil {
		h.db.Stop()
	}
}

// waitWritable waits until a command for every partition succeeds.
func (h *harness) waitWritable(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for p := int32(0); p < int32(h.cfg.Partitions); {
		sku := h.skuOf(p)
		_, err := h.clients[0].ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: sku + "-probe", SkuId: sku, StoreId: "S1", Quantity: 1}))
		if err == nil {
			p++
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("partition %d not writable after 2 minutes: %w", p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// skuOf is a probe SKU of partition p.
func (h *harness) skuOf(p int32) string {
	for i := 0; ; i++ {
		if s := fmt.Sprintf("%s-probe-%d", h.prefix, i); kafka.PartitionFor(s, int32(h.cfg.Partitions)) == p {
			return s
		}
	}
}

func (h *harness) run(ctx context.Context) (*Report, error) {
	rep := &Report{Seed: h.cfg.Seed}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.drive(ctx, stop) }()

	time.Sleep(h.cfg.Every)
	for i := range h.cfg.Faults {
		f, err := h.inject(ctx, i)
		if err != nil {
			close(stop)
			wg.Wait()
			return nil, err
		}
		f.At = time.Since(start)
		rep.Faults = append(rep.Faults, f)
		fmt.Fprintf(h.cfg.Out, "fault %d/%d at %v: %s %s\n", i+1, h.cfg.Faults, f.At.Round(time.Millisecond), f.Kind, f.Target)
		// The next fault after a random pause of about Every.
		time.Sleep(h.cfg.Every/2 + time.Duration(h.rng.Int64N(int64(h.cfg.Every))))
	}
	time.Sleep(h.cfg.Every)
	close(stop)
	wg.Wait()
	h.audit(ctx, rep, start)
	return rep, nil
}

// inject kills or pauses a random instance, and restarts what it killed.
func (h *harness) inject(ctx context.Context, i int) (Fault, error) {
	targets := append(slices.Clone(h.cmds), h.others...)
	targets = append(targets, h.kafka, nil) // nil: PostgreSQL
	if len(h.cfg.Roles) > 0 {
		targets = slices.DeleteFunc(targets, func(p *proc) bool {
			role := "postgres"
			if p != nil {
				role = p.role
			}
			return !slices.Contains(h.cfg.Roles, role)
		})
	}
	p := targets[h.rng.IntN(len(targets))]
	if p == nil {
		h.db.Stop()
		time.Sleep(time.Duration(500+h.rng.IntN(2000)) * time.Millisecond)
		return Fault{Kind: "stop+start", Target: "postgres"}, h.startDB(ctx)
	}
	f := Fault{Target: p.name}
	if p.role == "command" {
		f.Moved = h.partitionsOf(ctx, p.addr)
	}
	if p.role != "kafka" && h.rng.IntN(3) == 0 {
		f.Kind = "pause"
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(time.Duration(1000+h.rng.IntN(4000)) * time.Millisecond)
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		return f, nil
	}
	f.Kind = "kill"
	h.kill(p)
	time.Sleep(time.Duration(h.rng.IntN(1500)) * time.Millisecond)
	return f, h.launch(ctx, p)
}

// partitionsOf asks the writers' group which partitions addr writes.
func (h *harness) partitionsOf(ctx context.Context, addr string) []int32 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.addr))
	if err != nil {
		return nil
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	owners, _, err := command.Writers(cctx, kadm.NewClient(cl), command.WritersGroup, kafka.EventsTopic)
	if err != nil {
		return nil
	}
	var out []int32
	for p, a := range owners {
		if a == addr {
			out = append(out, p)
		}
	}
	return out
}

// drive offers Rate commands per second (open loop: each in its own
// goroutine), spread round-robin over the command instances; each is
// retried with the same command_id at the next instance on UNAVAILABLE or
// a deadline, for up to 30 s, as a client behind a load balancer does.
func (h *harness) drive(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Each wake-up sends every command due by now: a ticker alone drops
	// the ticks a busy process misses, and the load would quietly fall to
	// what the generator manages rather than what Rate asks.
	tick := time.NewTicker(max(time.Duration(float64(time.Second)/h.cfg.Rate), time.Millisecond))
	defer tick.Stop()
	start := time.Now()
	for n := 0; ; {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for due := int(time.Since(start).Seconds() * h.cfg.Rate); n < due; n++ {
			sku := fmt.Sprintf("%s-%d", h.prefix, h.load.IntN(300))
			kind := []string{"receipt", "sale", "sale", "transfer"}[h.load.IntN(4)]
			id := n
			wg.Add(1)
			go func() { defer wg.Done(); h.send(ctx, id, fmt.Sprintf("%s-c%d", h.prefix, id), sku, kind) }()
		}
	}
}

func (h *harness) send(ctx context.Context, n int, id, sku, kind string) {
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		c := h.clients[(n+attempt)%len(h.clients)]
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		sent := time.Now()
		v, err := h.call(cctx, c, id, sku, kind)
		cancel()
		h.mu.Lock()
		switch code := connect.CodeOf(err); {
		case err == nil:
			h.acks = append(h.acks, ack{id: id, sku: sku, kind: kind, version: v, sent: sent, at: time.Now()})
			h.answered = append(h.answered, time.Now())
		case code == connect.CodeFailedPrecondition:
			h.refused++
			h.answered = append(h.answered, time.Now())
		case time.Now().After(deadline) || ctx.Err() != nil:
			h.unanswered = append(h.unanswered, id)
		default:
			h.retries++
			h.mu.Unlock()
			time.Sleep(time.Duration(20*(attempt+1)) * time.Millisecond)
			continue
		}
		h.mu.Unlock()
		return
	}
}

// call sends one command of kind and returns the SKU version it reached.
func (h *harness) call(ctx context.Context, c inventoryv1connect.CommandServiceClient, id, sku, kind string) (int64, error) {
	switch kind {
	case "receipt":
		r, err := c.ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 3}))
		if err != nil {
			return 0, err
		}
		return r.Msg.GetResult().GetSkuVersion(), nil
	case "sale":
		r, err := c.RecordSale(ctx, connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: id, SkuId: sku, StoreId: "S1", Quantity: 1}))
		if err != nil {
			return 0, err
		}
		return r.Msg.GetResult().GetSkuVersion(), nil
	}
	r, err := c.TransferStock(ctx, connect.NewRequest(&inventoryv1.TransferStockRequest{CommandId: id, SkuId: sku, FromStoreId: "S1", ToStoreId: "S2", Quantity: 1}))
	if err != nil {
		return 0, err
	}
	return r.Msg.GetResult().GetSkuVersion(), nil
}

// audit checks the run from outside; problems go into rep.Problems.
func (h *harness) audit(ctx context.Context, rep *Report, start time.Time) {
	rep.Acked, rep.Refused, rep.Retries, rep.Unanswered = len(h.acks), h.refused, h.retries, len(h.unanswered)
	for _, id := range h.unanswered {
		rep.Problems = append(rep.Problems, "never acknowledged in 30 s of retries: "+id)
	}
	// Every acknowledged command once, at its version (a transfer's two
	// events end at it).
	inLog, events, err := h.readLog(ctx)
	if err != nil {
		rep.Problems = append(rep.Problems, "reading the log: "+err.Error())
		return
	}
	rep.Events = events
	for _, a := range h.acks {
		vs := inLog[a.id]
		want := 1
		if a.kind == "transfer" {
			want = 2
		}
		if len(vs) != want || vs[len(vs)-1] != a.version {
			rep.Problems = append(rep.Problems, fmt.Sprintf("acknowledged %s %s (%s v%d) is in the log at versions %v", a.kind, a.id, a.sku, a.version, vs))
			continue
		}
		rep.Checked++
	}
	// The read model equals the fold of the log once the projectors have
	// caught up; `tally check` also checks versions and levels.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := check.Check(ctx, check.Options{Brokers: []string{h.kafka.addr}, DatabaseURL: h.dsn})
		if err == nil && r.ReadModel != nil && r.ReadModel.EventsBehind == 0 {
			rep.CheckReport = r
			for kind, ps := range r.Problems {
				for _, p := range ps {
					rep.Problems = append(rep.Problems, "tally check: "+kind+": "+p)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			why := fmt.Sprint(err)
			if r != nil && r.ReadModel != nil {
				why = fmt.Sprintf("%d offsets not projected", r.ReadModel.EventsBehind)
			}
			rep.Problems = append(rep.Problems, "the read model did not catch up within 2 minutes: "+why)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Retries of acknowledged commands answer replayed.
	for i, a := range h.acks {
		if i%max(1, len(h.acks)/200) != 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := h.replay(cctx, h.clients[i%len(h.clients)], a)
		cancel()
		if err != nil || v != a.version {
			rep.Problems = append(rep.Problems, fmt.Sprintf("retry of acknowledged %s: version %d, %v; want replayed at v%d", a.id, v, err, a.version))
			continue
		}
		rep.Replayed++
	}
	// Takeovers: from a command instance's kill to the first acknowledged
	// command of a partition it wrote, sent after the kill.
	for _, f := range rep.Faults {
		if f.Kind != "kill" || len(f.Moved) == 0 {
			continue
		}
		at := start.Add(f.At)
		var first time.Duration
		for _, a := range h.acks {
			if a.sent.After(at) && slices.Contains(f.Moved, kafka.PartitionFor(a.sku, int32(h.cfg.Partitions))) && (first == 0 || a.at.Sub(at) < first) {
				first = a.at.Sub(at)
			}
		}
		if first > 0 {
			rep.Takeovers = append(rep.Takeovers, first)
		}
	}
	for _, a := range h.acks {
		rep.Latency = append(rep.Latency, a.at.Sub(a.sent))
	}
	slices.Sort(rep.Latency)
	if n := len(h.answered); n > 0 {
		rep.RatePerSec = make([]int, int(h.answered[n-1].Sub(start)/time.Second)+1)
		for _, at := range h.answered {
			if s := int(at.Sub(start) / time.Second); s >= 0 && s < len(rep.RatePerSec) {
				rep.RatePerSec[s]++
			}
		}
	}
}

// replay re-sends an acknowledged command; it must answer replayed.
func (h *harness) replay(ctx context.Context, c inventoryv1connect.CommandServiceClient, a ack) (int64, error) {
	var res *inventoryv1.CommandResult
	switch a.kind {
	case "receipt":
		r, err := c.ReceiveStock(ctx, connect.NewRequest(&inventoryv1.ReceiveStockRequest{CommandId: a.id, SkuId: a.sku, StoreId: "S1", Quantity: 3}))
		if err != nil {
			return 0, err
		}
		res = r.Msg.GetResult()
	case "sale":
		r, err := c.RecordSale(ctx, connect.NewRequest(&inventoryv1.RecordSaleRequest{CommandId: a.id, SkuId: a.sku, StoreId: "S1", Quantity: 1}))
		if err != nil {
			return 0, err
		}
		res = r.Msg.GetResult()
	default:
		r, err := c.TransferStock(ctx, connect.NewRequest(&inventoryv1.TransferStockRequest{CommandId: a.id, SkuId: a.sku, FromStoreId: "S1", ToStoreId: "S2", Quantity: 1}))
		if err != nil {
			return 0, err
		}
		res = r.Msg.GetResult()
	}
	if !res.GetReplayed() {
		return 0, errors.New("not replayed: applied again")
	}
	return res.GetSkuVersion(), nil
}

// readLog reads the run's events with a CommittedReader (transactions
// resolved from the raw log): versions by command id.
func (h *harness) readLog(ctx context.Context) (map[string][]int64, int, error) {
	r, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: []string{h.kafka.addr}, Topic: kafka.EventsTopic})
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	out := map[string][]int64{}
	events := 0
	for !r.Done() {
		batches, err := r.Poll(ctx)
		if err != nil {
			return nil, 0, err
		}
		for _, b := range batches {
			for _, rec := range b.Records {
				e := &inventoryv1.InventoryEvent{}
				if err := proto.Unmarshal(rec.Value, e); err != nil {
					return nil, 0, fmt.Errorf("undecodable record at %d/%d: %w", rec.Partition, rec.Offset, err)
				}
				if strings.HasPrefix(e.GetCommandId(), h.prefix) {
					out[e.GetCommandId()] = append(out[e.GetCommandId()], e.GetSkuVersion())
					events++
				}
			}
		}
	}
	return out, events, nil
}

// Print writes the report.
func (r *Report) Print(w io.Writer) {
	kinds := map[string]int{}
	for _, f := range r.Faults {
		kinds[f.Kind+" "+strings.TrimRight(f.Target, "0123456789-")]++
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, fmt.Sprintf("%s ×%d", k, kinds[k]))
	}
	sort.Strings(names)
	fmt.Fprintf(w, "faults: %d (%s), seed %d\n", len(r.Faults), strings.Join(names, ", "), r.Seed)
	fmt.Fprintf(w, "commands: %d acknowledged, %d checked once in the log, %d refused for stock, %d retries, %d never acknowledged; %d retries of acknowledged commands answered replayed; %d events\n",
		r.Acked, r.Checked, r.Refused, r.Retries, r.Unanswered, r.Replayed, r.Events)
	if len(r.Takeovers) > 0 {
		t := slices.Sorted(slices.Values(r.Takeovers))
		fmt.Fprintf(w, "takeover after a command instance's SIGKILL: p50 %v, max %v (%d kills)\n", t[len(t)/2].Round(time.Millisecond), t[len(t)-1].Round(time.Millisecond), len(t))
	}
	if n := len(r.RatePerSec); n > 2 {
		inner := slices.Clone(r.RatePerSec[1 : n-1])
		slices.Sort(inner)
		fmt.Fprintf(w, "throughput (commands answered, acknowledged or refused for stock): median %d/s, lowest second %d/s\n", inner[len(inner)/2], inner[0])
	}
	if n := len(r.Latency); n > 0 {
		q := func(f float64) time.Duration {
			return r.Latency[min(n-1, int(f*float64(n)))].Round(100 * time.Microsecond)
		}
		fmt.Fprintf(w, "latency of the acknowledging call: p50 %v, p99 %v, max %v\n", q(0.5), q(0.99), r.Latency[n-1].Round(time.Millisecond))
	}
	if r.CheckReport != nil {
		r.CheckReport.Print(w, 5)
	}
	if r.OK() {
		fmt.Fprintln(w, "audit OK: every acknowledged command once, versions gap-free, the read model equals the fold of the log")
		return
	}
	fmt.Fprintf(w, "audit FAILED: %d problems\n", len(r.Problems))
	for i, p := range r.Problems {
		if i == 20 {
			fmt.Fprintf(w, "  … %d more\n", len(r.Problems)-20)
			break
		}
		fmt.Fprintln(w, "  "+p)
	}
}

// RunCLI is `tally chaos`.
func RunCLI(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally chaos", flag.ContinueOnError)
	config.Usage(fs, "tally chaos [flags]", "Run every role as its own process, kill and pause them at random under load, then audit that nothing acknowledged was lost or doubled.",
		"tally chaos --faults 20")
	var cfg Config
	var dir string
	config.Int(fs, &cfg.Faults, "faults", 20, "faults to inject (kill, pause of a random instance; PostgreSQL stopped and started)")
	rate := 200
	config.Int(fs, &rate, "rate", 200, "commands per second offered")
	config.Duration(fs, &cfg.Every, "every", 4*time.Second, "mean time between faults (with --faults 0: how long the load runs, twice this)")
	config.Int(fs, &cfg.Commands, "commands", 3, "command instances")
	config.Int(fs, &cfg.Projectors, "projectors", 2, "projector instances")
	config.Int(fs, &cfg.Queries, "queries", 2, "query instances")
	config.String(fs, &dir, "data-dir", "", "where the processes keep their data (default: a temporary directory, removed after)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := config.EnvErrors(fs); err != nil {
		return err
	}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "tally-chaos-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	cfg.Dir, cfg.Rate = dir, float64(rate)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rep, err := Run(ctx, cfg, func(args ...string) *exec.Cmd { return exec.Command(exe, args...) })
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if !rep.OK() {
		return errors.New("the audit found problems")
	}
	return nil
}
