package projector

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/stocknotify"
)

// Low-stock announcements: in the transaction that changes stock, the
// projector raises pg_notify on stocknotify.Channel for every level whose
// available quantity changed within watch range, so LISTENers (query
// instances) announce only committed changes.

// Policy is a reorder policy.
type Policy struct {
	ReorderPoint, TargetLevel int64
}

// DefaultPolicy applies where none is set.
var DefaultPolicy = Policy{stocknotify.DefaultReorderPoint, stocknotify.DefaultTargetLevel}

// policies caches the explicitly set policies. It is loaded whenever
// partitions are assigned and updated only after a batch commits.
type policies struct {
	mu sync.RWMutex
	m  map[levelKey]Policy
}

func (p *policies) load(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, "SELECT sku_id, store_id, reorder_point, target_level FROM reorder_policies")
	if err != nil {
		return err
	}
	m := map[levelKey]Policy{}
	var k levelKey
	var pol Policy
	if _, err := pgx.ForEachRow(rows, []any{&k.sku, &k.store, &pol.ReorderPoint, &pol.TargetLevel}, func() error {
		m[k] = pol
		return nil
	}); err != nil {
		return err
	}
	p.mu.Lock()
	p.m = m
	p.mu.Unlock()
	return nil
}

func (p *policies) get(k levelKey) Policy {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pol, ok := p.m[k]; ok {
		return pol
	}
	return DefaultPolicy
}

func (p *policies) set(updates map[levelKey]Policy) {
	if len(updates) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[levelKey]Policy{}
	}
	for k, pol := range updates {
		p.m[k] = pol
	}
}

// changes returns the announcements of a batch: per (sku, store), from the
// available before its first event to after its last.
func (b *batchState) changes(cache *policies) []stocknotify.Change {
	var out []stocknotify.Change
	for k, last := range b.levels {
		before := cache.get(k)
		after := before
		if pol, ok := b.policies[k]; ok {
			after = pol
		}
		availBefore, avail := b.before[k], last.GetOnHandAfter()-last.GetReservedAfter()
		if availBefore == avail && before == after {
			continue
		}
		ceiling := max(before.ReorderPoint, after.ReorderPoint, stocknotify.WatchCeiling)
		if min(availBefore, avail) > ceiling {
			continue
		}
		out = append(out, stocknotify.Change{
			SKU: k.sku, Store: k.store, AvailableBefore: availBefore, Available: avail,
			OnHand: last.GetOnHandAfter(), Reserved: last.GetReservedAfter(), Version: last.GetSkuVersion(),
			ReorderPoint: after.ReorderPoint, ReorderBefore: before.ReorderPoint, TargetLevel: after.TargetLevel,
		})
	}
	return out
}

// isPolicy reports whether e sets a reorder policy.
func isPolicy(e *inventoryv1.InventoryEvent) bool {
	return e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_REORDER_POLICY_SET
}
