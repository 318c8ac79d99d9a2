package query

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/stocknotify"
)

// DefaultCacheLevels is how many (sku, store) levels a query instance
// keeps in memory by default (about 100 bytes each).
const DefaultCacheLevels = 1 << 18

const (
	cacheShards = 64
	// genBuckets: notifications bump the generation of their SKUs'
	// buckets; a fill is refused when its SKU's bucket moved during the
	// read. Many buckets, so that a notification naming hundreds of SKUs
	// refuses few fills of other SKUs.
	genBuckets = 1 << 16
)

// levelCache holds hot stock levels in the query instance, kept exact by
// the projector's notifications: every projector transaction NOTIFYs the
// SKUs it changed (stocknotify.ProjectedChannel), and the hub drops them
// here before it wakes min_version readers. While the hub is not
// listening the cache is off (bypassed and empty), since it would miss
// notifications.
//
// A level is filled from a read of PostgreSQL only if no notification
// touched its SKU's bucket since the read began (gen), so a read that raced a
// projector commit never leaves the older level behind. Between a commit
// and its notification the cache serves the level as it was before the
// commit, as a read that started a moment earlier would have; a
// min_version read is never answered with a level read before the
// projection reached that version (see get).
type levelCache struct {
	seed     maphash.Seed
	perShard int
	on       atomic.Bool
	shards   [cacheShards]cacheShard
	// epoch counts the times the cache was emptied; gens the
	// notifications that named a SKU of each bucket.
	epoch atomic.Uint64
	gens  [genBuckets]atomic.Uint64
	m     cacheMetrics
}

type cacheShard struct {
	mu     sync.Mutex
	skus   map[string]*cachedSKU
	levels int
}

// generation is what a fill must find unchanged since its read began.
type generation struct{ epoch, bucket uint64 }

// cachedSKU is some of a SKU's levels. Every level held passed the
// generation check, so it is current but for notifications not applied
// yet.
type cachedSKU struct {
	// at is the SKU's projected version when exact: read with a level by
	// GetStock, or given by a notification (confirmed), and every level
	// held is correct as of it. When not exact (only batch reads, which
	// do not read the SKU's version), at is the newest level's version
	// and GetStock does not answer from the entry.
	at               int64
	exact, confirmed bool
	levels           map[string]cachedLevel
}

type cachedLevel struct {
	onHand, reserved, version int64
	updated                   time.Time
}

type cacheMetrics struct {
	lookups       *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	levels        prometheus.GaugeFunc
}

// newLevelCache returns a cache of up to size levels; size <= 0 returns
// nil, a cache that is always off.
func newLevelCache(size int, reg prometheus.Registerer) *levelCache {
	if size <= 0 {
		return nil
	}
	c := &levelCache{seed: maphash.MakeSeed(), perShard: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].skus = map[string]*cachedSKU{}
	}
	c.m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tally_query_cache_lookups_total",
		Help: "Levels looked up in the query instance's cache of hot levels, by RPC and result (hit, miss, off: the cache is off while the notification listener is down).",
	}, []string{"rpc", "result"})
	c.m.invalidations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tally_query_cache_invalidations_total",
		Help: "Projector notifications applied to the cache of hot levels: level (levels named and dropped) or all (the cache was emptied).",
	}, []string{"scope"})
	c.m.levels = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tally_query_cache_levels",
		Help: "Levels held in the query instance's cache of hot levels.",
	}, func() float64 { return float64(c.len()) })
	if reg != nil {
		reg.MustRegister(c.m.lookups, c.m.invalidations, c.m.levels)
	}
	return c
}

// locate returns the shard holding sku and its generation bucket.
func (c *levelCache) locate(sku string) (*cacheShard, *atomic.Uint64) {
	h := maphash.String(c.seed, sku)
	return &c.shards[h%cacheShards], &c.gens[(h/cacheShards)%genBuckets]
}

func (c *levelCache) shard(sku string) *cacheShard {
	s, _ := c.locate(sku)
	return s
}

// enabled reports whether the cache is on.
func (c *levelCache) enabled() bool { return c != nil && c.on.Load() }

// start turns the cache on, empty: the hub has just started listening.
func (c *levelCache) start() {
	if c == nil {
		return
	}
	c.clear()
	c.on.Store(true)
}

// stop turns the cache off and empties it: the hub stopped listening.
func (c *levelCache) stop() {
	if c == nil {
		return
	}
	c.on.Store(false)
	c.clear()
}

func (c *levelCache) clear() {
	c.epoch.Add(1)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.skus)
		s.levels = 0
		s.mu.Unlock()
	}
}

// projected applies a projector notification: the levels changed, or
// all. The levels named are dropped; the SKU's other levels stay, now
// correct as of the SKU's version the notification gives.
func (c *levelCache) projected(changed []stocknotify.Projected, all bool) {
	if c == nil {
		return
	}
	if all {
		c.m.invalidations.WithLabelValues("all").Inc()
		c.clear()
		return
	}
	n := 0
	for _, p := range changed {
		n += len(p.Stores)
		s, gen := c.locate(p.SKU)
		s.mu.Lock()
		gen.Add(1)
		if e := s.skus[p.SKU]; e != nil {
			for _, store := range p.Stores {
				if _, ok := e.levels[store]; ok {
					delete(e.levels, store)
					s.levels--
				}
			}
			if p.Version >= e.at {
				// Notifications arrive in commit order, and every one
				// before this was applied before the levels held were
				// read, or to them since: they are correct as of it.
				e.at, e.exact, e.confirmed = p.Version, true, true
			}
			if len(e.levels) == 0 {
				delete(s.skus, p.SKU)
			}
		}
		s.mu.Unlock()
	}
	c.m.invalidations.WithLabelValues("level").Add(float64(n))
}

func (s *cacheShard) drop(sku string) {
	if e, ok := s.skus[sku]; ok {
		s.levels -= len(e.levels)
		delete(s.skus, sku)
	}
}

// begin returns the generation to fill with, taken before reading
// PostgreSQL.
func (c *levelCache) begin(sku string) generation {
	if c == nil {
		return generation{}
	}
	_, gen := c.locate(sku)
	// The bucket first: an emptying between the two loads is seen in
	// the epoch.
	b := gen.Load()
	return generation{epoch: c.epoch.Load(), bucket: b}
}

// get returns the level of (sku, store) and the SKU's projected version,
// if held with a projected version of at least minVersion.
func (c *levelCache) get(rpc, sku, store string, minVersion int64) (*inventoryv1.StockLevel, int64, bool) {
	if !c.enabled() {
		c.count(rpc, "off", 1)
		return nil, 0, false
	}
	s := c.shard(sku)
	s.mu.Lock()
	e := s.skus[sku]
	var l cachedLevel
	ok := e != nil && e.exact && e.at >= minVersion
	if ok {
		l, ok = e.levels[store]
	}
	var at int64
	if ok {
		at = e.at
	}
	s.mu.Unlock()
	if !ok {
		c.count(rpc, "miss", 1)
		return nil, 0, false
	}
	c.count(rpc, "hit", 1)
	return l.proto(sku, store), at, true
}

// level returns the level of (sku, store) if held; the caller counts.
func (c *levelCache) level(sku, store string) (*inventoryv1.StockLevel, bool) {
	if !c.enabled() {
		return nil, false
	}
	s := c.shard(sku)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.skus[sku]; e != nil {
		if l, ok := e.levels[store]; ok {
			return l.proto(sku, store), true
		}
	}
	return nil, false
}

func (c *levelCache) count(rpc, result string, n int) {
	if c != nil && n > 0 {
		c.m.lookups.WithLabelValues(rpc, result).Add(float64(n))
	}
}

// fill stores l, read from PostgreSQL since gen, with the SKU's projected
// version read with it (0: not read, as BatchGetStock does not).
func (c *levelCache) fill(from generation, l *inventoryv1.StockLevel, projected int64) {
	if !c.enabled() {
		return
	}
	s, gen := c.locate(l.SkuId)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Notifications and emptyings change these under the shard's lock
	// (an emptying takes every shard's).
	if gen.Load() != from.bucket || c.epoch.Load() != from.epoch {
		return // a notification may have made l old
	}
	e := s.skus[l.SkuId]
	if projected > 0 {
		switch {
		case e == nil:
		case !e.exact || projected > e.at:
			// Held levels may predate a commit this read saw, whose
			// notification is still on its way.
			s.drop(l.SkuId)
			e = nil
		case projected < e.at:
			return // l may be older than what is held
		}
	} else if e != nil && e.exact {
		switch {
		case l.SkuVersion > e.at:
			s.drop(l.SkuId) // as above
			e = nil
		case !e.confirmed && l.SkuVersion < e.at:
			// at was read, not notified: this read may predate it.
			return
		}
	}
	if e == nil {
		if s.levels >= c.perShard {
			for sku := range s.skus { // make room: drop some SKU
				s.drop(sku)
				break
			}
		}
		e = &cachedSKU{exact: projected > 0, at: projected}
		e.levels = map[string]cachedLevel{}
		s.skus[l.SkuId] = e
	}
	if !e.exact {
		e.at = max(e.at, l.SkuVersion)
	}
	if _, ok := e.levels[l.StoreId]; !ok {
		s.levels++
	}
	e.levels[l.StoreId] = cachedLevel{onHand: l.OnHand, reserved: l.Reserved, version: l.SkuVersion, updated: l.UpdatedAt.AsTime()}
}

func (c *levelCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.levels
		s.mu.Unlock()
	}
	return n
}

func (l cachedLevel) proto(sku, store string) *inventoryv1.StockLevel {
	return &inventoryv1.StockLevel{SkuId: sku, StoreId: store, OnHand: l.onHand, Reserved: l.reserved,
		Available: l.onHand - l.reserved, SkuVersion: l.version, UpdatedAt: timestamppb.New(l.updated)}
}
