// Package soak is `tally bench --soak` (issue #14, "running for years"): it
// writes a long log straight into Kafka, as the partition writers would
// have written it over months, then measures what must not grow with
// history: the write side's restart with and without snapshots, the
// projector's catch-up, the read model's bytes per event, query latency at
// two ledger sizes, and the drop of a ledger month.
//
// It drives the real parts (command.Service, projector.Postgres,
// query.Service behind its gRPC server) in this process; the bench package
// only parses the flags and prints the report, since it may not import them.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/projector"
	"github.com/tally-oss/tally/query"
)

// txnEvents is how many events one producer transaction holds.
const txnEvents = 20_000

// soak is one run.
type soak struct {
	cfg      bench.SoakConfig
	log      *slog.Logger
	progress io.Writer
	brokers  []string
	dsn      string
	pool     *pgxpool.Pool
	gen      *generator
	kafkaDir string // the embedded broker's, for the log's size
	// ends are the offsets after each partition's last event produced.
	ends      []int64
	projected time.Duration
	rep       *bench.SoakReport
}

// Run is `tally bench --soak`: see the package comment.
func Run(ctx context.Context, cfg bench.SoakConfig) (*bench.SoakReport, error) {
	s := &soak{cfg: cfg, progress: cfg.Progress, ends: make([]int64, cfg.Partitions),
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if s.progress == nil {
		s.progress = io.Discard
	}
	s.rep = &bench.SoakReport{SKUs: cfg.SKUs, Partitions: cfg.Partitions, Span: cfg.HistorySpan.String()}
	closeAll, err := s.start(ctx)
	defer closeAll()
	if err != nil {
		return nil, err
	}
	return s.rep, s.run(ctx)
}

// start brings up Kafka and PostgreSQL (embedded unless given) and the
// read model's schema; the returned function releases them.
func (s *soak) start(ctx context.Context) (func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	dir := s.cfg.DataDir
	if dir == "" && (len(s.cfg.Brokers) == 0 || s.cfg.DatabaseURL == "") {
		d, err := os.MkdirTemp("", "tally-soak-")
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, func() { os.RemoveAll(d) })
		dir = d
	}
	s.brokers = s.cfg.Brokers
	if len(s.brokers) == 0 {
		s.kafkaDir = filepath.Join(dir, "kafka")
		k, err := broker.Start(s.kafkaDir, 0, s.log)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, k.Close)
		s.brokers = k.Addrs()
	}
	if err := s.createTopic(ctx); err != nil {
		return closeAll, err
	}
	if s.cfg.DatabaseURL == "" {
		cluster, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: filepath.Join(dir, "pg"), Durable: true, Logger: s.log})
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, cluster.Stop)
		if s.dsn, err = cluster.CreateDatabase(ctx, "tally"); err != nil {
			return closeAll, err
		}
	} else {
		var err error
		if s.dsn, err = freshDatabase(ctx, s.cfg.DatabaseURL, fmt.Sprintf("tally_soak_%d", time.Now().Unix())); err != nil {
			return closeAll, err
		}
		fmt.Fprintf(s.progress, "read model in a fresh database: %s\n", s.dsn)
	}
	pool, err := pgxpool.New(ctx, s.dsn)
	if err != nil {
		return closeAll, err
	}
	closers = append(closers, pool.Close)
	s.pool = pool
	if err := readmodel.Migrate(ctx, pool, s.log); err != nil {
		return closeAll, fmt.Errorf("migrate: %w", err)
	}
	return closeAll, nil
}

// createTopic creates the events topic, or takes an empty one as it is
// (`tally kafka` creates it at start), refusing one with records: the
// generated log must be the whole log.
func (s *soak) createTopic(ctx context.Context) error {
	cl, err := kgo.NewClient(kafka.Options(s.brokers, nil, nil)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	n, err := kafka.EnsureTopic(ctx, adm, kafka.EventsTopic, int32(s.cfg.Partitions), kafka.EventTopicConfigs())
	if err != nil {
		return err
	}
	ends, err := adm.ListEndOffsets(ctx, kafka.EventsTopic)
	if err != nil {
		return err
	}
	var records int64
	ends.Each(func(o kadm.ListedOffset) { records += o.Offset })
	if records > 0 {
		return fmt.Errorf("the soak writes the whole log itself: topic %s on %v is not empty", kafka.EventsTopic, s.brokers)
	}
	s.cfg.Partitions, s.rep.Partitions, s.ends = int(n), int(n), make([]int64, n)
	return nil
}

// freshDatabase creates database name on the server of dsn and returns its
// connection string.
func freshDatabase(ctx context.Context, dsn, name string) (string, error) {
	// Checked before anything is created; the URL is not quoted back, as
	// it may hold a password.
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "", errors.New("--database-url must be a postgres:// URL to make a fresh database in (a key=value string cannot be pointed at another database)")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func (s *soak) run(ctx context.Context) error {
	end := time.Now()
	s.gen = newGenerator(s.cfg, end)
	qaddr, stopQuery, err := s.startQuery(ctx)
	if err != nil {
		return err
	}
	defer stopQuery()
	var keys []bench.StockKey
	var produceTime time.Duration
	for _, upto := range []int{s.cfg.QueryAt, s.cfg.Events} {
		if s.gen.made >= upto {
			continue
		}
		done := s.stage(fmt.Sprintf("produce to %d", upto))
		t, err := s.produce(ctx, upto)
		done()
		if err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		produceTime += t
		s.rep.RSSAfterProduce, _ = rss()
		done = s.stage(fmt.Sprintf("project to %d", upto))
		if err := s.project(ctx); err != nil {
			return fmt.Errorf("project: %w", err)
		}
		done()
		if keys == nil {
			keys = s.gen.queryKeys(1000)
		}
		at, err := s.measureRead(ctx, qaddr, keys)
		if err != nil {
			return err
		}
		s.rep.At = append(s.rep.At, at)
	}
	if err := s.compact(ctx, end); err != nil {
		return fmt.Errorf("compact the ledger: %w", err)
	}
	if s.rep.CompactRows > 0 {
		at, err := s.measureRead(ctx, qaddr, keys)
		if err != nil {
			return err
		}
		s.rep.At = append(s.rep.At, at)
	}
	s.rep.Events = int64(s.gen.made)
	s.rep.Produce = float64(s.gen.made) / produceTime.Seconds()
	s.rep.Projector = float64(s.gen.made) / s.projected.Seconds()
	if s.kafkaDir != "" {
		s.rep.LogBytes = dirSize(s.kafkaDir)
	}
	for _, r := range []struct {
		name  string
		every int
	}{{"no snapshots", -1}, {"snapshots, first start", 0}, {"snapshots, clean restart", 0}} {
		done := s.stage("writers: " + r.name)
		x, err := s.restart(ctx, r.name, r.every)
		done()
		if err != nil {
			return fmt.Errorf("writer start (%s): %w", r.name, err)
		}
		s.rep.Restarts = append(s.rep.Restarts, x)
	}
	// A crash leaves on average half of --snapshot-every (100,000) events
	// per partition after the last snapshot: append them, then start again.
	tail := min(s.cfg.Partitions*50_000, max(s.cfg.Events/10, 1))
	if _, err := s.produce(ctx, s.gen.made+tail); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	name := fmt.Sprintf("snapshots, %d events after", tail)
	done := s.stage("writers: " + name)
	x, err := s.restart(ctx, name, 0)
	done()
	if err != nil {
		return fmt.Errorf("writer start (%s): %w", name, err)
	}
	s.rep.Restarts = append(s.rep.Restarts, x)
	if s.cfg.Check {
		fmt.Fprintln(s.progress, "checking the read model against the fold of the log...")
		done := s.stage("check")
		cr, err := check.Check(ctx, check.Options{Brokers: s.brokers, DatabaseURL: s.dsn})
		done()
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		n := cr.ProblemCount()
		s.rep.CheckProblems = &n
		var b strings.Builder
		cr.Print(&b, 5)
		s.rep.CheckSummary = strings.TrimSpace(b.String())
	}
	if err := s.dropOldestMonth(ctx, end); err != nil {
		return fmt.Errorf("drop a ledger month: %w", err)
	}
	return nil
}

// produce writes the log up to upto events: the generator feeds one
// transactional producer per partition, each committing txnEvents events a
// transaction. It returns the time it took.
func (s *soak) produce(ctx context.Context, upto int) (time.Duration, error) {
	start, from := time.Now(), s.gen.made
	g, gctx := errgroup.WithContext(ctx)
	chans := make([]chan []*kgo.Record, s.cfg.Partitions)
	for p := range chans {
		chans[p] = make(chan []*kgo.Record, 2)
		g.Go(func() error { return s.producer(gctx, int32(p), chans[p]) })
	}
	g.Go(func() error {
		defer func() {
			for _, ch := range chans {
				close(ch)
			}
		}()
		pending := make([][]*kgo.Record, len(chans))
		last := time.Now()
		for s.gen.made < upto {
			p, recs, err := s.gen.next()
			if err != nil {
				return err
			}
			pending[p] = append(pending[p], recs...)
			if len(pending[p]) >= txnEvents {
				select {
				case chans[p] <- pending[p]:
				case <-gctx.Done():
					return gctx.Err()
				}
				pending[p] = make([]*kgo.Record, 0, txnEvents+1)
			}
			if time.Since(last) >= time.Second {
				last = time.Now()
				done, el := s.gen.made, time.Since(start)
				rate := float64(done-from) / el.Seconds()
				eta := time.Duration(float64(max(s.cfg.Events-done, 0)) / rate * float64(time.Second))
				fmt.Fprintf(s.progress, "\r\033[Kproducing: %d/%d events, %.0f events/s, ETA %s (this phase to %d)", done, s.cfg.Events, rate, eta.Round(time.Second), upto)
			}
		}
		for p, recs := range pending {
			if len(recs) > 0 {
				select {
				case chans[p] <- recs:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	err := g.Wait()
	took := time.Since(start)
	fmt.Fprintf(s.progress, "\r\033[Kproduced %d events in %s (%.0f events/s)\n", s.gen.made-from, took.Round(time.Millisecond), float64(s.gen.made-from)/took.Seconds())
	return took, err
}

// producer commits each batch of partition p in its own transaction.
func (s *soak) producer(ctx context.Context, p int32, batches <-chan []*kgo.Record) error {
	cl, err := kgo.NewClient(append(kafka.Options(s.brokers, nil, nil),
		kgo.TransactionalID(fmt.Sprintf("tally-soak-%d", p)),
		kgo.TransactionTimeout(time.Minute),
		kgo.DefaultProduceTopic(kafka.EventsTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(2*txnEvents+1024),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for recs := range batches {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return err
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return err
		}
		s.ends[p] = recs[len(recs)-1].Offset + 1
	}
	return nil
}

// project runs the Postgres projector until it has projected every event
// produced, and adds the time to s.projected.
func (s *soak) project(ctx context.Context) error {
	p, err := projector.NewPostgres(projector.Config{Consume: projector.Consume{Brokers: s.brokers, Logger: s.log}, Pool: s.pool})
	if err != nil {
		return err
	}
	start := time.Now()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(pctx) }()
	before := s.projectedOffsets(ctx)
	var total int64
	for i, e := range s.ends {
		total += e - before[int32(i)]
	}
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("projector stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
		got, behind := s.projectedOffsets(ctx), int64(0)
		for i, e := range s.ends {
			behind += max(e-got[int32(i)], 0)
		}
		el := time.Since(start)
		fmt.Fprintf(s.progress, "\r\033[Kprojecting: %d offsets behind, %.0f offsets/s", behind, float64(total-behind)/el.Seconds())
		if behind == 0 {
			s.projected += el
			fmt.Fprintf(s.progress, "\r\033[Kprojected %d offsets in %s (%.0f/s)\n", total, el.Round(time.Millisecond), float64(total)/el.Seconds())
			cancel()
			if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}
	}
}

func (s *soak) projectedOffsets(ctx context.Context) map[int32]int64 {
	got, err := projector.LoadOffsets(ctx, s.pool, "postgres")
	if err != nil {
		return map[int32]int64{}
	}
	return got
}

// startQuery serves the QueryService on a loopback port.
func (s *soak) startQuery(ctx context.Context) (string, func(), error) {
	srv, err := server.Listen("127.0.0.1:0", nil, s.log)
	if err != nil {
		return "", nil, err
	}
	path, h := inventoryv1connect.NewQueryServiceHandler(query.New(query.Config{Pool: s.pool, Logger: s.log}), srv.HandlerOptions()...)
	srv.Handle(inventoryv1connect.QueryServiceName, path, h)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, time.Second); close(done) }()
	return srv.Addr(), func() { cancel(); <-done }, nil
}

// measureRead measures the read model's size and the queries' latency.
// ANALYZE first, as autovacuum would have by then on a live system.
func (s *soak) measureRead(ctx context.Context, addr string, keys []bench.StockKey) (bench.SoakAt, error) {
	var at bench.SoakAt
	if _, err := s.pool.Exec(ctx, "ANALYZE "+readmodel.Ledger+"; ANALYZE stock_levels"); err != nil {
		return at, err
	}
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+readmodel.Ledger+`),
		(SELECT coalesce(sum(events), 0) FROM ledger_chunks),
		(SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent IN ($1::regclass, 'ledger_chunks'::regclass)),
		(SELECT count(*) FROM stock_levels),
		pg_total_relation_size('stock_levels')`, readmodel.Ledger).Scan(&at.LedgerRows, &at.Compacted, &at.LedgerBytes, &at.StockLevels, &at.StockBytes)
	if err != nil {
		return at, fmt.Errorf("read model size: %w", err)
	}
	at.LedgerRows += at.Compacted
	if at.LedgerRows > 0 {
		at.BytesPerEvent = float64(at.LedgerBytes) / float64(at.LedgerRows)
	}
	fmt.Fprintf(s.progress, "timing %d GetStock and %d GetStockHistory calls at %d ledger rows...\n", s.cfg.Queries, s.cfg.Queries, at.LedgerRows)
	at.GetStock, at.GetStockHistory, err = bench.TimeQueries(ctx, addr, keys, s.cfg.Queries)
	return at, err
}

// restart starts the write side on the whole log and times it until a
// command on every partition succeeded, then closes it (a writer with
// snapshots writes one at close).
func (s *soak) restart(ctx context.Context, name string, snapshotEvery int) (bench.SoakRestart, error) {
	x := bench.SoakRestart{Name: name}
	opens := &opens{next: s.log.Handler(), opened: &opened{}}
	fmt.Fprintf(s.progress, "starting the write side (%s)...\n", name)
	start := time.Now()
	svc, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: s.brokers, Logger: slog.New(opens), SnapshotEvery: snapshotEvery},
		Partitions:   int32(s.cfg.Partitions),
	})
	if err != nil {
		return x, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for p := range int32(s.cfg.Partitions) {
		g.Go(func() error { return probe(gctx, svc, p, int32(s.cfg.Partitions), name) })
	}
	err = g.Wait()
	x.Seconds = time.Since(start).Seconds()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if cerr := svc.Close(cctx); err == nil {
		err = cerr
	}
	opens.mu.Lock()
	x.EventsFolded, x.FromSnapshot, x.OpenSeconds, x.DedupeCommands = opens.folded, opens.fromSnapshot, opens.slowest.Seconds(), opens.dedupe
	opens.mu.Unlock()
	fmt.Fprintf(s.progress, "  writable in %.2fs, %d events folded, %d partitions from a snapshot\n", x.Seconds, x.EventsFolded, x.FromSnapshot)
	return x, err
}

// probe sends a receipt of a SKU of partition p until one is accepted.
func probe(ctx context.Context, svc *command.Service, p, n int32, run string) error {
	sku := ""
	for i := 0; ; i++ {
		if sku = "soak-probe-" + strconv.Itoa(i); kafka.PartitionFor(sku, n) == p {
			break
		}
	}
	cmd := &command.Command{ID: fmt.Sprintf("soak-probe-%d-%s", p, strings.ReplaceAll(run, " ", "-")), Kind: command.KindReceipt, SKU: sku, Store: bench.StoreName(0), Quantity: 1}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := svc.Do(cctx, cmd)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, command.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("partition %d: %w", p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opens sums what the writers say when they are ready (writer.go's
// "partition writer ready") and passes warnings on.
type opens struct {
	next slog.Handler
	*opened
}

// opened is what the writers of one start said, shared by the handlers
// derived with WithAttrs.
type opened struct {
	mu           sync.Mutex
	folded       int64
	dedupe       int64
	fromSnapshot int
	slowest      time.Duration
}

func (h *opens) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *opens) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "partition writer ready" {
		h.mu.Lock()
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "events_replayed":
				h.folded += a.Value.Int64()
			case "dedupe_commands":
				h.dedupe += a.Value.Int64()
			case "from_snapshot":
				if a.Value.Bool() {
					h.fromSnapshot++
				}
			case "took":
				h.slowest = max(h.slowest, a.Value.Duration())
			}
			return true
		})
		h.mu.Unlock()
	}
	if r.Level >= slog.LevelWarn && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *opens) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *opens) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

// compact times the projector's maintenance compacting the months that
// ended a day before now, as --ledger-compact-after does by default, and
// measures what the chunks cost per event.
func (s *soak) compact(ctx context.Context, now time.Time) error {
	fmt.Fprintln(s.progress, "compacting the ledger's months that ended before yesterday...")
	done := s.stage("compact")
	defer done()
	last := time.Now()
	start := last
	res, err := readmodel.MaintainLedger(ctx, s.pool, now, readmodel.LedgerPolicy{CompactAfter: 24 * time.Hour, Progress: func(m time.Time, moved int64) {
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			fmt.Fprintf(s.progress, "  %s: %d rows moved\n", m.Format("2006-01"), moved)
		}
	}})
	if err != nil {
		return err
	}
	s.rep.CompactSeconds = time.Since(start).Seconds()
	for i, m := range res.Compacted {
		s.rep.CompactMonths = append(s.rep.CompactMonths, m.Format("2006-01"))
		s.rep.CompactRows += res.CompactedRows[i]
	}
	if s.rep.CompactRows == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE ledger_chunks"); err != nil {
		return err
	}
	var events, bytes int64
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT sum(events) FROM ledger_chunks),
		(SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'ledger_chunks'::regclass)`).Scan(&events, &bytes); err != nil {
		return err
	}
	s.rep.CompactBytesPerEvent = float64(bytes) / float64(events)
	return nil
}

// dropOldestMonth times the projector's retention dropping the ledger's
// oldest month, when that month is before the current one.
func (s *soak) dropOldestMonth(ctx context.Context, now time.Time) error {
	months, err := readmodel.LedgerMonths(ctx, s.pool)
	if err != nil || len(months) == 0 || !months[0].Before(readmodel.Month(now)) {
		return err
	}
	oldest := months[0]
	rows := pgx.Identifier{readmodel.Ledger + "_" + oldest.Format("2006_01")}.Sanitize()
	chunks := pgx.Identifier{"ledger_chunks_" + oldest.Format("2006_01")}.Sanitize()
	if err := s.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+rows+") + (SELECT coalesce(sum(events), 0) FROM "+chunks+`),
		pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass)`, rows, chunks).Scan(&s.rep.DropRows, &s.rep.DropBytes); err != nil {
		return err
	}
	// The retention that makes exactly the oldest month due.
	retention := now.Sub(oldest.AddDate(0, 1, 0))
	fmt.Fprintf(s.progress, "dropping ledger month %s...\n", oldest.Format("2006-01"))
	start := time.Now()
	res, err := readmodel.MaintainLedger(ctx, s.pool, now, readmodel.LedgerPolicy{Retention: retention})
	if err != nil {
		return err
	}
	s.rep.DropSeconds = time.Since(start).Seconds()
	if len(res.Dropped) != 1 || !res.Dropped[0].Equal(oldest) {
		return fmt.Errorf("dropped %v, want only %s", res.Dropped, oldest.Format("2006-01"))
	}
	s.rep.DropMonth = oldest.Format("2006-01")
	return nil
}

// stage resets the process's peak RSS and returns what records it at the
// stage's end.
func (s *soak) stage(name string) func() {
	// Writing 5 to clear_refs resets VmHWM (Linux).
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	return func() {
		_, peak := rss()
		s.rep.RSSByStage = append(s.rep.RSSByStage, bench.SoakStage{Stage: name, Peak: peak})
		s.rep.RSSPeak = max(s.rep.RSSPeak, peak)
	}
}

// rss is the process's resident set now and at its peak (Linux).
func rss() (now, peak int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			now = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return now, peak
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
