package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafkaflag"
	"github.com/tally-oss/tally/projector"
)

// RunDLQReplay is `tally dlq replay`: every event the Postgres projection
// dead-lettered is read again from the events topic and stored if
// PostgreSQL takes it now (its cause fixed), its dead letter then
// forgotten; the others stay. It prints one line per dead letter and
// fails when any is left.
func RunDLQReplay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally dlq replay", flag.ContinueOnError)
	var brokers, dsn, consumer string
	var ks kafkaflag.Security
	config.String(fs, &brokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka seed brokers")
	ks.Register(fs)
	config.String(fs, &dsn, "database-url", os.Getenv("DATABASE_URL"), "the read model's PostgreSQL connection string (env DATABASE_URL also works)")
	config.String(fs, &consumer, "consumer", "postgres", "the projection whose dead letters to retry")
	config.Usage(fs, "tally dlq replay [flags]", "Retry the events the projection dead-lettered, once their cause is fixed: each one PostgreSQL takes now is stored and its dead letter forgotten.",
		"tally dlq replay --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(fs), ks.Validate(false)); err != nil {
		return err
	}
	if dsn == "" {
		return errors.New("--database-url (or DATABASE_URL) is required")
	}
	sec, err := ks.Kafka()
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	p, err := projector.NewPostgres(projector.Config{Consume: projector.Consume{Brokers: config.List(brokers), Kafka: sec, Consumer: consumer,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, Pool: pool})
	if err != nil {
		return err
	}
	res, err := p.RetryDeadLetters(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tSKU\tVERSION\tRESULT")
	left := 0
	for _, r := range res {
		result := "stored"
		if !r.Stored {
			result, left = "still dead-lettered: "+r.Err.Error(), left+1
		}
		fmt.Fprintf(tw, "%d/%d\t%s\t%d\t%s\n", r.Partition, r.Offset, r.SKU, r.Version, result)
	}
	_ = tw.Flush()
	fmt.Printf("%d dead letters: %d stored, %d left\n", len(res), len(res)-left, left)
	if left > 0 {
		return fmt.Errorf("%d dead letters are still refused", left)
	}
	return nil
}
