// Package serve wires Tally's parts into processes: `tally serve` (all of
// them, on embedded defaults) and the single-role subcommands. It is the
// only place that imports command/, projector/ and query/ together.
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tally-oss/tally/command"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/server"
)

// Config is the configuration of a Tally process.
type Config struct {
	Addr         string
	DataDir      string
	KafkaListen  string
	KafkaBrokers string
	Partitions   int
	Advertise    string
	Grace        time.Duration
	LogLevel     string
}

func (c *Config) flags(fs *flag.FlagSet, embedded bool) {
	config.String(fs, &c.Addr, "addr", "127.0.0.1:8080", "host:port serving Connect, gRPC, gRPC-Web, health, reflection and /metrics")
	config.String(fs, &c.KafkaBrokers, "kafka-brokers", "", "comma-separated Kafka seed brokers"+map[bool]string{true: "; empty runs an embedded broker", false: " (required)"}[embedded])
	if embedded {
		config.String(fs, &c.DataDir, "data-dir", "./data", "where the embedded services keep their data (Kafka under data/kafka)")
		config.String(fs, &c.KafkaListen, "kafka-listen", "127.0.0.1:9092", "address of the embedded Kafka broker, for any Kafka client to read the topic")
	}
	config.Int(fs, &c.Partitions, "partitions", 6, "partitions of the events topic when it is created")
	config.String(fs, &c.Advertise, "advertise", "", "address other instances tell clients for partitions this one writes (default --addr)")
	config.Duration(fs, &c.Grace, "shutdown-grace", 15*time.Second, "how long shutdown waits for in-flight calls and transactions")
	config.String(fs, &c.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// Validate reports every problem with the configuration.
func (c *Config) Validate(embedded bool) error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if !embedded && c.KafkaBrokers == "" {
		errs = append(errs, errors.New("--kafka-brokers is required"))
	}
	if c.Partitions < 1 || c.Partitions > 10000 {
		errs = append(errs, fmt.Errorf("--partitions must be 1 to 10000, got %d", c.Partitions))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %v", err))
	}
	return errors.Join(errs...)
}

func (c *Config) logger() *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func parse(name string, args []string, embedded bool) (*Config, error) {
	fs := flag.NewFlagSet("tally "+name, flag.ContinueOnError)
	c := &Config{}
	c.flags(fs, embedded)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, c.Validate(embedded)
}

// Run is `tally serve`: every part in one process.
func Run(ctx context.Context, args []string) error {
	c, err := parse("serve", args, true)
	if err != nil {
		return err
	}
	return run(ctx, c, true)
}

// RunCommand is `tally command`: the write side alone, against a real
// Kafka cluster.
func RunCommand(ctx context.Context, args []string) error {
	c, err := parse("command", args, false)
	if err != nil {
		return err
	}
	return run(ctx, c, false)
}

func run(ctx context.Context, c *Config, embedded bool) error {
	log := c.logger()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	brokers := config.List(c.KafkaBrokers)
	if len(brokers) == 0 && embedded {
		port, err := kafka.ParsePort(c.KafkaListen)
		if err != nil {
			return fmt.Errorf("--kafka-listen: %w", err)
		}
		k, err := kafka.StartEmbedded(filepath.Join(c.DataDir, "kafka"), port, log)
		if err != nil {
			return err
		}
		defer k.Close()
		brokers = k.Addrs()
	}

	srv, err := server.Listen(c.Addr, reg, log)
	if err != nil {
		return err
	}
	advertise := c.Advertise
	if advertise == "" {
		advertise = srv.Addr()
	}
	cmds, err := command.NewService(ctx, command.ServiceConfig{
		WriterConfig: command.WriterConfig{Brokers: brokers, Logger: log, Metrics: command.NewMetrics(reg)},
		Partitions:   int32(c.Partitions),
		Advertise:    advertise,
	})
	if err != nil {
		return err
	}
	path, h := inventoryv1connect.NewCommandServiceHandler(command.NewHandler(cmds, log))
	srv.Handle(inventoryv1connect.CommandServiceName, path, h)

	serveErr := srv.Serve(ctx, c.Grace)
	// The server no longer takes calls: drain the writers, then Kafka
	// closes (deferred) with everything committed.
	sctx, cancel := context.WithTimeout(context.Background(), c.Grace)
	defer cancel()
	return errors.Join(serveErr, cmds.Close(sctx))
}
