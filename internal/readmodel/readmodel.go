// Package readmodel is the contract between the projector, which writes the
// PostgreSQL read model, and the query side, which reads it: the schema (as
// numbered migrations), the table names, and the sets of event types that
// mean something to both (and to the BigQuery views). Like stocknotify it
// knows neither side; both import it, so neither hard-codes what the other
// defines.
package readmodel

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
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

// The read model's tables (see migrations/).
const (
	// Ledger holds every projected event once, within the retention:
	// unique (sku_id, store_id, sku_version, recorded_at), partitioned by
	// month of recorded_at (ledger.go).
	Ledger = "inventory_ledger"
	// Levels holds one row per (sku_id, store_id): the newest event's levels.
	Levels = "stock_levels"
	// ReorderPolicies holds each (sku_id, store_id)'s reorder policy.
	ReorderPolicies = "reorder_policies"
	// Offsets holds, per consumer and partition, the next offset to project.
	Offsets = "projector_offsets"
	// DeadLetters holds the events a projection skipped, with why.
	DeadLetters = "projection_dead_letters"
)

// SaleTypes are the events that sell stock: a till's sale and a checkout's
// committed reservation. Demand (sales in the last 7 days, hot SKUs, the
// forecast) counts these.
var SaleTypes = []inventoryv1.EventType{
	inventoryv1.EventType_EVENT_TYPE_SALE,
	inventoryv1.EventType_EVENT_TYPE_RESERVATION_COMMITTED,
}

// SaleTypeNumbers are SaleTypes as the ledger's event_type column stores
// them, for `event_type = ANY($n)`.
func SaleTypeNumbers() []int16 {
	out := make([]int16, len(SaleTypes))
	for i, t := range SaleTypes {
		out[i] = int16(t)
	}
	return out
}

// SaleTypeNames are SaleTypes as the BigQuery model names them ("SALE"),
// quoted for an SQL IN list: 'SALE', 'RESERVATION_COMMITTED'.
func SaleTypeNames() string {
	names := make([]string, len(SaleTypes))
	for i, t := range SaleTypes {
		names[i] = "'" + TypeName(t) + "'"
	}
	return strings.Join(names, ", ")
}

// TypeName is an event type as the BigQuery model stores it: its name
// without the EVENT_TYPE_ prefix.
func TypeName(t inventoryv1.EventType) string {
	return strings.TrimPrefix(t.String(), "EVENT_TYPE_")
}
