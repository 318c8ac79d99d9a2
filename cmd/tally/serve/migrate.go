package serve

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/readmodel"
)

// RunMigrate is `tally migrate`: bring the read model's schema up to date.
func RunMigrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tally migrate", flag.ContinueOnError)
	var dsn, level string
	config.String(fs, &dsn, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL connection string (env DATABASE_URL also works)")
	config.String(fs, &level, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if dsn == "" {
		return errors.New("--database-url (or DATABASE_URL) is required")
	}
	pool, err := openPool(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	return readmodel.Migrate(ctx, pool, newLogger(level))
}
