package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/config"
)

// SoakConfig is what `tally bench --soak` runs: a log of Events events
// written straight into Kafka (as the partition writers would have written
// them over HistorySpan), then what issue #14 asks of a Tally that has been
// running for years.
type SoakConfig struct {
	// Events is the log's length. QueryAt is the ledger's size at the first
	// of the two query measurements (the second is at Events).
	Events, QueryAt int
	// HistorySpan is how far back the log goes, ending now.
	HistorySpan time.Duration
	SKUs        int
	Stores      int
	Zipf        float64
	Mix         Mix
	Seed        int64
	// Partitions of the events topic.
	Partitions int
	// Queries is how many calls of each query are timed at each size.
	Queries int
	// Brokers and DatabaseURL are an existing Kafka (whose events topic
	// must not exist yet) and PostgreSQL server (a fresh database is created
	// in it); empty starts the embedded ones under DataDir.
	Brokers     []string
	DatabaseURL string
	DataDir     string
	// Check compares the read model with the fold of the log at the end
	// (tally check; it holds the whole log in memory).
	Check bool
	// Progress receives progress lines; nil is quiet.
	Progress io.Writer
}

// SoakReport is what a soak measured. Times are seconds, sizes bytes.
type SoakReport struct {
	Events     int64   `json:"events"`
	SKUs       int     `json:"skus"`
	Partitions int     `json:"partitions"`
	Span       string  `json:"history_span"`
	Produce    float64 `json:"produce_events_per_s"`
	// RSS of the process (with the embedded broker in it) after the log
	// was produced, and its peak over the whole run.
	RSSAfterProduce int64 `json:"rss_after_produce_bytes"`
	RSSPeak         int64 `json:"rss_peak_bytes"`
	// RSSByStage is the process's peak RSS in each stage, in order.
	RSSByStage []SoakStage `json:"rss_peak_by_stage,omitempty"`
	LogBytes   int64       `json:"log_bytes,omitempty"`

	Projector float64 `json:"projector_events_per_s"`
	// At are the query and storage figures at each ledger size.
	At []SoakAt `json:"at"`

	Restarts []SoakRestart `json:"restarts"`

	// CompactMonths are the months compaction moved into chunks (YYYY-MM),
	// CompactRows the rows it moved, CompactSeconds the time it took, and
	// CompactBytesPerEvent what the chunks cost per event they hold
	// (tables, TOAST and key).
	CompactMonths        []string `json:"compact_months,omitempty"`
	CompactRows          int64    `json:"compact_rows,omitempty"`
	CompactSeconds       float64  `json:"compact_seconds,omitempty"`
	CompactBytesPerEvent float64  `json:"compact_bytes_per_event,omitempty"`

	// DropMonth is the oldest month of the ledger dropped at the end
	// (YYYY-MM), with its rows and size; empty when the ledger had only the
	// current month.
	DropMonth   string  `json:"drop_month,omitempty"`
	DropRows    int64   `json:"drop_rows,omitempty"`
	DropBytes   int64   `json:"drop_bytes,omitempty"`
	DropSeconds float64 `json:"drop_seconds,omitempty"`

	// CheckProblems is set when the check ran: problems tally check found.
	CheckProblems *int   `json:"check_problems,omitempty"`
	CheckSummary  string `json:"check_summary,omitempty"`
}

// SoakStage is the peak RSS of one stage of the soak.
type SoakStage struct {
	Stage string `json:"stage"`
	Peak  int64  `json:"peak_bytes"`
}

// SoakAt is the read side at one ledger size.
type SoakAt struct {
	// LedgerRows is the events in the ledger: rows and, of them,
	// Compacted in chunks.
	LedgerRows      int64       `json:"ledger_rows"`
	Compacted       int64       `json:"ledger_compacted_events,omitempty"`
	LedgerBytes     int64       `json:"ledger_bytes"`
	BytesPerEvent   float64     `json:"ledger_bytes_per_event"`
	StockLevels     int64       `json:"stock_levels_rows"`
	StockBytes      int64       `json:"stock_levels_bytes"`
	GetStock        Percentiles `json:"get_stock_ms"`
	GetStockHistory Percentiles `json:"get_stock_history_ms"`
}

// SoakRestart is one start of the write side on the whole log.
type SoakRestart struct {
	Name string `json:"name"`
	// Seconds until a command on every partition succeeded.
	Seconds float64 `json:"seconds"`
	// EventsFolded is the events the writers folded from the log (after
	// their snapshots, if any); FromSnapshot how many partitions started
	// from one. OpenSeconds is the slowest partition's open.
	EventsFolded int64   `json:"events_folded"`
	FromSnapshot int     `json:"partitions_from_snapshot"`
	OpenSeconds  float64 `json:"slowest_partition_open_seconds"`
	// DedupeCommands are the command ids the writers remember (the dedupe
	// window: the last 72h of the history).
	DedupeCommands int64 `json:"dedupe_commands"`
}

// soakFlags are the flags only --soak reads.
type soakFlags struct {
	On          bool
	Events      int
	QueryAt     int
	HistorySpan time.Duration
	Partitions  int
	Queries     int
	Check       bool
}

func (s *soakFlags) flags(fs *flag.FlagSet) {
	config.Bool(fs, &s.On, "soak", false, "instead of a load run: write a long log straight into Kafka, then measure writer restart with and without snapshots, projector catch-up, ledger bytes per event, query latency at two ledger sizes and the drop of a ledger month (issue #14); uses --skus, --stores, --zipf, --mix, --seed, --data-dir, --json")
	config.Int(fs, &s.Events, "events", 20_000_000, "soak: events in the log")
	config.Int(fs, &s.QueryAt, "query-at", 1_000_000, "soak: ledger size of the first query measurement (the second is at --events)")
	config.Duration(fs, &s.HistorySpan, "history-span", 30*24*time.Hour, "soak: the log's events are recorded over this span, ending now (the dedupe window holds the last 72h of it)")
	config.Int(fs, &s.Partitions, "partitions", 6, "soak: partitions of the events topic")
	config.Int(fs, &s.Queries, "queries", 2000, "soak: calls of GetStock and of GetStockHistory timed at each size")
	config.Bool(fs, &s.Check, "soak-check", false, "soak: compare the read model with the fold of the log at the end (tally check: holds the whole log in memory, for small runs)")
}

func (s *soakFlags) validate(c *Config) error {
	if !s.On {
		return nil
	}
	var errs []error
	if c.Compare || c.Sweep != "" || c.Replay || c.Target != "tally" || c.Embedded {
		errs = append(errs, errors.New("--soak runs alone: not with --compare, --sweep, --replay, --target or --embedded (it starts its own broker and PostgreSQL)"))
	}
	if s.Events < 1 {
		errs = append(errs, errors.New("--events must be at least 1"))
	}
	if s.QueryAt < 1 {
		errs = append(errs, errors.New("--query-at must be at least 1"))
	}
	if s.HistorySpan <= 0 {
		errs = append(errs, errors.New("--history-span must be > 0"))
	}
	if s.Partitions < 1 || s.Partitions > 10000 {
		errs = append(errs, errors.New("--partitions must be 1 to 10000"))
	}
	if s.Queries < 1 {
		errs = append(errs, errors.New("--queries must be at least 1"))
	}
	return errors.Join(errs...)
}

// setByUser says whether a flag was given on the command line or in its
// TALLY_ variable, rather than left at its default.
func setByUser(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	_, env := os.LookupEnv(config.EnvName(name))
	return set || env
}

// runSoak is `tally bench --soak`.
func (c *Config) runSoak(ctx context.Context, fs *flag.FlagSet, deps Deps) error {
	if deps.Soak == nil {
		return errors.New("--soak is not available in this build")
	}
	sc := SoakConfig{
		Events: c.soak.Events, QueryAt: min(c.soak.QueryAt, c.soak.Events), HistorySpan: c.soak.HistorySpan,
		SKUs: c.SKUs, Stores: c.Stores, Zipf: c.Zipf, Mix: c.mix, Seed: c.Seed, Partitions: c.soak.Partitions,
		Queries: c.soak.Queries, DataDir: c.DataDir, Check: c.soak.Check, Progress: os.Stderr,
	}
	if setByUser(fs, "kafka-brokers") {
		sc.Brokers = config.List(c.KafkaBrokers)
	}
	if setByUser(fs, "database-url") {
		sc.DatabaseURL = c.DatabaseURL
	}
	rep, err := deps.Soak(ctx, sc)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(os.Stdout, rep)
	}
	rep.Print(os.Stdout)
	if rep.CheckProblems != nil && *rep.CheckProblems > 0 {
		return fmt.Errorf("the check found %d problems", *rep.CheckProblems)
	}
	return nil
}

// Print writes the report as tables.
func (r *SoakReport) Print(out io.Writer) {
	fmt.Fprintf(out, "log: %d events, %d SKUs, %d partitions, recorded over %s; produced at %.0f events/s\n", r.Events, r.SKUs, r.Partitions, r.Span, r.Produce)
	fmt.Fprintf(out, "process RSS (embedded broker included): %.0f MiB after producing, %.0f MiB peak", mib(r.RSSAfterProduce), mib(r.RSSPeak))
	if r.LogBytes > 0 {
		fmt.Fprintf(out, "; log on disk %.0f MiB", mib(r.LogBytes))
	}
	fmt.Fprintln(out)
	if len(r.RSSByStage) > 0 {
		fmt.Fprint(out, "peak RSS by stage, MiB:")
		for _, st := range r.RSSByStage {
			fmt.Fprintf(out, " %s %.0f;", st.Stage, mib(st.Peak))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "projector catch-up: %.0f events/s\n", r.Projector)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ledger events\tcompacted\tledger MiB\tB/event\tstock_levels rows\tstock_levels MiB\tGetStock p50 ms\tp99 ms\tGetStockHistory p50 ms\tp99 ms\t")
	for _, a := range r.At {
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", a.LedgerRows, a.Compacted, mib(a.LedgerBytes), a.BytesPerEvent, a.StockLevels, mib(a.StockBytes),
			a.GetStock.P50, a.GetStock.P99, a.GetStockHistory.P50, a.GetStockHistory.P99)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "writer start\tseconds to writable\tevents folded\tpartitions from snapshot\tslowest partition open s\tdedupe commands\t")
	for _, x := range r.Restarts {
		fmt.Fprintf(tw, "%s\t%.2f\t%d\t%d\t%.2f\t%d\t\n", x.Name, x.Seconds, x.EventsFolded, x.FromSnapshot, x.OpenSeconds, x.DedupeCommands)
	}
	tw.Flush()
	if len(r.CompactMonths) > 0 {
		fmt.Fprintf(out, "compacting ledger months %s (%d rows): %.1f s (%.0f rows/s); %.1f bytes per compacted event\n", strings.Join(r.CompactMonths, ", "),
			r.CompactRows, r.CompactSeconds, float64(r.CompactRows)/r.CompactSeconds, r.CompactBytesPerEvent)
	}
	if r.DropMonth != "" {
		fmt.Fprintf(out, "dropping ledger month %s (%d rows, %.1f MiB): %.3f s\n", r.DropMonth, r.DropRows, mib(r.DropBytes), r.DropSeconds)
	} else {
		fmt.Fprintln(out, "dropping a ledger month: not measured (the history is within the current month)")
	}
	if r.CheckProblems != nil {
		fmt.Fprintln(out, r.CheckSummary)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// StockKey is a SKU at a store.
type StockKey struct{ SKU, Store string }

// TimeQueries times n calls of GetStock and n of GetStockHistory (the
// newest page of 100) through the generated gRPC client against the
// QueryService at addr, one at a time, cycling through keys, after one
// untimed call of each per key.
func TimeQueries(ctx context.Context, addr string, keys []StockKey, n int) (getStock, history Percentiles, err error) {
	q, closeQ, err := queryClient(addr)
	if err != nil {
		return getStock, history, err
	}
	defer closeQ()
	// One untimed call of each per key first: what is timed is a live
	// system's steady state, whose hot keys are in PostgreSQL's cache, not
	// the first read of each after the bulk load (which, at 20M events,
	// has just pushed them out).
	for _, k := range keys {
		if _, err := q.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: k.SKU, StoreId: k.Store}); err != nil {
			return getStock, history, fmt.Errorf("GetStock %s@%s: %w", k.SKU, k.Store, err)
		}
		if _, err := q.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: k.SKU, StoreId: k.Store, PageSize: 100}); err != nil {
			return getStock, history, fmt.Errorf("GetStockHistory %s@%s: %w", k.SKU, k.Store, err)
		}
	}
	hs, hh := newHist(), newHist()
	for i := range n {
		k := keys[i%len(keys)]
		start := time.Now()
		if _, err := q.GetStock(ctx, &inventoryv1.GetStockRequest{SkuId: k.SKU, StoreId: k.Store}); err != nil {
			return getStock, history, fmt.Errorf("GetStock %s@%s: %w", k.SKU, k.Store, err)
		}
		_ = hs.RecordValue(time.Since(start).Microseconds())
		start = time.Now()
		if _, err := q.GetStockHistory(ctx, &inventoryv1.GetStockHistoryRequest{SkuId: k.SKU, StoreId: k.Store, PageSize: 100}); err != nil {
			return getStock, history, fmt.Errorf("GetStockHistory %s@%s: %w", k.SKU, k.Store, err)
		}
		_ = hh.RecordValue(time.Since(start).Microseconds())
	}
	return percentiles(hs), percentiles(hh), nil
}
