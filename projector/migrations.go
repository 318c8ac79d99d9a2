package projector

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tally-oss/tally/internal/pg"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the read model's schema, as numbered SQL files.
func Migrations() fs.FS {
	sub, _ := fs.Sub(migrations, "migrations")
	return sub
}

// Migrate brings the read model's schema up to date.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	return pg.Migrate(ctx, pool, Migrations(), log)
}
