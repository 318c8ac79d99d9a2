// Package testenv starts the real components tests run against, once per
// test binary: a kfake Kafka broker and a throwaway PostgreSQL cluster (or
// the one DATABASE_URL names).
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/pg"
)

// Env is the components of one test binary.
type Env struct {
	Kafka   *broker.Embedded
	Brokers []string

	cluster *pg.Cluster
	adminDB string
	pgDir   string
	dbs     atomic.Int64
}

// Start starts Kafka and Postgres. Call Stop when the tests are done.
func Start(ctx context.Context) (*Env, error) {
	k, err := broker.Start("", 0, nil)
	if err != nil {
		return nil, err
	}
	e := &Env{Kafka: k, Brokers: k.Addrs()}
	if url := os.Getenv("DATABASE_URL"); url != "" {
		e.adminDB = url
		return e, nil
	}
	e.pgDir, err = os.MkdirTemp("", "tally-test-pg-")
	if err != nil {
		k.Close()
		return nil, err
	}
	e.cluster, err = pg.StartCluster(ctx, pg.ClusterConfig{Dir: e.pgDir, Logger: Logger()})
	if err != nil {
		k.Close()
		os.RemoveAll(e.pgDir)
		return nil, err
	}
	e.adminDB = e.cluster.URL("postgres")
	return e, nil
}

// Stop stops everything Start started.
func (e *Env) Stop() {
	if e.cluster != nil {
		e.cluster.Stop()
		os.RemoveAll(e.pgDir)
	}
	e.Kafka.Close()
}

// NewDatabase creates a fresh empty database and returns a pool on it.
func (e *Env) NewDatabase(ctx context.Context) (*pgxpool.Pool, error) {
	name := fmt.Sprintf("tally_test_%d_%d", os.Getpid(), e.dbs.Add(1))
	conn, err := pgx.Connect(ctx, e.adminDB)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(e.adminDB)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.Database = name
	return pgxpool.NewWithConfig(ctx, cfg)
}

// Logger logs warnings and errors only, so test output stays readable.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
