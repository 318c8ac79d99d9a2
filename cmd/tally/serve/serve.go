// Package serve wires Tally's parts into processes: `tally serve` (all of
// them, on embedded defaults) and the single-role subcommands `command`,
// `projector`, `query` and `migrate`. It is the only place that imports
// command/, projector/ and query/ together.
package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/datadir"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/projector"
	"github.com/tally-oss/tally/query"
)

// Role is a part of Tally a process runs.
type Role int

// The parts.
const (
	RoleCommand Role = 1 << iota
	RoleProjector
	RoleQuery
	RoleAll = RoleCommand | RoleProjector | RoleQuery
)

// Config is the configuration of a Tally process.
type Config struct {
	Addr         string
	DataDir      string
	KafkaListen  string
	KafkaSync    bool
	KafkaBrokers string
	DatabaseURL  string
	Partitions   int
	Advertise    string
	Grace        time.Duration
	LogLevel     string
	WatchBuffer  int
	BigQuery     BigQueryFlags

	roles    Role
	embedded bool
}

func (c *Config) flags(fs *flag.FlagSet) {
	if c.roles&(RoleCommand|RoleQuery) != 0 {
		config.String(fs, &c.Addr, "addr", "127.0.0.1:8080", "host:port serving Connect, gRPC, gRPC-Web, health, reflection and /metrics")
	} else {
		config.String(fs, &c.Addr, "addr", "127.0.0.1:8081", "host:port serving gRPC health and /metrics")
	}
	brokersUsage := "comma-separated Kafka seed brokers (required)"
	dbUsage := "PostgreSQL connection string of the read model (required; env DATABASE_URL also works)"
	if c.embedded {
		brokersUsage = "comma-separated Kafka seed brokers; empty runs an embedded broker"
		dbUsage = "PostgreSQL connection string of the read model; empty starts a cluster under --data-dir/pg (env DATABASE_URL also works)"
		config.String(fs, &c.DataDir, "data-dir", "./data", "where the embedded services keep their data (data/kafka, data/pg); one process at a time (data/LOCK)")
		config.String(fs, &c.KafkaListen, "kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker, for any Kafka client to read the topic")
		config.Bool(fs, &c.KafkaSync, "kafka-sync-writes", true, "the embedded broker fsyncs every batch before acknowledging it, so an accepted command survives a power cut; false keeps it only through a process crash")
	}
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "", brokersUsage)
	if c.roles&(RoleProjector|RoleQuery) != 0 {
		config.String(fs, &c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), dbUsage)
	}
	if c.roles&RoleCommand != 0 {
		config.Int(fs, &c.Partitions, "partitions", 6, "partitions of the events topic when it is created")
		config.String(fs, &c.Advertise, "advertise", "", "address other instances tell clients for partitions this one writes (default --addr)")
	}
	if c.roles&RoleProjector != 0 {
		c.BigQuery.flags(fs, true)
	}
	if c.roles&RoleQuery != 0 {
		config.Int(fs, &c.WatchBuffer, "watch-buffer", 1024, "low-stock messages queued per WatchLowStock stream before it is cut off with RESOURCE_EXHAUSTED")
	}
	config.Duration(fs, &c.Grace, "shutdown-grace", 15*time.Second, "how long shutdown waits for in-flight calls and transactions")
	config.String(fs, &c.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// Validate reports every problem with the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if !c.embedded && c.KafkaBrokers == "" {
		errs = append(errs, errors.New("--kafka-brokers is required"))
	}
	if !c.embedded && c.roles&(RoleProjector|RoleQuery) != 0 && c.DatabaseURL == "" {
		errs = append(errs, errors.New("--database-url (or DATABASE_URL) is required"))
	}
	if c.roles&RoleQuery != 0 && (c.WatchBuffer < 1 || c.WatchBuffer > 1<<20) {
		errs = append(errs, fmt.Errorf("--watch-buffer must be 1 to %d, got %d", 1<<20, c.WatchBuffer))
	}
	if c.roles&RoleCommand != 0 && (c.Partitions < 1 || c.Partitions > 10000) {
		errs = append(errs, fmt.Errorf("--partitions must be 1 to 10000, got %d", c.Partitions))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %v", err))
	}
	if c.roles&RoleProjector != 0 {
		errs = append(errs, c.BigQuery.validate(false))
	}
	return errors.Join(errs...)
}

func (c *Config) logger() *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func parse(name string, args []string, roles Role, embedded bool) (*Config, error) {
	fs := flag.NewFlagSet("tally "+name, flag.ContinueOnError)
	c := &Config{roles: roles, embedded: embedded}
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, errors.Join(config.EnvErrors(fs), c.Validate())
}

// Run is `tally serve`: every part in one process.
func Run(ctx context.Context, args []string) error {
	return runRoles(ctx, "serve", args, RoleAll, true)
}

// RunCommand is `tally command`: the write side alone.
func RunCommand(ctx context.Context, args []string) error {
	return runRoles(ctx, "command", args, RoleCommand, false)
}

// RunProjector is `tally projector`: the Postgres projection alone.
func RunProjector(ctx context.Context, args []string) error {
	return runRoles(ctx, "projector", args, RoleProjector, false)
}

// RunQuery is `tally query`: the read API alone.
func RunQuery(ctx context.Context, args []string) error {
	return runRoles(ctx, "query", args, RoleQuery, false)
}

func runRoles(ctx context.Context, name string, args []string, roles Role, embedded bool) error {
	c, err := parse(name, args, roles, embedded)
	if err != nil {
		return err
	}
	return Start(ctx, c)
}

// Start runs the configured parts until ctx ends, then shuts down in
// order: stop taking calls, drain the writers, stop the projector, close
// the database and Kafka, unlock the data directory.
func Start(ctx context.Context, c *Config) error {
	log := c.logger()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	brokers := config.List(c.KafkaBrokers)
	embeddedKafka := len(brokers) == 0 && c.embedded
	embeddedPG := c.roles&(RoleProjector|RoleQuery) != 0 && c.DatabaseURL == ""
	if embeddedKafka || embeddedPG {
		// Before either starts: two brokers on one log directory, or a
		// second postgres on a running cluster's, would not end well.
		lock, err := datadir.Acquire(c.DataDir, c.Addr)
		if err != nil {
			return err
		}
		defer lock.Release()
	}
	if embeddedKafka {
		port, err := kafka.ParsePort(c.KafkaListen)
		if err != nil {
			return fmt.Errorf("--kafka-listen: %w", err)
		}
		var kopts []broker.Opt
		if !c.KafkaSync {
			kopts = append(kopts, broker.NoSyncWrites())
		}
		k, err := broker.Start(filepath.Join(c.DataDir, "kafka"), port, log, kopts...)
		if err != nil {
			return err
		}
		defer k.Close()
		brokers = k.Addrs()
	}

	var pool *pgxpool.Pool
	if c.roles&(RoleProjector|RoleQuery) != 0 {
		dsn := c.DatabaseURL
		if embeddedPG {
			cluster, err := pg.StartCluster(ctx, pg.ClusterConfig{Dir: filepath.Join(c.DataDir, "pg"), Durable: true, Logger: log, WaitForPrevious: time.Minute})
			if err != nil {
				return err
			}
			defer cluster.Stop()
			if dsn, err = cluster.CreateDatabase(ctx, "tally"); err != nil {
				return err
			}
			// So `psql "$(cat data/pg/DATABASE_URL)"` finds it.
			if err := os.WriteFile(filepath.Join(c.DataDir, "pg", "DATABASE_URL"), []byte(dsn+"\n"), 0o644); err != nil {
				return err
			}
			log.Info("read model database", "url", dsn)
		}
		pcfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return fmt.Errorf("database url: %w", err)
		}
		pool, err = pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return err
		}
		defer pool.Close()
		if err := readmodel.Migrate(ctx, pool, log); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}

	// Everything is set up before anything runs, and whatever was set up
	// is closed when a later step fails: an early error leaks no writer,
	// listener or goroutine.
	var runs []func(context.Context) error
	var cmds *command.Service
	// Every role serves health and /metrics; the API roles add their
	// services below.
	srv, err := server.Listen(c.Addr, reg, log)
	if err != nil {
		return err
	}
	started := false
	defer func() {
		if !started {
			srv.Close()
			if cmds != nil {
				sctx, cancel := context.WithTimeout(context.Background(), c.Grace)
				defer cancel()
				_ = cmds.Close(sctx)
			}
		}
	}()
	if c.roles&RoleCommand != 0 {
		advertise := c.Advertise
		if advertise == "" {
			advertise = srv.Addr()
		}
		cmds, err = command.NewService(ctx, command.ServiceConfig{
			WriterConfig: command.WriterConfig{Brokers: brokers, Logger: log, Metrics: command.NewMetrics(reg)},
			Partitions:   int32(c.Partitions),
			Advertise:    advertise,
		})
		if err != nil {
			return err
		}
		path, h := command.NewHandler(cmds, log).HTTPHandler()
		srv.Handle(inventoryv1connect.CommandServiceName, path, h)
	}
	if c.roles&RoleQuery != 0 {
		admCl, err := kgo.NewClient(kafka.Options(brokers, nil)...)
		if err != nil {
			return err
		}
		defer admCl.Close()
		q := query.New(query.Config{Pool: pool, Admin: kadm.NewClient(admCl), Logger: log, WatchBuffer: c.WatchBuffer})
		path, h := inventoryv1connect.NewQueryServiceHandler(q)
		srv.Handle(inventoryv1connect.QueryServiceName, path, h)
		runs = append(runs, q.RunHub)
	}
	if c.roles&RoleProjector != 0 {
		p, err := projector.NewPostgres(projector.Config{
			Consume: projector.Consume{Brokers: brokers, Logger: log}, Pool: pool, Metrics: projector.NewMetrics(reg),
		})
		if err != nil {
			return err
		}
		runs = append(runs, p.Run)
		if c.BigQuery.enabled() {
			bq, err := c.BigQuery.client(ctx)
			if err != nil {
				return err
			}
			defer bq.Close()
			bp, err := projector.NewBigQuery(c.BigQuery.config(brokers, bq, log, projector.NewBigQueryMetrics(reg)))
			if err != nil {
				return err
			}
			log.Info("bigquery projection enabled", "project", c.BigQuery.Project, "dataset", c.BigQuery.Dataset, "endpoint", c.BigQuery.Endpoint)
			runs = append(runs, bp.Run)
		}
	}
	started = true
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range runs {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error {
		err := srv.Serve(gctx, c.Grace)
		// No more calls: drain the writers so every accepted command
		// is committed and answered before Kafka closes.
		if cmds != nil {
			sctx, cancel := context.WithTimeout(context.Background(), c.Grace)
			defer cancel()
			err = errors.Join(err, cmds.Close(sctx))
		}
		return err
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}
