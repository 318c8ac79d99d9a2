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
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tally-oss/tally/internal/config"
)

// Run is `tally serve`: every part in one process.
func Run(ctx context.Context, args []string) error {
	return run(ctx, "serve", args, &processFlags{
		embedded: &embeddedFlags{}, database: &databaseFlags{},
		command: &commandFlags{}, projector: &projectorFlags{}, query: &queryFlags{},
	})
}

// RunCommand is `tally command`: the write side alone.
func RunCommand(ctx context.Context, args []string) error {
	return run(ctx, "command", args, &processFlags{command: &commandFlags{}})
}

// RunProjector is `tally projector`: the Postgres projection alone.
func RunProjector(ctx context.Context, args []string) error {
	return run(ctx, "projector", args, &processFlags{database: &databaseFlags{}, projector: &projectorFlags{}})
}

// RunQuery is `tally query`: the read API alone.
func RunQuery(ctx context.Context, args []string) error {
	return run(ctx, "query", args, &processFlags{database: &databaseFlags{}, query: &queryFlags{}})
}

// usages are the process subcommands' help: what each runs and examples.
var usages = map[string]struct {
	summary  string
	examples []string
}{
	"serve": {"Run everything in one process: the API (Connect, gRPC, gRPC-Web, the web console at /), the partition writers, the projector and the query side, on an embedded Kafka broker and PostgreSQL unless --kafka-brokers and --database-url name real ones.",
		[]string{"tally serve                       # embedded defaults; the API and console on 127.0.0.1:8080",
			"tally serve --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally --auth-key-file hs256.key --addr 0.0.0.0:8080"}},
	"command": {"Run only the write side: CommandService and the partition writers, sharing the partitions with the other command instances.",
		[]string{"tally command --kafka-brokers kafka-1:9092 --auth-key-file hs256.key --addr 0.0.0.0:8080"}},
	"projector": {"Run only the projection of the log into PostgreSQL (and BigQuery with --bigquery-project), sharing the partitions with the other projector instances.",
		[]string{"tally projector --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally",
			"tally projector --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally --bigquery-project my-project --bigquery-dataset tally"}},
	"query": {"Run only the read side: QueryService (with its cache and low-stock watches) and the web console.",
		[]string{"tally query --kafka-brokers kafka-1:9092 --database-url postgres://tally@db/tally --auth-key-file hs256.key --addr 0.0.0.0:8090"}},
}

func run(ctx context.Context, name string, args []string, f *processFlags) error {
	fs := flag.NewFlagSet("tally "+name, flag.ContinueOnError)
	f.register(fs)
	u := usages[name]
	config.Usage(fs, "tally "+name+" [flags]", u.summary, u.examples...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := errors.Join(config.EnvErrors(fs), f.validate()); err != nil {
		return err
	}
	return start(ctx, f)
}

// start checks that the events topic keeps every event (when a part f
// enables writes or projects it), then runs the parts until ctx ends and
// shuts down in order: stop taking calls, drain the writers, stop the
// projector, close the database and Kafka, unlock the data directory.
// Everything is built before anything runs, and whatever was built is
// closed when a later step fails: an early error leaks no writer, listener
// or goroutine.
func start(ctx context.Context, f *processFlags) error {
	d, err := newDeps(ctx, f)
	if err != nil {
		return err
	}
	defer d.close()
	if f.command != nil || f.projector != nil {
		// The log is the source of truth: refuse to write or project a
		// topic that forgets.
		if err := checkEventTopic(ctx, d.brokers, d.kafka); err != nil {
			return err
		}
	}
	parts, err := newParts(ctx, f, d)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range parts {
		if p.run != nil {
			g.Go(func() error { return p.run(gctx) })
		}
	}
	g.Go(func() error { return d.srv.Serve(gctx, f.common.Grace) })
	err = g.Wait()
	// No more calls: drain the writers so every accepted command is
	// committed and answered before Kafka closes.
	err = errors.Join(err, closeParts(parts, f.common.Grace))
	d.log.Info("stopped")
	return err
}

// newParts builds the parts f enables. When one fails, those already
// built are closed, in reverse.
func newParts(ctx context.Context, f *processFlags, d *deps) ([]part, error) {
	var builders []func() (part, error)
	if f.command != nil {
		builders = append(builders, func() (part, error) { return newCommandRole(ctx, f.command, d) })
	}
	if f.query != nil {
		builders = append(builders, func() (part, error) { return newQueryRole(ctx, f.query, d) })
	}
	if f.projector != nil {
		builders = append(builders, func() (part, error) { return newProjectorRole(ctx, f.projector, d) })
	}
	var parts []part
	for _, build := range builders {
		p, err := build()
		if err != nil {
			slices.Reverse(parts)
			return nil, errors.Join(err, closeParts(parts, f.common.Grace))
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// closeParts closes parts in order, giving them grace in all.
func closeParts(parts []part, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	for _, p := range parts {
		if p.close != nil {
			errs = append(errs, p.close(ctx))
		}
	}
	return errors.Join(errs...)
}
