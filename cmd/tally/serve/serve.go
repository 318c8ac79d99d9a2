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

func run(ctx context.Context, name string, args []string, f *processFlags) error {
	fs := flag.NewFlagSet("tally "+name, flag.ContinueOnError)
	f.register(fs)
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
