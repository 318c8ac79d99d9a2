package projector

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// Low-stock announcements: in the transaction that changes stock, the
// projector raises pg_notify on StockChannel for every level whose
// available quantity changed within watch range, so LISTENers (query
// instances) announce only committed changes.
const (
	// StockChannel is the NOTIFY channel.
	StockChannel = "tally_stock"
	// DefaultReorderPoint and DefaultTargetLevel apply where no policy is set.
	DefaultReorderPoint = 10
	DefaultTargetLevel  = 30
	// WatchCeiling: changes are announced when available is at or below
	// max(reorder_point, WatchCeiling) before or after, so any watch
	// threshold up to it sees every crossing.
	WatchCeiling = 100
	// maxPayload keeps each NOTIFY under Postgres's 8000-byte limit.
	maxPayload = 7000
)

// StockChange is one announced level change (the NOTIFY payload is a JSON
// array of them).
type StockChange struct {
	SKU             string `json:"k"`
	Store           string `json:"s"`
	AvailableBefore int64  `json:"b"`
	Available       int64  `json:"a"`
	OnHand          int64  `json:"o"`
	Reserved        int64  `json:"r"`
	Version         int64  `json:"v"`
	ReorderPoint    int64  `json:"p"`
	ReorderBefore   int64  `json:"q"`
	TargetLevel     int64  `json:"t"`
}

// Policy is a reorder policy.
type Policy struct {
	ReorderPoint, TargetLevel int64
}

// DefaultPolicy applies where none is set.
var DefaultPolicy = Policy{DefaultReorderPoint, DefaultTargetLevel}

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
func (b *batchState) changes(cache *policies) []StockChange {
	var out []StockChange
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
		ceiling := max(before.ReorderPoint, after.ReorderPoint, WatchCeiling)
		if min(availBefore, avail) > ceiling {
			continue
		}
		out = append(out, StockChange{
			SKU: k.sku, Store: k.store, AvailableBefore: availBefore, Available: avail,
			OnHand: last.GetOnHandAfter(), Reserved: last.GetReservedAfter(), Version: last.GetSkuVersion(),
			ReorderPoint: after.ReorderPoint, ReorderBefore: before.ReorderPoint, TargetLevel: after.TargetLevel,
		})
	}
	return out
}

// payloads packs changes into NOTIFY payloads.
func payloads(changes []StockChange) []string {
	var out []string
	var cur []byte
	for _, c := range changes {
		b, _ := json.Marshal(c)
		if len(cur)+len(b)+2 > maxPayload && len(cur) > 0 {
			out = append(out, string(append(cur, ']')))
			cur = nil
		}
		if cur == nil {
			cur = []byte{'['}
		} else {
			cur = append(cur, ',')
		}
		cur = append(cur, b...)
	}
	if cur != nil {
		out = append(out, string(append(cur, ']')))
	}
	return out
}

// isPolicy reports whether e sets a reorder policy.
func isPolicy(e *inventoryv1.InventoryEvent) bool {
	return e.GetEventType() == inventoryv1.EventType_EVENT_TYPE_REORDER_POLICY_SET
}
