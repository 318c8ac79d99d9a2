// Package bench is `tally bench`: an open-loop load generator that drives a
// running Tally through its public API (or a no-op server, or the naive
// one-transaction-per-command Postgres design it is compared with), measures
// command latency and write→query visibility with HDR histograms, and ends
// with a correctness audit of the log and the read model.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/config"
)

// Embedded is a Tally started in this process for the bench.
type Embedded struct {
	Addr        string
	Brokers     []string
	DatabaseURL string
	Stop        func()
}

// Deps are what cmd/tally hands the bench: it may not import the parts.
type Deps struct {
	// StartEmbedded starts a whole Tally (`tally serve`) with its data
	// under dir.
	StartEmbedded func(ctx context.Context, dir string) (*Embedded, error)
	// Replay rebuilds the read model from the log into a fresh schema and
	// returns how many events it projected and how long it took, with
	// parallel loads at once (0: one per CPU).
	Replay func(ctx context.Context, brokers []string, databaseURL string, parallel int) (int64, time.Duration, error)
	// Soak runs `tally bench --soak`.
	Soak func(ctx context.Context, cfg SoakConfig) (*SoakReport, error)
	// Out is where the report goes; nil is standard output.
	Out io.Writer
}

// Config is `tally bench`'s flags.
type Config struct {
	Target       string
	Addr         string
	QueryAddr    string
	KafkaBrokers string
	DatabaseURL  string
	Embedded     bool
	DataDir      string
	Rate         float64
	Duration     time.Duration
	Warmup       time.Duration
	SKUs         int
	Stores       int
	Zipf         float64
	MixSpec      string
	Batch        int
	Seed         int64
	SeedSKUs     int
	Concurrency  int
	Sample       float64
	Compare      bool
	Sweep        string
	Replay       bool
	ReplayLoads  int
	JSON         bool
	NoAudit      bool
	CPUProfile   string
	Reads        float64
	ReadMixSpec  string

	soak    soakFlags
	mix     Mix
	readMix ReadMix
}

func (c *Config) flags(fs *flag.FlagSet) {
	config.String(fs, &c.Target, "target", "tally", "tally, noop (a handler that returns at once: the RPC ceiling) or naive-postgres (one Postgres transaction per command)")
	config.String(fs, &c.Addr, "addr", "127.0.0.1:8080", "address of a running Tally; a comma-separated list sends the commands round-robin over several command instances")
	config.String(fs, &bearer, "token", "", "bearer token sent with every call to --addr and --query-addr (e.g. $TALLY_ADMIN_TOKEN from data/tokens; env TALLY_TOKEN)")
	config.String(fs, &c.QueryAddr, "query-addr", "", "address of the QueryService, for visibility probes and the audit (default the first --addr)")
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "127.0.0.1:9092", "the Tally's Kafka, for the audit")
	config.String(fs, &c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL for the naive-postgres peer and replay")
	config.Bool(fs, &c.Embedded, "embedded", false, "start a Tally in this process (fresh data under --data-dir) instead of using --addr")
	config.String(fs, &c.DataDir, "data-dir", "", "data directory for --embedded (default a temporary one)")
	config.Float64(fs, &c.Rate, "rate", 10000, "offered load in commands/s (open loop)")
	config.Duration(fs, &c.Duration, "duration", 20*time.Second, "measured time per run")
	config.Duration(fs, &c.Warmup, "warmup", 3*time.Second, "unmeasured time before each run")
	config.Int(fs, &c.SKUs, "skus", 100000, "SKUs in the catalogue")
	config.Int(fs, &c.Stores, "stores", 50, "stores")
	config.Float64(fs, &c.Zipf, "zipf", 1.1, "Zipf exponent of SKU popularity (> 1)")
	config.String(fs, &c.MixSpec, "mix", "sale=70,return=10,receipt=15,transfer=5", "command mix in percent")
	config.Int(fs, &c.Batch, "batch", 1, "commands per call: 1 = unary RPCs, more = Apply batches")
	config.Int64(fs, &c.Seed, "seed", 1, "random seed: the same seed gives the same command sequence")
	config.Int(fs, &c.SeedSKUs, "seed-skus", 5000, "hottest SKUs stocked at every store before the run")
	config.Int(fs, &c.Concurrency, "concurrency", 256, "calls in flight at most")
	config.Float64(fs, &c.Sample, "visibility-sample", 0.01, "fraction of accepted commands whose write→query visibility is probed")
	config.Bool(fs, &c.Compare, "compare", false, "run tally and naive-postgres on the same workload and print the ratios")
	config.String(fs, &c.Sweep, "sweep", "", "comma-separated rates: one run each, then the highest with p99 visibility under 250 ms")
	config.Bool(fs, &c.Replay, "replay", false, "also rebuild the read model from the log and report events/s")
	config.Int(fs, &c.ReplayLoads, "replay-parallel", 0, "with --replay: loads at once (0: one per CPU, at most one per partition)")
	config.Bool(fs, &c.JSON, "json", false, "print the report as JSON on stdout")
	config.Bool(fs, &c.NoAudit, "no-audit", false, "skip the correctness audit")
	config.String(fs, &c.CPUProfile, "cpuprofile", "", "write a CPU profile of this process (with --embedded: of Tally too) to this file")
	config.Float64(fs, &c.Reads, "reads", 0, "fraction of the operations that are reads (GetStock, BatchGetStock, ListStock, GetStockHistory of Zipf-popular stocked SKUs, open loop beside the commands): 0.9 offers 9 reads per command; 1 reads only, at --rate reads/s (target tally)")
	config.String(fs, &c.ReadMixSpec, "read-mix", "get=70,batch=20,list=5,history=5", "with --reads: the reads' mix in percent")
	c.soak.flags(fs)
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	switch c.Target {
	case "tally", "noop", "naive-postgres":
	default:
		errs = append(errs, fmt.Errorf("--target: tally, noop or naive-postgres, got %q", c.Target))
	}
	if c.Rate <= 0 {
		errs = append(errs, errors.New("--rate must be > 0"))
	}
	if c.SKUs < 2 || c.Stores < 2 {
		errs = append(errs, errors.New("--skus and --stores must be at least 2"))
	}
	if c.Zipf <= 1 {
		errs = append(errs, errors.New("--zipf must be > 1"))
	}
	if c.Batch < 1 || c.Batch > 1000 {
		errs = append(errs, errors.New("--batch must be 1 to 1000"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("--concurrency must be >= 1"))
	}
	var err error
	if c.mix, err = ParseMix(c.MixSpec); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.sweepRates(); err != nil {
		errs = append(errs, err)
	}
	if c.Reads < 0 || c.Reads > 1 {
		errs = append(errs, fmt.Errorf("--reads must be 0 to 1, got %v", c.Reads))
	}
	if c.Reads > 0 && (c.Target != "tally" || c.Compare) {
		errs = append(errs, errors.New("--reads needs --target tally and no --compare: only Tally has the query service"))
	}
	if c.readMix, err = ParseReadMix(c.ReadMixSpec); err != nil {
		errs = append(errs, err)
	}
	if err := c.soak.validate(c); err != nil {
		errs = append(errs, err)
	}
	if c.ReplayLoads < 0 {
		errs = append(errs, fmt.Errorf("--replay-parallel must be 0 or more, got %d", c.ReplayLoads))
	}
	if (c.Target == "naive-postgres" || c.Compare || c.Replay) && !c.Embedded && c.DatabaseURL == "" {
		errs = append(errs, errors.New("naive-postgres, --compare and --replay need --database-url (or --embedded)"))
	}
	return errors.Join(errs...)
}

func (c *Config) sweepRates() ([]float64, error) {
	var out []float64
	for _, s := range config.List(c.Sweep) {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("--sweep: %q is not a rate", s)
		}
		out = append(out, r)
	}
	return out, nil
}

// Report is everything a bench invocation measured.
type Report struct {
	Runs        []*run   `json:"runs"`
	Audit       *Audit   `json:"audit,omitempty"`
	Compare     *ratio   `json:"compare,omitempty"`
	SweepBest   *float64 `json:"sweep_best_rate_p99_visibility_under_250ms,omitempty"`
	ReplayRate  float64  `json:"replay_events_per_s,omitempty"`
	ReplayCount int64    `json:"replay_events,omitempty"`
}

type ratio struct {
	Throughput float64 `json:"throughput_tally_over_naive"`
	P99        float64 `json:"p99_tally_over_naive"`
}

// Run is `tally bench`.
func Run(ctx context.Context, args []string, deps Deps) error {
	fs := flag.NewFlagSet("tally bench", flag.ContinueOnError)
	config.Usage(fs, "tally bench [flags]", "Drive a Tally (or --embedded, in this process) with an open-loop workload, report throughput and latency, and audit the result against the log.",
		"tally bench --embedded --batch 100 --rate 10000 --duration 30s",
		"tally bench --embedded --reads 1 --read-mix get=100 --rate 5000 --duration 10s --no-audit",
		"tally bench --embedded --compare --rate 8000 --duration 10s")
	c := &Config{}
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(fs), c.Validate()); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if c.soak.On {
		return c.runSoak(ctx, fs, deps)
	}
	brokers := config.List(c.KafkaBrokers)
	if c.Embedded && c.Target != "noop" || c.Embedded && c.Compare {
		dir := c.DataDir
		if dir == "" {
			d, err := os.MkdirTemp("", "tally-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			dir = d
		}
		fmt.Fprintf(os.Stderr, "starting an embedded Tally under %s\n", dir)
		e, err := deps.StartEmbedded(ctx, dir)
		if err != nil {
			return fmt.Errorf("embedded tally: %w", err)
		}
		defer e.Stop()
		c.Addr, brokers, c.DatabaseURL = e.Addr, e.Brokers, e.DatabaseURL
	}
	rep := &Report{}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	rates := []float64{c.Rate}
	if sw, _ := c.sweepRates(); len(sw) > 0 {
		rates = sw
	}
	targets := []string{c.Target}
	if c.Compare {
		targets = []string{"tally", "naive-postgres"}
	}
	var acceptedAll []acceptedCmd
	for _, name := range targets {
		for i, rate := range rates {
			r, err := c.runOnce(ctx, name, rate, fmt.Sprintf("%s-%s-%d", runID, name, i), log)
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, r)
			if name == "tally" {
				acceptedAll = append(acceptedAll, r.accepted...)
			}
		}
	}
	if c.Compare && len(rep.Runs) == 2 && rep.Runs[1].Achieved > 0 && rep.Runs[1].Latency.P99 > 0 {
		rep.Compare = &ratio{Throughput: rep.Runs[0].Achieved / rep.Runs[1].Achieved, P99: rep.Runs[0].Latency.P99 / rep.Runs[1].Latency.P99}
	}
	if len(rates) > 1 {
		for _, r := range rep.Runs {
			if r.Target == "tally" && r.Sustained && r.Visibility != nil && r.Visibility.P99 < 250 && (rep.SweepBest == nil || r.Rate > *rep.SweepBest) {
				rate := r.Rate
				rep.SweepBest = &rate
			}
		}
	}
	if slicesContains(targets, "tally") && !c.NoAudit {
		q, closeQ, err := queryClient(c.queryAddr())
		if err != nil {
			return err
		}
		defer closeQ()
		fmt.Fprintln(os.Stderr, "auditing the log and the read model...")
		if rep.Audit, err = audit(ctx, brokers, q, acceptedAll); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if c.Replay {
		fmt.Fprintln(os.Stderr, "replaying the log into a fresh read model...")
		n, d, err := deps.Replay(ctx, brokers, c.DatabaseURL, c.ReplayLoads)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		rep.ReplayCount, rep.ReplayRate = n, float64(n)/d.Seconds()
	}
	out := deps.Out
	if out == nil {
		out = os.Stdout
	}
	if c.JSON {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else {
		rep.print(out)
	}
	if rep.Audit != nil && !rep.Audit.OK() {
		return errors.New("the correctness audit failed")
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// queryAddr is where the QueryService is: --query-addr, else the first
// --addr.
func (c *Config) queryAddr() string {
	if c.QueryAddr != "" {
		return c.QueryAddr
	}
	return config.List(c.Addr)[0]
}

// bearer is --token: sent with every call of the bench's clients.
var bearer string

// tokenCreds sends the bearer token with every call.
type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }

// dialOptions are every bench client's: plaintext, the token when given.
func dialOptions(opts ...grpc.DialOption) []grpc.DialOption {
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if bearer != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds(bearer)))
	}
	return opts
}

func queryClient(addr string) (inventoryv1.QueryServiceClient, func(), error) {
	conn, err := grpc.NewClient(addr, dialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
	if err != nil {
		return nil, nil, err
	}
	return inventoryv1.NewQueryServiceClient(conn), func() { conn.Close() }, nil
}

// runOnce seeds stock, then drives one target at one rate.
func (c *Config) runOnce(ctx context.Context, name string, rate float64, runID string, log *slog.Logger) (*run, error) {
	var t target
	var probe func(ctx context.Context, sku, store string, version int64) error
	addr := c.Addr
	switch name {
	case "noop":
		a, stop, err := startNoop(ctx, log)
		if err != nil {
			return nil, err
		}
		defer stop()
		addr = a
		fallthrough
	case "tally":
		g, err := dialGRPC(config.List(addr))
		if err != nil {
			return nil, err
		}
		t = g
		if name == "tally" {
			q, closeQ, err := queryClient(c.queryAddr())
			if err != nil {
				return nil, err
			}
			defer closeQ()
			probe = func(ctx context.Context, sku, store string, version int64) error {
				for {
					_, err := q.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: sku, StoreId: store, MinVersion: version})
					if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
						continue
					}
					return err
				}
			}
		}
	case "naive-postgres":
		n, err := openNaive(ctx, c.DatabaseURL, c.Concurrency)
		if err != nil {
			return nil, err
		}
		t = n
	}
	defer t.close()
	if name != "noop" {
		seed := seedCommands(runID, min(c.SeedSKUs, c.SKUs), c.Stores, 1_000_000)
		fmt.Fprintf(os.Stderr, "%s: seeding %d (sku, store) pairs...\n", name, len(seed))
		for i := 0; i < len(seed); i += 1000 {
			outs, err := t.do(ctx, seed[i:min(i+1000, len(seed))])
			if err != nil {
				return nil, fmt.Errorf("seeding: %w", err)
			}
			for _, o := range outs {
				if !o.accepted {
					return nil, fmt.Errorf("seeding: a receipt was rejected (%s)", o.reason)
				}
			}
		}
	}
	var before map[string]*dto.MetricFamily
	if name == "tally" {
		// Let the projection take in the seed first, so its backlog does
		// not count as the run's visibility.
		if err := waitCaughtUp(ctx, c.queryAddr(), time.Minute); err != nil {
			return nil, err
		}
		before, _ = scrape(ctx, c.queryAddr())
	}
	var (
		reads     map[string]*ReadStats
		readsDone = make(chan struct{})
	)
	if c.Reads > 0 {
		q, closeQ, err := queryClient(c.queryAddr())
		if err != nil {
			return nil, err
		}
		defer closeQ()
		readRate := rate
		if c.Reads < 1 {
			readRate = rate * c.Reads / (1 - c.Reads)
		}
		go func() {
			defer close(readsDone)
			reads = driveReads(ctx, q, readOpts{
				rate: readRate, mix: c.readMix, skus: min(c.SeedSKUs, c.SKUs), stores: c.Stores, zipf: c.Zipf,
				duration: c.Duration, warmup: c.Warmup, concurrency: c.Concurrency, seed: c.Seed,
			})
		}()
	} else {
		close(readsDone)
	}
	var r *run
	if c.Reads < 1 {
		w := newWorkload(c.Seed, c.SKUs, c.Stores, c.Zipf, c.mix, runID)
		r = drive(ctx, t, w, driveOpts{
			name: name, rate: rate, batch: c.Batch, duration: c.Duration, warmup: c.Warmup, concurrency: c.Concurrency,
			sampleRate: c.Sample, seed: c.Seed, probe: probe, keepAccepted: name == "tally" && !c.NoAudit, progress: true,
		})
	} else {
		r = &run{Target: name, Batch: c.Batch, Duration: c.Duration, Rejected: map[string]int64{}, Sustained: true}
	}
	<-readsDone
	r.Reads = reads
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if name == "tally" {
		after, _ := scrape(ctx, c.queryAddr())
		r.Projector = quantilesSince(histogramOf(before, visibilityMetric), histogramOf(after, visibilityMetric))
		cacheHitRates(r.Reads, before, after)
		q, closeQ, err := queryClient(c.queryAddr())
		if err == nil {
			if st, err := q.GetProjectionStatus(ctx, &inventoryv1.GetProjectionStatusRequest{}); err == nil {
				lag := st.GetTotalLag()
				r.LagAtEnd = &lag
			}
			closeQ()
		}
	}
	return r, nil
}

func (r *Report) print(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tbatch\toffered/s\tachieved/s\tsustained\tp50 ms\tp95 ms\tp99 ms\tp99.9 ms\tmax ms\tvis p50\tvis p99\tvis p99.9\tproj p99\tlag\t")
	for _, x := range r.Runs {
		vis := func(f func(*Percentiles) float64, p *Percentiles) string {
			if p == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f", f(p))
		}
		lag := "-"
		if x.LagAtEnd != nil {
			lag = strconv.FormatInt(*x.LagAtEnd, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%v\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n",
			x.Target, x.Batch, x.Rate, x.Achieved, x.Sustained, x.Latency.P50, x.Latency.P95, x.Latency.P99, x.Latency.P999, x.Latency.Max,
			vis(func(p *Percentiles) float64 { return p.P50 }, x.Visibility), vis(func(p *Percentiles) float64 { return p.P99 }, x.Visibility),
			vis(func(p *Percentiles) float64 { return p.P999 }, x.Visibility), vis(func(p *Percentiles) float64 { return p.P99 }, x.Projector), lag)
	}
	tw.Flush()
	for _, x := range r.Runs {
		if len(x.Rejected) > 0 {
			var parts []string
			for k, v := range x.Rejected {
				parts = append(parts, fmt.Sprintf("%s=%d", k, v))
			}
			fmt.Fprintf(out, "%s @%.0f/s rejected: %s (of %d commands, %d accepted)\n", x.Target, x.Rate, strings.Join(parts, " "), x.Commands, x.Accepted)
		}
	}
	if slices.ContainsFunc(r.Runs, func(x *run) bool { return len(x.Reads) > 0 }) {
		printReads(out, r.Runs)
	}
	if r.Compare != nil {
		fmt.Fprintf(out, "tally / naive-postgres: throughput x%.2f, p99 latency x%.2f\n", r.Compare.Throughput, r.Compare.P99)
	}
	if r.SweepBest != nil {
		fmt.Fprintf(out, "highest sustained rate with p99 write→query visibility < 250 ms: %.0f commands/s\n", *r.SweepBest)
	}
	if r.ReplayCount > 0 {
		fmt.Fprintf(out, "replay: %d events at %.0f events/s\n", r.ReplayCount, r.ReplayRate)
	}
	if r.Audit != nil {
		if r.Audit.OK() {
			fmt.Fprintf(out, "audit OK: %d events, %d SKUs, %d levels equal the fold of the log, %d accepted commands each exactly once\n",
				r.Audit.Events, r.Audit.SKUs, r.Audit.Levels, r.Audit.AcceptedChecked)
		} else {
			fmt.Fprintf(out, "AUDIT FAILED:\n  %s\n", strings.Join(r.Audit.Problems, "\n  "))
		}
	}
}

// waitCaughtUp waits until the projection has no lag.
func waitCaughtUp(ctx context.Context, addr string, limit time.Duration) error {
	q, closeQ, err := queryClient(addr)
	if err != nil {
		return err
	}
	defer closeQ()
	deadline := time.Now().Add(limit)
	for {
		st, err := q.GetProjectionStatus(ctx, &inventoryv1.GetProjectionStatusRequest{})
		if err == nil && st.GetTotalLag() == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			// %v, not %w: err is nil when the status came but the lag stayed.
			return fmt.Errorf("projection not caught up after %s (lag %d, %v)", limit, st.GetTotalLag(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
