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

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/datadir"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
)

// Config is `tally check`'s configuration.
type Config struct {
	KafkaBrokers string
	DataDir      string
	DatabaseURL  string
	Consumer     string
	Show         int
}

func (c *Config) flags(fs *flag.FlagSet) {
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "", "comma-separated Kafka seed brokers; empty opens the embedded broker's log under --data-dir (offline: no tally serve may be running on it)")
	config.String(fs, &c.DataDir, "data-dir", "./data", "tally serve's data directory, for the offline check (data/kafka, data/pg)")
	config.String(fs, &c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL read model to compare with the log; empty uses the embedded cluster under --data-dir/pg when it exists, else skips the comparison")
	config.String(fs, &c.Consumer, "consumer", "postgres", "the projection's name in projector_offsets")
	config.Int(fs, &c.Show, "show", 20, "problems printed per kind (all are counted)")
}

// Run is `tally check`. It prints what it verified and every kind of
// difference it found, and fails when it found any.
func Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally check", flag.ContinueOnError)
	var c Config
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := config.EnvErrors(fs); err != nil {
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
		k, err := kafka.StartEmbedded(dir, 0, log, kafka.NoRepair())
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
	r, err := Check(ctx, brokers, dsn, c.Consumer)
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

// Check reads the whole events topic and, when dsn is set, compares the
// read model with it.
func Check(ctx context.Context, brokers []string, dsn, consumer string) (*Report, error) {
	r := &Report{}
	// The read model's snapshot first: the log read afterwards reaches at
	// least as far as the offsets it stored.
	var rm *readModel
	if dsn != "" {
		var err error
		if rm, err = loadReadModel(ctx, dsn, consumer); err != nil {
			return nil, err
		}
	}
	events, err := readLog(ctx, brokers, r)
	if err != nil {
		return nil, err
	}
	checkLog(r, events)
	if rm != nil {
		compare(r, rm, events)
	}
	return r, nil
}

// readLog returns every decodable event of the events topic in offset
// order per partition.
func readLog(ctx context.Context, brokers []string, r *Report) ([]folded, error) {
	rd, err := kafka.OpenCommittedReader(ctx, kafka.ReaderConfig{Brokers: brokers, Topic: kafka.EventsTopic})
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
	rows, err = tx.Query(ctx, `SELECT sku_id, count(*), max(sku_version) FROM inventory_ledger GROUP BY sku_id`)
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
	want := map[storeKey]level{}
	ledger := map[string][2]int64{}
	for _, f := range events {
		if f.offset >= rm.offsets[f.partition] {
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
	rep := &ReadModelReport{Rows: len(rm.levels), LedgerRows: rm.ledgerRows, DeadLettered: len(rm.deadLettered)}
	for _, f := range events {
		if f.offset >= rm.offsets[f.partition] {
			rep.EventsBehind++
		}
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
