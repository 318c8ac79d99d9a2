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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/projector"
)

// RunReplay is `tally replay`: rebuild the Postgres read model from the log
// into a fresh schema, with progress, and report events/s. The live read
// model is not touched; point a query instance at the new schema (or swap
// schemas) once it has caught up.
func RunReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally replay", flag.ContinueOnError)
	var brokers, dsn, schema string
	config.String(fs, &brokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka seed brokers")
	config.String(fs, &dsn, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL connection string (env DATABASE_URL also works)")
	config.String(fs, &schema, "schema", "", "schema to build into (must not exist; default replay_<unix time>)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if dsn == "" {
		return errors.New("--database-url (or DATABASE_URL) is required")
	}
	n, d, err := Replay(ctx, config.List(brokers), dsn, schema, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Printf("replayed %d events in %s: %.0f events/s\n", n, d.Round(time.Millisecond), float64(n)/d.Seconds())
	return nil
}

// Replay projects the whole log into a new schema and returns the events
// projected and the time it took, printing progress to w.
func Replay(ctx context.Context, brokers []string, dsn, schema string, w io.Writer) (int64, time.Duration, error) {
	if schema == "" {
		schema = fmt.Sprintf("replay_%d", time.Now().Unix())
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return 0, 0, err
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	admin.Close(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("create schema %s: %w", schema, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := projector.Migrate(ctx, pool, log); err != nil {
		return 0, 0, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, 0, err
	}
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, kafka.EventsTopic)
	cl.Close()
	if err != nil {
		return 0, 0, err
	}
	target := map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { target[o.Partition] = o.Offset; total += o.Offset })

	p, err := projector.NewPostgres(projector.Config{
		Brokers: brokers, Pool: pool, Group: "tally-replay-" + schema, Consumer: "replay", Logger: log, Silent: true,
	})
	if err != nil {
		return 0, 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- p.Run(rctx) }()
	for {
		select {
		case err := <-errc:
			return 0, 0, fmt.Errorf("projector stopped: %v", err)
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		offsets, err := projector.LoadOffsets(ctx, pool, "replay")
		if err != nil {
			return 0, 0, err
		}
		var done int64
		caughtUp := true
		for part, end := range target {
			done += min(offsets[part], end)
			if offsets[part] < end {
				caughtUp = false
			}
		}
		el := time.Since(start)
		fmt.Fprintf(w, "\r\033[Kreplay into %s: %d/%d offsets (%.0f%%) %.1fs", schema, done, total, 100*float64(done)/float64(max(total, 1)), el.Seconds())
		if caughtUp {
			fmt.Fprintln(w)
			cancel()
			<-errc
			var n int64
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM inventory_ledger").Scan(&n); err != nil {
				return 0, 0, err
			}
			return n, el, nil
		}
	}
}
