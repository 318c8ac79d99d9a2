package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	// Progress, when set, is called after every batch.
	Progress func(ReplayProgress)
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
	p, err := NewPostgres(Config{
		Consume: Consume{Brokers: cfg.Brokers, Kafka: cfg.Kafka, Topic: cfg.Topic, Consumer: "replay", Logger: cfg.Logger}, Pool: pool, Silent: true,
	})
	if err != nil {
		return 0, 0, err
	}
	var prog ReplayProgress
	start := time.Now()
	err = replayLog(ctx, p, p.loopConfig(), nil, true, func(passed, total, records int64) {
		prog.Offsets, prog.Total, prog.Events = passed, total, records
		prog.Batches++
		prog.Elapsed = time.Since(start)
		if cfg.Progress != nil {
			cfg.Progress(prog)
		}
	})
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM inventory_ledger").Scan(&n); err != nil {
		return 0, 0, err
	}
	return n, took, nil
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
