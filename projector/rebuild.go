package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/readmodel"
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Kafka is how to reach them: TLS and SASL. nil is plaintext.
	Kafka *kafka.Security
	// Topic is the events topic. Default kafka.EventsTopic.
	Topic string
	// DatabaseURL is the PostgreSQL connection string.
	DatabaseURL string
	// Schema is the schema to build into; it must not exist. Default
	// replay_<unix time>.
	Schema string
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Progress, when set, is called after every batch (from one goroutine
	// at a time).
	Progress func(ReplayProgress)
	// Parallel is how many loads run at once, each over its own share of
	// the partitions with its own consumer and database connection.
	// Default GOMAXPROCS, at most the partition count.
	Parallel int
}

// Rebuild projects the whole log, up to each partition's last stable offset
// as of the call, into a new schema through the PostgreSQL projector's own
// batch path (consumer "replay", no announcements), and returns the events
// in its ledger and the time it took. The live read model is not touched:
// point a query instance at the new schema (or swap schemas) once it has
// caught up.
func Rebuild(ctx context.Context, cfg RebuildConfig) (int64, time.Duration, error) {
	if cfg.DatabaseURL == "" {
		return 0, 0, errors.New("rebuild: no database URL")
	}
	if cfg.Schema == "" {
		cfg.Schema = fmt.Sprintf("replay_%d", time.Now().Unix())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pool, err := newSchema(ctx, cfg.DatabaseURL, cfg.Schema, cfg.Logger)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	// The ledger's one index is built after the load, in one sorted pass,
	// not maintained event by event. Nothing else writes the new schema,
	// and the log holds each event once; were it not so, adding the key
	// back fails and the rebuild with it.
	if _, err := pool.Exec(ctx, "ALTER TABLE inventory_ledger DROP CONSTRAINT "+ledgerKey); err != nil {
		return 0, 0, fmt.Errorf("drop the ledger's key for the load: %w", err)
	}
	shares, err := partitionShares(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	var (
		mu   sync.Mutex
		prog ReplayProgress
		done = make([]ReplayProgress, len(shares)) // each load's own figures
	)
	start := time.Now()
	report := func(i int, passed, total, records int64) {
		mu.Lock()
		defer mu.Unlock()
		done[i].Offsets, done[i].Total, done[i].Events = passed, total, records
		done[i].Batches++
		prog = ReplayProgress{Elapsed: time.Since(start)}
		for _, d := range done {
			prog.Offsets += d.Offsets
			prog.Total += d.Total
			prog.Events += d.Events
			prog.Batches += d.Batches
		}
		if cfg.Progress != nil {
			cfg.Progress(prog)
		}
	}
	loads := make([]*Postgres, len(shares))
	for i := range loads {
		if loads[i], err = NewPostgres(Config{
			Consume: Consume{Brokers: cfg.Brokers, Kafka: cfg.Kafka, Topic: cfg.Topic, Consumer: "replay", Logger: cfg.Logger}, Pool: pool, Silent: true,
		}); err != nil {
			return 0, 0, err
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(shares))
	var wg sync.WaitGroup
	for i, p := range loads {
		wg.Go(func() {
			errs[i] = replayLog(lctx, p, p.loopConfig(), shares[i], true, func(passed, total, records int64) {
				report(i, passed, total, records)
			})
			if errs[i] != nil {
				cancel() // the others stop: the rebuild failed
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return 0, 0, err // the load that failed, not those it stopped
		}
	}
	indexed := time.Now()
	if cfg.Progress != nil {
		prog.Indexing, prog.Elapsed = true, time.Since(start)
		cfg.Progress(prog)
	}
	if err := addLedgerKey(ctx, pool); err != nil {
		return 0, 0, err
	}
	cfg.Logger.Info("ledger key built after the load", "took", time.Since(indexed))
	took := time.Since(start)
	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM inventory_ledger").Scan(&n); err != nil {
		return 0, 0, err
	}
	return n, took, nil
}

// partitionShares splits the events topic's partitions among the loads:
// partition i goes to load i mod Parallel, each from its start.
func partitionShares(ctx context.Context, cfg RebuildConfig) ([]map[int32]int64, error) {
	topic := cfg.Topic
	if topic == "" {
		topic = kafka.EventsTopic
	}
	cl, err := kgo.NewClient(kafka.Options(cfg.Brokers, cfg.Kafka, nil)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err == nil {
		err = topics.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", topic, err)
	}
	parts := topics[topic].Partitions.Numbers()
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s not found", topic)
	}
	n := cfg.Parallel
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	n = min(n, len(parts))
	shares := make([]map[int32]int64, n)
	for i, p := range parts {
		if shares[i%n] == nil {
			shares[i%n] = map[int32]int64{}
		}
		shares[i%n][p] = 0
	}
	return shares, nil
}

// ledgerKey is the ledger's primary key (migration 0006), the name
// PostgreSQL gives it.
const ledgerKey = "inventory_ledger_pkey"

// addLedgerKey builds the ledger's primary key in a transaction with room
// to sort (SET LOCAL: the setting ends with it, not with the pool's
// connection).
func addLedgerKey(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL maintenance_work_mem = '512MB'"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "ALTER TABLE inventory_ledger ADD CONSTRAINT "+ledgerKey+" PRIMARY KEY (sku_id, store_id, sku_version, recorded_at)")
		return err
	})
	if err != nil {
		return fmt.Errorf("build the ledger's key after the load: %w", err)
	}
	return nil
}

// newSchema creates schema, migrates the read model into it and returns a
// pool whose connections use it.
func newSchema(ctx context.Context, dsn, schema string, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	admin.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("create schema %s: %w", schema, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := readmodel.Migrate(ctx, pool, log); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}
