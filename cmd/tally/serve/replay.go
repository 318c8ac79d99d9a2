package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/kafkaflag"
	"github.com/tally-oss/tally/internal/progress"
	"github.com/tally-oss/tally/projector"
)

// RunReplay is `tally replay`. With --sink postgres (the default) it
// rebuilds the Postgres read model from the log into a fresh schema, with
// progress, and reports events/s; the live read model is not touched:
// point a query instance at the new schema (or swap schemas) once it has
// caught up. With --sink bigquery it re-feeds a range of the log
// (--from-offset in every partition, or --from-time) into the BigQuery
// dataset, idempotently: events already there stay as they are.
func RunReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally replay", flag.ContinueOnError)
	config.Usage(fs, "tally replay [flags]", "Rebuild the read model from the log into a fresh schema (with progress and the time left), or re-feed a range of the log into BigQuery.",
		"tally replay --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally --parallel 4",
		"tally replay --sink bigquery --from-time 2026-11-27T00:00:00Z --bigquery-project my-project --bigquery-dataset tally")
	var brokers, dsn, schema, sink, fromTime string
	var fromOffset, parallel int
	var bq BigQueryFlags
	var ks kafkaflag.Security
	config.String(fs, &brokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka seed brokers")
	ks.Register(fs)
	config.String(fs, &sink, "sink", "postgres", "what to rebuild: postgres (a fresh schema) or bigquery (re-feed a range into the dataset)")
	config.String(fs, &dsn, "database-url", os.Getenv("DATABASE_URL"), "postgres: PostgreSQL connection string (env DATABASE_URL also works)")
	config.String(fs, &schema, "schema", "", "postgres: schema to build into (must not exist; default replay_<unix time>)")
	config.Int(fs, &parallel, "parallel", 0, "postgres: loads at once, each over its share of the partitions (0: one per CPU, at most one per partition)")
	config.Int(fs, &fromOffset, "from-offset", 0, "bigquery: first offset to re-feed, in every partition")
	config.String(fs, &fromTime, "from-time", "", "bigquery: re-feed from the first record written at or after this RFC 3339 time instead")
	bq.flags(fs, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(fs), ks.Validate(false)); err != nil {
		return err
	}
	sec, err := ks.Kafka()
	if err != nil {
		return err
	}
	switch sink {
	case "postgres":
		if dsn == "" {
			return errors.New("--database-url (or DATABASE_URL) is required")
		}
		if fromOffset != 0 || fromTime != "" {
			return errors.New("--from-offset and --from-time are for --sink bigquery; a Postgres replay rebuilds the whole log into a fresh schema")
		}
		if parallel < 0 {
			return fmt.Errorf("--parallel must be 0 or more, got %d", parallel)
		}
		n, d, err := replay(ctx, config.List(brokers), sec, dsn, schema, parallel, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Printf("replayed %d events in %s: %.0f events/s\n", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
		return nil
	case "bigquery":
		return replayBigQuery(ctx, config.List(brokers), sec, &bq, int64(fromOffset), fromTime, os.Stderr)
	default:
		return fmt.Errorf("--sink must be postgres or bigquery, got %q", sink)
	}
}

func replayBigQuery(ctx context.Context, brokers []string, sec *kafka.Security, bq *BigQueryFlags, fromOffset int64, fromTime string, w io.Writer) error {
	var errs []error
	if err := bq.validate(true); err != nil {
		errs = append(errs, err)
	}
	from := projector.ReplayFrom{Offset: fromOffset}
	if fromOffset < 0 {
		errs = append(errs, fmt.Errorf("--from-offset must be 0 or more, got %d", fromOffset))
	}
	if fromTime != "" {
		t, err := time.Parse(time.RFC3339Nano, fromTime)
		if err != nil {
			errs = append(errs, fmt.Errorf("--from-time: %w", err))
		}
		if fromOffset != 0 {
			errs = append(errs, errors.New("give --from-offset or --from-time, not both"))
		}
		from.Time = t
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := checkEventTopic(ctx, brokers, sec); err != nil {
		return err
	}
	client, err := bq.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := projector.ReplayBigQuery(ctx, bq.config(brokers, sec, client, nil, log, nil), from, func(p projector.ReplayProgress) {
		fmt.Fprintf(w, "\r\033[Kreplay into %s: %d/%d offsets (%.0f%%), %d events, %d batches, %.1fs",
			bq.Dataset, p.Offsets, p.Total, 100*float64(p.Offsets)/float64(max(p.Total, 1)), p.Events, p.Batches, p.Elapsed.Seconds())
	})
	fmt.Fprintln(w)
	if err != nil {
		return err
	}
	fmt.Printf("re-fed %d events into %s in %s: %.0f events/s\n", p.Events, bq.Dataset, p.Elapsed.Round(time.Millisecond), float64(p.Events)/max(p.Elapsed.Seconds(), 1e-9))
	return nil
}

// Replay rebuilds the read model into a new schema (projector.Rebuild),
// once the events topic passes kafka.CheckEventTopic, and returns the events projected and the time it took, printing progress to w.
func Replay(ctx context.Context, brokers []string, dsn, schema string, parallel int, w io.Writer) (int64, time.Duration, error) {
	return replay(ctx, brokers, nil, dsn, schema, parallel, w)
}

func replay(ctx context.Context, brokers []string, sec *kafka.Security, dsn, schema string, parallel int, w io.Writer) (int64, time.Duration, error) {
	if schema == "" {
		schema = fmt.Sprintf("replay_%d", time.Now().Unix())
	}
	if err := checkEventTopic(ctx, brokers, sec); err != nil {
		return 0, 0, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A bar on a terminal, a line every 10 s elsewhere.
	line := progress.New(w, 10*time.Second)
	n, d, err := projector.Rebuild(ctx, projector.RebuildConfig{
		Brokers: brokers, Kafka: sec, DatabaseURL: dsn, Schema: schema, Logger: log, Parallel: parallel,
		Progress: func(p projector.ReplayProgress) {
			if p.Indexing {
				line.Show(1, fmt.Sprintf("replay into %s: %d events loaded in %.1fs; building the ledger's key", schema, p.Events, p.Elapsed.Seconds()))
				return
			}
			done := float64(p.Offsets) / float64(max(p.Total, 1))
			line.Show(done, fmt.Sprintf("replay into %s: %d/%d offsets (%.0f%%) %.1fs, about %.0fs left", schema, p.Offsets, p.Total, 100*done, p.Elapsed.Seconds(), p.ETA().Seconds()))
		},
	})
	line.Done()
	return n, d, err
}
