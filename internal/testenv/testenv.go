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
	"testing"
	"time"

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

// New starts Kafka and Postgres for one test (testenv.Main starts them once
// per binary instead) and stops them at the test's cleanup.
func New(tb testing.TB) *Env {
	tb.Helper()
	e, err := Start(tb.Context())
	if err != nil {
		tb.Fatalf("test environment: %v", err)
	}
	tb.Cleanup(e.Stop)
	return e
}

// NewDatabase creates a fresh empty database for tb and returns a pool on
// it. At tb's cleanup the pool is closed and the database dropped.
func (e *Env) NewDatabase(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	ctx := tb.Context()
	name := fmt.Sprintf("tally_test_%d_%d", os.Getpid(), e.dbs.Add(1))
	if err := e.admin(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(e.adminDB)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		pool.Close()
		// The test's context has ended by now.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	return pool
}

// admin runs one statement on the administrative database.
func (e *Env) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, e.adminDB)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Logger logs warnings and errors only, so test output stays readable.
func Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
