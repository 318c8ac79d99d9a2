package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/broker"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/datadir"
	"github.com/tally-oss/tally/internal/kafka"
)

// kafkaFlags are `tally kafka`'s.
type kafkaFlags struct {
	Listen     string
	DataDir    string
	Partitions int
	SyncWrites bool
	logFlags
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	config.String(fs, &k.Listen, "listen", "127.0.0.1:9092", "host:port the broker listens on; every role's --kafka-brokers points here")
	config.String(fs, &k.DataDir, "data-dir", "./data", "where the broker keeps the log (data/kafka); one process at a time (data/LOCK), so not the data directory of a running tally serve")
	config.Int(fs, &k.Partitions, "partitions", 6, "partitions of the events topic, created at start when missing")
	config.Bool(fs, &k.SyncWrites, "sync-writes", true, "fsync every batch before acknowledging it, so an accepted command survives a power cut; false keeps it only through a process crash")
	k.logFlags.register(fs)
}

func (k *kafkaFlags) validate() error {
	var errs []error
	if _, err := kafka.ParsePort(k.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	if k.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required (the broker persists the log)"))
	}
	if k.Partitions < 1 || k.Partitions > 10000 {
		errs = append(errs, fmt.Errorf("--partitions must be 1 to 10000, got %d", k.Partitions))
	}
	errs = append(errs, k.logFlags.validate())
	return errors.Join(errs...)
}

// RunKafka is `tally kafka`: the embedded broker alone, persistent, for
// running every role as its own process against it as against a real
// cluster. It creates the events topic, serves until ctx ends, then closes
// the log cleanly.
func RunKafka(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally kafka", flag.ContinueOnError)
	config.Usage(fs, "tally kafka [flags]", "Run the embedded Kafka broker (kfake, the real protocol) alone, with its log on disk, for the roles run as separate processes.",
		"tally kafka --data-dir ./kafka-data --listen 127.0.0.1:9092 --partitions 6")
	var k kafkaFlags
	k.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := errors.Join(config.EnvErrors(fs), k.validate()); err != nil {
		return err
	}
	log := k.logger()
	lock, err := datadir.Acquire(k.DataDir, k.Listen)
	if err != nil {
		return err
	}
	defer lock.Release()
	port, _ := kafka.ParsePort(k.Listen)
	var opts []broker.Opt
	if !k.SyncWrites {
		opts = append(opts, broker.NoSyncWrites())
	}
	b, err := broker.Start(filepath.Join(k.DataDir, "kafka"), port, log, opts...)
	if err != nil {
		return err
	}
	defer b.Close()
	cl, err := kgo.NewClient(kafka.Options(b.Addrs(), nil, nil)...)
	if err != nil {
		return err
	}
	n, err := kafka.EnsureTopic(ctx, kadm.NewClient(cl), kafka.EventsTopic, int32(k.Partitions), kafka.EventTopicConfigs())
	cl.Close()
	if err != nil {
		return fmt.Errorf("create the events topic: %w", err)
	}
	log.Info("kafka serving", "addrs", b.Addrs(), "data_dir", k.DataDir, "topic", kafka.EventsTopic, "partitions", n, "sync_writes", k.SyncWrites)
	<-ctx.Done()
	log.Info("kafka stopping")
	return nil
}
