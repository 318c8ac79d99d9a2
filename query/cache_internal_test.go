package query

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/stocknotify"
)

func lvl(sku, store string, onHand, version int64) *inventoryv1.StockLevel {
	return &inventoryv1.StockLevel{SkuId: sku, StoreId: store, OnHand: onHand, SkuVersion: version, UpdatedAt: timestamppb.New(time.Unix(1, 0))}
}

// held is the on_hand the cache answers GetStock with, or -1.
func held(c *levelCache, sku, store string, minVersion int64) int64 {
	l, _, ok := c.get("test", sku, store, minVersion)
	if !ok {
		return -1
	}
	return l.OnHand
}

// The orders of reads and notifications a query instance can see, and
// what the cache keeps of each.
func TestLevelCacheKeepsNoLevelOlderThanWhatItSaw(t *testing.T) {
	newCache := func() *levelCache { c := newLevelCache(1000, nil); c.start(); return c }

	t.Run("a read that raced a notification is not kept", func(t *testing.T) {
		c := newCache()
		gen := c.begin("a")
		c.projected([]stocknotify.Projected{{SKU: "a", Version: 2, Stores: []string{"S9"}}}, false) // committed while the read ran
		c.fill(gen, lvl("a", "S1", 5, 1), 1)
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d, want nothing", got)
		}
		gen = c.begin("a")
		c.projected(nil, true)
		c.fill(gen, lvl("a", "S1", 5, 1), 1)
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d after a notification naming no SKU, want nothing", got)
		}
	})
	t.Run("a read older than what is held is not kept", func(t *testing.T) {
		c := newCache()
		gen := c.begin("a")
		c.fill(gen, lvl("a", "S2", 7, 5), 5)
		c.fill(gen, lvl("a", "S1", 5, 1), 4) // read when the SKU was at 4
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d, want nothing", got)
		}
		c.fill(gen, lvl("a", "S1", 5, 1), 0) // a batch read: its age is unknown
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d from a batch read, want nothing", got)
		}
		c.fill(gen, lvl("a", "S1", 5, 1), 5)
		if got := held(c, "a", "S1", 5); got != 5 {
			t.Fatalf("held %d, want 5 (read at the held version)", got)
		}
	})
	t.Run("a newer read drops what is held", func(t *testing.T) {
		c := newCache()
		gen := c.begin("a")
		c.fill(gen, lvl("a", "S1", 5, 3), 3)
		c.fill(gen, lvl("a", "S2", 8, 4), 4) // a commit's notification is on its way
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("S1 held %d from version 3, want it dropped", got)
		}
		if got := held(c, "a", "S2", 4); got != 8 {
			t.Fatalf("S2 held %d, want 8", got)
		}
	})
	t.Run("a notification of another store keeps the level", func(t *testing.T) {
		c := newCache()
		c.fill(c.begin("a"), lvl("a", "S1", 5, 3), 0) // a batch read
		c.projected([]stocknotify.Projected{{SKU: "a", Version: 6, Stores: []string{"S2"}}}, false)
		if got := held(c, "a", "S1", 6); got != 5 {
			t.Fatalf("held %d at version 6, want 5", got)
		}
		c.fill(c.begin("a"), lvl("a", "S3", 4, 2), 0) // read since the notification
		if got := held(c, "a", "S3", 6); got != 4 {
			t.Fatalf("held %d at version 6 from a batch read after the notification, want 4", got)
		}
		c.projected([]stocknotify.Projected{{SKU: "a", Version: 7, Stores: []string{"S1"}}}, false)
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d after S1 changed, want nothing", got)
		}
	})
	t.Run("batch reads are not answers to GetStock", func(t *testing.T) {
		c := newCache()
		c.fill(c.begin("a"), lvl("a", "S1", 5, 3), 0)
		if _, ok := c.level("a", "S1"); !ok {
			t.Fatal("a batch read is not held for batches")
		}
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("GetStock answered %d without the SKU's projected version", got)
		}
	})
	t.Run("full shards make room", func(t *testing.T) {
		c := newLevelCache(cacheShards, nil) // one level per shard
		c.start()
		for i := range 10 * cacheShards {
			sku := string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
			c.fill(c.begin(sku), lvl(sku, "S1", 1, 1), 1)
		}
		if n := c.len(); n > cacheShards {
			t.Fatalf("%d levels held, want at most %d", n, cacheShards)
		}
	})
	t.Run("off holds nothing", func(t *testing.T) {
		c := newCache()
		c.fill(c.begin("a"), lvl("a", "S1", 5, 1), 1)
		c.stop()
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d while off", got)
		}
		c.fill(c.begin("a"), lvl("a", "S1", 5, 1), 1)
		c.start()
		if got := held(c, "a", "S1", 0); got != -1 {
			t.Fatalf("held %d filled while off", got)
		}
	})
}
