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
	config.Usage(fs, "tally migrate [flags]", "Apply the read model's schema migrations (serve, projector and query also apply them at start).",
		"tally migrate --database-url postgres://tally@db/tally")
	var dsn string
	var lf logFlags
	config.String(fs, &dsn, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL connection string (env DATABASE_URL also works)")
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(fs), lf.validate()); err != nil {
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
	return readmodel.Migrate(ctx, pool, lf.logger())
}
