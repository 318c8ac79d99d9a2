// Package check is `tally check`: an operator's verifier of Tally's
// promises. It reads the events topic itself (transactions resolved from the
// raw records and markers, not trusting read_committed), checks that every
// SKU's versions are 1, 2, 3 … and that each event's levels follow from the
// one before, and compares the PostgreSQL read model with the fold of the
// log up to the offsets the projection has stored. It reads; it never
// appends to the log or changes the read model (offline, the embedded
// broker and PostgreSQL it starts on the data directory write their own
// bookkeeping, as they do at any start).
//
// It imports none of command/, projector/ and query/: what it checks is the
// contract of the log and the read model's tables, so a defect in one of
// them cannot hide itself.
package check

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/jackc/pgx/v5"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/datadir"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/kafkaflag"
	"github.com/tally-oss/tally/internal/pg"
)

// Config is `tally check`'s configuration.
type Config struct {
	KafkaBrokers  string
	KafkaSecurity kafkaflag.Security
	DataDir       string
	DatabaseURL   string
	Consumer      string
	Show          int
	BigQuery      struct{ Project, Dataset, Endpoint, Consumer string }
}

func (c *Config) flags(fs *flag.FlagSet) {
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "", "comma-separated Kafka seed brokers; empty opens the embedded broker's log under --data-dir (offline: no tally serve may be running on it)")
	c.KafkaSecurity.Register(fs)
	config.String(fs, &c.DataDir, "data-dir", "./data", "tally serve's data directory, for the offline check (data/kafka, data/pg)")
	config.String(fs, &c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL read model to compare with the log; empty uses the embedded cluster under --data-dir/pg when it exists, else skips the comparison")
	config.String(fs, &c.Consumer, "consumer", "postgres", "the projection's name in projector_offsets")
	config.Int(fs, &c.Show, "show", 20, "problems printed per kind (all are counted)")
	config.String(fs, &c.BigQuery.Project, "bigquery-project", "", "Google Cloud project of the BigQuery analytical model to compare with the log; empty skips it")
	config.String(fs, &c.BigQuery.Dataset, "bigquery-dataset", "", "its dataset")
	config.String(fs, &c.BigQuery.Endpoint, "bigquery-endpoint", "", "an emulator's endpoint, e.g. http://127.0.0.1:9050 (no authentication); empty uses BigQuery with Application Default Credentials")
	config.String(fs, &c.BigQuery.Consumer, "bigquery-consumer", "bigquery", "the BigQuery projection's name in its projector_offsets")
}

// Run is `tally check`. It prints what it verified and every kind of
// difference it found, and fails when it found any.
func Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally check", flag.ContinueOnError)
	config.Usage(fs, "tally check [flags]", "Read the whole log (resolving transactions itself) and check it: versions gap-free, levels never oversold, each command once; then compare the read model with its fold.",
		"tally check --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally")
	var c Config
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(fs), c.KafkaSecurity.Validate(c.KafkaBrokers == "")); err != nil {
		return err
	}
	sec, err := c.KafkaSecurity.Kafka()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	brokers := config.List(c.KafkaBrokers)
	if len(brokers) == 0 {
		dir := filepath.Join(c.DataDir, "kafka")
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("no --kafka-brokers and no embedded log at %s: %w", dir, err)
		}
		// Offline: the data directory must not be in use.
		lock, err := datadir.Acquire(c.DataDir, "tally check")
		if err != nil {
			return fmt.Errorf("%w (run tally check with --kafka-brokers and --database-url against a running tally serve)", err)
		}
		defer lock.Release() //nolint:errcheck // exiting
		// As the crash left it: check reports unmarked transactions, it
		// does not repair them (the next tally serve does).
		k, err := broker.Start(dir, 0, log, broker.NoRepair())
		if err != nil {
			return err
		}
		defer k.Close()
		brokers = k.Addrs()
	}
	dsn := c.DatabaseURL
	if dsn == "" && len(config.List(c.KafkaBrokers)) == 0 {
		dir := filepath.Join(c.DataDir, "pg")
		if _, err := os.Stat(dir); err == nil {
			cluster, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: dir, Durable: true, Logger: log, WaitForPrevious: time.Minute})
			if err != nil {
				return err
			}
			defer cluster.Stop()
			if dsn, err = cluster.CreateDatabase(ctx, "tally"); err != nil {
				return err
			}
		}
	}
	opts := Options{Brokers: brokers, Kafka: sec, DatabaseURL: dsn, Consumer: c.Consumer}
	if c.BigQuery.Project != "" {
		if c.BigQuery.Dataset == "" {
			return errors.New("--bigquery-dataset is required with --bigquery-project")
		}
		var copts []option.ClientOption
		if c.BigQuery.Endpoint != "" {
			copts = append(copts, option.WithEndpoint(c.BigQuery.Endpoint), option.WithoutAuthentication())
		}
		bq, err := bigquery.NewClient(ctx, c.BigQuery.Project, copts...)
		if err != nil {
			return fmt.Errorf("bigquery client: %w", err)
		}
		defer bq.Close()
		opts.BigQuery = &BigQuery{Client: bq, Dataset: c.BigQuery.Dataset, Consumer: c.BigQuery.Consumer}
	}
	r, err := Check(ctx, opts)
	if err != nil {
		return err
	}
	r.Print(os.Stdout, c.Show)
	if n := r.ProblemCount(); n > 0 {
		return fmt.Errorf("%w: %d", ErrProblems, n)
	}
	return nil
}

// ErrProblems is wrapped by Run's error when the check found differences.
var ErrProblems = errors.New("problems found")

// Report is what a check found.
type Report struct {
	Partitions  int
	Events      int
	SKUs        int
	Undecodable int
	// Unmarked counts transactions the broker decided without a marker.
	Unmarked int
	// ReadModel is set when a read model was compared.
	ReadModel *ReadModelReport
	// Analytical is set when the BigQuery model was compared.
	Analytical *AnalyticalReport
	// Problems by kind, in the order found.
	Problems map[string][]string
}

// ReadModelReport is the read model's side of a check.
type ReadModelReport struct {
	Rows         int   // stock_levels rows compared
	LedgerRows   int64 // inventory_ledger rows
	EventsBehind int64 // log offsets not yet projected
	DeadLettered int   // events the projection dead-lettered
}

// AnalyticalReport is the BigQuery model's side of a check.
type AnalyticalReport struct {
	Rows         int   // current_inventory rows compared
	EventRows    int64 // inventory_events rows
	EventsBehind int64 // log offsets not yet projected
}

func (r *Report) problem(kind, format string, args ...any) {
	if r.Problems == nil {
		r.Problems = map[string][]string{}
	}
	r.Problems[kind] = append(r.Problems[kind], fmt.Sprintf(format, args...))
}

// ProblemCount is the number of problems of every kind.
func (r *Report) ProblemCount() int {
	n := 0
	for _, ps := range r.Problems {
		n += len(ps)
	}
	return n
}

// Print writes the report, at most show problems per kind.
func (r *Report) Print(w io.Writer, show int) {
	fmt.Fprintf(w, "log: %d partitions, %d events, %d SKUs, %d undecodable records, %d transactions aborted without a marker\n",
		r.Partitions, r.Events, r.SKUs, r.Undecodable, r.Unmarked)
	if rm := r.ReadModel; rm != nil {
		fmt.Fprintf(w, "read model: %d stock levels and %d ledger rows compared with the fold of the log (%d offsets not yet projected, %d events dead-lettered)\n",
			rm.Rows, rm.LedgerRows, rm.EventsBehind, rm.DeadLettered)
	} else {
		fmt.Fprintln(w, "read model: not compared (no database)")
	}
	if a := r.Analytical; a != nil {
		fmt.Fprintf(w, "bigquery: %d current_inventory rows and %d inventory_events rows compared with the log (%d offsets not yet projected)\n",
			a.Rows, a.EventRows, a.EventsBehind)
	}
	kinds := slices.Sorted(func(yield func(string) bool) {
		for k := range r.Problems {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range kinds {
		ps := r.Problems[k]
		fmt.Fprintf(w, "PROBLEM %s: %d\n", k, len(ps))
		for _, p := range ps[:min(show, len(ps))] {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "OK: no problems found")
	}
}

type storeKey struct{ sku, store string }

type level struct {
	onHand, reserved, version int64
}

// folded is one event's place in the log.
type folded struct {
	partition int32
	offset    int64
	e         *inventoryv1.InventoryEvent
}

// Options say what Check compares.
type Options struct {
	// Brokers are the Kafka seed brokers of the events topic.
	Brokers []string
	// Kafka is how to reach them: TLS and SASL. nil is plaintext.
	Kafka *kafka.Security
	// DatabaseURL is the PostgreSQL read model; "" skips it.
	DatabaseURL string
	// Consumer is the Postgres projection's name in projector_offsets.
	// Default "postgres".
	Consumer string
	// BigQuery is the analytical model; nil skips it.
	BigQuery *BigQuery
}

// BigQuery is an analytical model to compare.
type BigQuery struct {
	Client  *bigquery.Client
	Dataset string
	// Consumer is the projection's name in its projector_offsets. Default
	// "bigquery".
	Consumer string
}

// Check reads the whole events topic and compares the models it is given
// with it.
func Check(ctx context.Context, o Options) (*Report, error) {
	if o.Consumer == "" {
		o.Consumer = "postgres"
	}
	r := &Report{}
	// The models' offsets first: the log read afterwards reaches at least
	// as far as the offsets they stored.
	var rm *readModel
	if o.DatabaseURL != "" {
		var err error
		if rm, err = loadReadModel(ctx, o.DatabaseURL, o.Consumer); err != nil {
			return nil, err
		}
	}
	var am *analyticalModel
	if o.BigQuery != nil {
		var err error
		if am, err = loadAnalytical(ctx, o.BigQuery); err != nil {
			return nil, err
		}
	}
	events, err := readLog(ctx, o.Brokers, o.Kafka, r)
	if err != nil {
		return nil, err
	}
	checkLog(r, events)
	if rm != nil {
		compare(r, rm, events)
	}
	if am != nil {
		compareAnalytical(r, am, events)
	}
	return r, nil
}

// readLog returns every decodable event of the events topic in offset
// order per partition.
func readLog(ctx context.Context, brokers []string, sec *kafka.Security, r *Report) ([]folded, error) {
	rd, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: brokers, Security: sec, Topic: kafka.EventsTopic})
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	r.Partitions = len(rd.Ends())
	var out []folded
	for !rd.Done() {
		bs, err := rd.Poll(ctx)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			for _, rec := range b.Records {
				e := &inventoryv1.InventoryEvent{}
				if err := proto.Unmarshal(rec.Value, e); err != nil || e.GetSkuId() == "" {
					r.Undecodable++
					continue
				}
				out = append(out, folded{partition: rec.Partition, offset: rec.Offset, e: e})
			}
		}
	}
	r.Unmarked = rd.Unmarked()
	r.Events = len(out)
	return out, nil
}

// checkLog checks the log against itself: versions, levels, placement,
// oversells and commands applied twice.
func checkLog(r *Report, events []folded) {
	versions := map[string]int64{}
	levels := map[storeKey]level{}
	type cmdKey struct{ sku, cmd string }
	ofCommand := map[cmdKey][]*inventoryv1.InventoryEvent{}
	for _, f := range events {
		e := f.e
		sku := e.GetSkuId()
		if want := kafka.PartitionFor(sku, int32(r.Partitions)); want != f.partition {
			r.problem("misplaced", "sku %q at %d/%d belongs in partition %d", sku, f.partition, f.offset, want)
		}
		if v := e.GetSkuVersion(); v != versions[sku]+1 {
			r.problem("version sequence", "sku %q: version %d after %d at %d/%d (event %s)", sku, v, versions[sku], f.partition, f.offset, e.GetEventId())
		}
		versions[sku] = max(versions[sku], e.GetSkuVersion())
		k := storeKey{sku, e.GetStoreId()}
		prev := levels[k]
		if oh, want := e.GetOnHandAfter(), prev.onHand+e.GetQuantityDelta(); oh != want {
			r.problem("fold", "sku %q store %q version %d: on_hand_after %d, but %d%+d = %d", sku, k.store, e.GetSkuVersion(), oh, prev.onHand, e.GetQuantityDelta(), want)
		}
		if rs, want := e.GetReservedAfter(), prev.reserved+e.GetReservedDelta(); rs != want {
			r.problem("fold", "sku %q store %q version %d: reserved_after %d, but %d%+d = %d", sku, k.store, e.GetSkuVersion(), rs, prev.reserved, e.GetReservedDelta(), want)
		}
		if avail := e.GetOnHandAfter() - e.GetReservedAfter(); avail < 0 && e.GetQuantityDelta()-e.GetReservedDelta() < 0 && !e.GetAllowNegative() {
			r.problem("oversold", "sku %q store %q version %d: available %d without allow_negative", sku, k.store, e.GetSkuVersion(), avail)
		}
		if e.GetReservedAfter() < 0 {
			r.problem("negative reserved", "sku %q store %q version %d: reserved_after %d", sku, k.store, e.GetSkuVersion(), e.GetReservedAfter())
		}
		levels[k] = level{e.GetOnHandAfter(), e.GetReservedAfter(), e.GetSkuVersion()}
		ck := cmdKey{sku, e.GetCommandId()}
		ofCommand[ck] = append(ofCommand[ck], e)
	}
	// A command leaves one event, or a transfer's out and in at two
	// consecutive versions; anything more was applied twice.
	for ck, es := range ofCommand {
		if len(es) == 1 || len(es) == 2 && isTransferPair(es[0], es[1]) {
			continue
		}
		vs := make([]int64, len(es))
		for i, e := range es {
			vs[i] = e.GetSkuVersion()
		}
		r.problem("applied twice", "sku %q: command %q left %d events, at versions %v", ck.sku, ck.cmd, len(es), vs)
	}
	r.SKUs = len(versions)
}

func isTransferPair(a, b *inventoryv1.InventoryEvent) bool {
	return a.GetEventType() == inventoryv1.EventType_EVENT_TYPE_TRANSFER_OUT &&
		b.GetEventType() == inventoryv1.EventType_EVENT_TYPE_TRANSFER_IN &&
		b.GetSkuVersion() == a.GetSkuVersion()+1
}

type readModel struct {
	offsets      map[int32]int64
	levels       map[storeKey]level
	ledger       map[string][2]int64 // sku -> rows, max version
	ledgerRows   int64
	deadLettered map[position]bool
}

// position is a record's place in the log.
type position struct {
	partition int32
	offset    int64
}

// loadReadModel reads what `check` compares in one repeatable-read
// snapshot, so the offsets and the rows agree.
func loadReadModel(ctx context.Context, dsn, consumer string) (*readModel, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	defer conn.Close(ctx)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	rm := &readModel{offsets: map[int32]int64{}, levels: map[storeKey]level{}, ledger: map[string][2]int64{}, deadLettered: map[position]bool{}}
	rows, err := tx.Query(ctx, `SELECT log_partition, next_offset FROM projector_offsets WHERE consumer = $1`, consumer)
	if err != nil {
		return nil, fmt.Errorf("read model offsets: %w", err)
	}
	var (
		p   int32
		off int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&p, &off}, func() error { rm.offsets[p] = off; return nil }); err != nil {
		return nil, fmt.Errorf("read model offsets: %w", err)
	}
	var (
		k storeKey
		l level
	)
	rows, err = tx.Query(ctx, `SELECT sku_id, store_id, on_hand, reserved, sku_version FROM stock_levels`)
	if err != nil {
		return nil, fmt.Errorf("stock_levels: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&k.sku, &k.store, &l.onHand, &l.reserved, &l.version}, func() error { rm.levels[k] = l; return nil }); err != nil {
		return nil, fmt.Errorf("stock_levels: %w", err)
	}
	var (
		sku        string
		n, maxVers int64
	)
	// The rows, and the events of the compacted months' chunks (migration
	// 0008), counted from their arrays.
	ledger := `SELECT sku_id, count(*), max(sku_version) FROM inventory_ledger GROUP BY sku_id`
	var chunks bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('ledger_chunks') IS NOT NULL`).Scan(&chunks); err != nil {
		return nil, err
	}
	if chunks {
		ledger = `SELECT sku_id, sum(n)::bigint, max(v) FROM (
			SELECT sku_id, count(*) AS n, max(sku_version) AS v FROM inventory_ledger GROUP BY sku_id
			UNION ALL
			SELECT sku_id, sum(cardinality(sku_version)), max(last_version) FROM ledger_chunks GROUP BY sku_id) l GROUP BY sku_id`
	}
	rows, err = tx.Query(ctx, ledger)
	if err != nil {
		return nil, fmt.Errorf("inventory_ledger: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&sku, &n, &maxVers}, func() error {
		rm.ledger[sku] = [2]int64{n, maxVers}
		rm.ledgerRows += n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("inventory_ledger: %w", err)
	}
	var hasDLQ bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('projection_dead_letters') IS NOT NULL`).Scan(&hasDLQ); err != nil {
		return nil, err
	}
	if hasDLQ {
		var (
			p   int32
			off int64
		)
		rows, err = tx.Query(ctx, `SELECT log_partition, log_offset FROM projection_dead_letters WHERE consumer = $1`, consumer)
		if err != nil {
			return nil, fmt.Errorf("projection_dead_letters: %w", err)
		}
		if _, err := pgx.ForEachRow(rows, []any{&p, &off}, func() error { rm.deadLettered[position{p, off}] = true; return nil }); err != nil {
			return nil, fmt.Errorf("projection_dead_letters: %w", err)
		}
	}
	return rm, nil
}

// compare checks the read model against the fold of the events below the
// offsets it stored, dead-lettered events left out.
func compare(r *Report, rm *readModel, events []folded) {
	rep := &ReadModelReport{Rows: len(rm.levels), LedgerRows: rm.ledgerRows, DeadLettered: len(rm.deadLettered)}
	want := map[storeKey]level{}
	ledger := map[string][2]int64{}
	for _, f := range events {
		if f.offset >= rm.offsets[f.partition] {
			rep.EventsBehind++
			continue
		}
		if rm.deadLettered[position{f.partition, f.offset}] {
			continue
		}
		e := f.e
		want[storeKey{e.GetSkuId(), e.GetStoreId()}] = level{e.GetOnHandAfter(), e.GetReservedAfter(), e.GetSkuVersion()}
		l := ledger[e.GetSkuId()]
		ledger[e.GetSkuId()] = [2]int64{l[0] + 1, max(l[1], e.GetSkuVersion())}
	}
	r.ReadModel = rep
	for k, w := range want {
		got, ok := rm.levels[k]
		switch {
		case !ok:
			r.problem("read model", "stock_levels has no row for sku %q store %q (log: on_hand %d reserved %d version %d)", k.sku, k.store, w.onHand, w.reserved, w.version)
		case got != w:
			r.problem("read model", "stock_levels sku %q store %q: on_hand %d reserved %d version %d; log: on_hand %d reserved %d version %d",
				k.sku, k.store, got.onHand, got.reserved, got.version, w.onHand, w.reserved, w.version)
		}
	}
	for k, got := range rm.levels {
		if _, ok := want[k]; !ok {
			r.problem("read model", "stock_levels has sku %q store %q (version %d) that the projected log does not", k.sku, k.store, got.version)
		}
	}
	for sku, w := range ledger {
		if got := rm.ledger[sku]; got != w {
			r.problem("ledger", "inventory_ledger sku %q: %d rows up to version %d; log: %d events up to version %d", sku, got[0], got[1], w[0], w[1])
		}
	}
	for sku, got := range rm.ledger {
		if _, ok := ledger[sku]; !ok {
			r.problem("ledger", "inventory_ledger has %d rows of sku %q that the projected log does not", got[0], sku)
		}
	}
}

type analyticalModel struct {
	offsets map[int32]int64
	current map[storeKey]level
	// per sku: rows, distinct versions, max version in inventory_events
	events map[string][3]int64
	rows   int64
}

// loadAnalytical reads the BigQuery model: its offsets first, then the
// tables, which may hold more than the offsets say (a batch lands before
// its offsets move), never less.
func loadAnalytical(ctx context.Context, b *BigQuery) (*analyticalModel, error) {
	if b.Consumer == "" {
		b.Consumer = "bigquery"
	}
	table := func(name string) string { return "`" + b.Client.Project() + "." + b.Dataset + "." + name + "`" }
	am := &analyticalModel{offsets: map[int32]int64{}, current: map[storeKey]level{}, events: map[string][3]int64{}}
	each := func(sql string, params []bigquery.QueryParameter, fn func(row []bigquery.Value) error) error {
		q := b.Client.Query(sql)
		q.Parameters = params
		it, err := q.Read(ctx)
		if err != nil {
			return err
		}
		for {
			var row []bigquery.Value
			err := it.Next(&row)
			if errors.Is(err, iterator.Done) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := fn(row); err != nil {
				return err
			}
		}
	}
	if err := each("SELECT log_partition, next_offset FROM "+table("projector_offsets")+" WHERE consumer = @consumer",
		[]bigquery.QueryParameter{{Name: "consumer", Value: b.Consumer}}, func(row []bigquery.Value) error {
			am.offsets[int32(row[0].(int64))] = row[1].(int64)
			return nil
		}); err != nil {
		return nil, fmt.Errorf("bigquery projector_offsets: %w", err)
	}
	if err := each("SELECT sku_id, store_id, on_hand, reserved, sku_version FROM "+table("current_inventory"), nil, func(row []bigquery.Value) error {
		am.current[storeKey{row[0].(string), row[1].(string)}] = level{row[2].(int64), row[3].(int64), row[4].(int64)}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("bigquery current_inventory: %w", err)
	}
	if err := each("SELECT sku_id, COUNT(*), COUNT(DISTINCT sku_version), MAX(sku_version) FROM "+table("inventory_events")+" GROUP BY sku_id", nil, func(row []bigquery.Value) error {
		n := row[1].(int64)
		am.events[row[0].(string)] = [3]int64{n, row[2].(int64), row[3].(int64)}
		am.rows += n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("bigquery inventory_events: %w", err)
	}
	return am, nil
}

// compareAnalytical checks the BigQuery model against the log: every
// (sku, store) the projected log reaches has a current_inventory row at
// least that new, every row equals the log's state at its version, and
// inventory_events holds each projected event once.
func compareAnalytical(r *Report, am *analyticalModel, events []folded) {
	rep := &AnalyticalReport{Rows: len(am.current), EventRows: am.rows}
	want := map[storeKey]level{}
	at := map[storeKey]map[int64]level{} // the log's state of (sku, store) at each version
	projected := map[string]int64{}
	maxVersion := map[string]int64{}
	for _, f := range events {
		e := f.e
		k := storeKey{e.GetSkuId(), e.GetStoreId()}
		l := level{e.GetOnHandAfter(), e.GetReservedAfter(), e.GetSkuVersion()}
		if at[k] == nil {
			at[k] = map[int64]level{}
		}
		at[k][l.version] = l
		maxVersion[k.sku] = max(maxVersion[k.sku], l.version)
		if f.offset >= am.offsets[f.partition] {
			rep.EventsBehind++
			continue
		}
		want[k] = l
		projected[k.sku]++
	}
	r.Analytical = rep
	for k, w := range want {
		got, ok := am.current[k]
		switch {
		case !ok:
			r.problem("bigquery current_inventory", "no row for sku %q store %q (log: on_hand %d reserved %d version %d)", k.sku, k.store, w.onHand, w.reserved, w.version)
		case got.version < w.version:
			r.problem("bigquery current_inventory", "sku %q store %q at version %d; the projected log is at %d", k.sku, k.store, got.version, w.version)
		}
	}
	for k, got := range am.current {
		if l, ok := at[k][got.version]; !ok || l != got {
			r.problem("bigquery current_inventory", "sku %q store %q: on_hand %d reserved %d version %d; the log at that version: %+v (found %v)",
				k.sku, k.store, got.onHand, got.reserved, got.version, l, ok)
		}
	}
	for sku, n := range projected {
		got := am.events[sku]
		switch {
		case got[0] != got[1]:
			r.problem("bigquery inventory_events", "sku %q: %d rows for %d versions (an event twice)", sku, got[0], got[1])
		case got[1] < n:
			r.problem("bigquery inventory_events", "sku %q: %d events, the projected log has %d", sku, got[1], n)
		}
	}
	for sku, got := range am.events {
		if got[2] > maxVersion[sku] {
			r.problem("bigquery inventory_events", "sku %q: version %d, beyond the log's %d", sku, got[2], maxVersion[sku])
		}
	}
}
