package query_test

import (
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/readmodel"
	"github.com/tally-oss/tally/internal/stocknotify"
	"github.com/tally-oss/tally/internal/testenv"
	"github.com/tally-oss/tally/query"
)

// cacheFixture is a query service whose cache's metrics are read back.
type cacheFixture struct {
	*fixture
	reg *prometheus.Registry
	off bool // the cache is off: no notification is counted
}

func newCacheFixture(t *testing.T, cfg query.Config) *cacheFixture {
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	f := &cacheFixture{fixture: newFixture(t, cfg), reg: reg, off: cfg.CacheLevels < 0}
	// The cache is on once the hub listens: a lookup then counts as a miss,
	// not "off". Notifications sent before would be lost to the test.
	deadline := time.Now().Add(5 * time.Second)
	for !f.off && f.lookups("GetStock", "miss") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the hub is not listening after 5s")
		}
		_, _ = f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "probe", StoreId: "probe"}))
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// lookups is the cache's count of rpc lookups with result.
func (f *cacheFixture) lookups(rpc, result string) int {
	return f.counter("tally_query_cache_lookups_total", map[string]string{"rpc": rpc, "result": result})
}

// counter is the value of the counter name with labels (0 before it
// counts).
func (f *cacheFixture) counter(name string, labels map[string]string) int {
	f.t.Helper()
	v, _, _ := testenv.Series(f.t, f.reg, name, labels)
	return int(v)
}

// project seeds the read model as the projector would and waits until the
// hub has applied the notifications, so that no read below races them (a
// read that does is not kept, which the tests would see as a miss).
func (f *cacheFixture) project(events ...event) {
	f.t.Helper()
	levels := map[string]string{"scope": "level"}
	want := f.counter("tally_query_cache_invalidations_total", levels) + len(events)
	f.fixture.project(events...)
	if f.off {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.counter("tally_query_cache_invalidations_total", levels) < want {
		if time.Now().After(deadline) {
			f.t.Fatal("the hub did not apply the projector's notifications within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get is GetStock's on_hand and version of (sku, store).
func (f *cacheFixture) get(sku, store string, minVersion int64) (onHand, version int64) {
	f.t.Helper()
	r, err := f.c.GetStock(f.t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: sku, StoreId: store, MinVersion: minVersion}))
	if err != nil {
		f.t.Fatalf("GetStock %s/%s min_version %d: %v", sku, store, minVersion, err)
	}
	return r.Msg.GetLevel().GetOnHand(), r.Msg.GetLevel().GetSkuVersion()
}

// setQuietly changes a level in PostgreSQL without the projector's
// notification, so only a read of PostgreSQL can see it.
func (f *cacheFixture) setQuietly(sku, store string, onHand, version int64) {
	f.exec(`UPDATE `+readmodel.Levels+` SET on_hand = $3, sku_version = $4 WHERE sku_id = $1 AND store_id = $2`, sku, store, onHand, version)
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A read fills the cache and the next is served from it; a notification
// of another level leaves it (with the SKU's projected version moved on
// when the level is of the same SKU), one naming the level, or none
// (meaning all), drops it.
func TestCacheServesHotLevelsUntilTheProjectorNamesThem(t *testing.T) {
	f := newCacheFixture(t, query.Config{})
	f.project(receipt("sku-1", "S1", 1, 5), receipt("sku-1", "S2", 2, 6), receipt("sku-2", "S1", 1, 7))

	if on, _ := f.get("sku-1", "S1", 0); on != 5 {
		t.Fatalf("on_hand %d, want 5", on)
	}
	f.setQuietly("sku-1", "S1", 9, 3)
	if on, _ := f.get("sku-1", "S1", 0); on != 5 {
		t.Fatalf("on_hand %d: the second read was not served from the cache", on)
	}
	if h := f.lookups("GetStock", "hit"); h != 1 {
		t.Fatalf("%d GetStock hits, want 1", h)
	}

	// Another SKU's level, then another store's level of sku-1.
	f.applied(func() { f.notifyProjected(stocknotify.Projected{SKU: "sku-2", Version: 2, Stores: []string{"S1"}}) })
	f.setQuietly("sku-1", "S2", 4, 4)
	f.applied(func() { f.notifyProjected(stocknotify.Projected{SKU: "sku-1", Version: 4, Stores: []string{"S2"}}) })
	r, err := f.c.GetStock(t.Context(), connect.NewRequest(&inventoryv1.GetStockRequest{SkuId: "sku-1", StoreId: "S1", MinVersion: 4}))
	if err != nil {
		t.Fatal(err)
	}
	if on, p := r.Msg.GetLevel().GetOnHand(), r.Msg.GetProjectedSkuVersion(); on != 5 || p != 4 {
		t.Fatalf("on_hand %d with projected version %d, want 5 held and projected version 4 from the notification", on, p)
	}
	if on, _ := f.get("sku-1", "S2", 0); on != 4 {
		t.Fatalf("S2 on_hand %d, want 4 read again", on)
	}

	f.notifyProjected(stocknotify.Projected{SKU: "sku-1", Version: 3, Stores: []string{"S1"}})
	eventually(t, "sku-1 read again after its notification", func() bool { on, _ := f.get("sku-1", "S1", 0); return on == 9 })

	f.setQuietly("sku-1", "S1", 11, 5)
	f.setQuietly("sku-2", "S1", 12, 2)
	f.exec("SELECT pg_notify($1, '')", stocknotify.ProjectedChannel)
	eventually(t, "every level read again after a notification naming none", func() bool {
		a, _ := f.get("sku-1", "S1", 0)
		b, _ := f.get("sku-2", "S1", 0)
		return a == 11 && b == 12
	})
}

// applied runs notify and waits until the hub has applied what it sent.
func (f *cacheFixture) applied(notify func()) {
	f.t.Helper()
	levels := map[string]string{"scope": "level"}
	before := f.counter("tally_query_cache_invalidations_total", levels)
	notify()
	deadline := time.Now().Add(5 * time.Second)
	for f.counter("tally_query_cache_invalidations_total", levels) == before {
		if time.Now().After(deadline) {
			f.t.Fatal("the hub did not apply a notification within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A min_version read is never answered from a level held from before the
// projection reached that version, and once PostgreSQL has shown a newer
// version the older one is not served again.
func TestCacheNeverAnswersMinVersionWithAnOlderLevel(t *testing.T) {
	f := newCacheFixture(t, query.Config{PollInterval: 10 * time.Millisecond})
	f.project(receipt("sku-1", "S1", 1, 5), receipt("sku-1", "S2", 2, 6))
	f.get("sku-1", "S1", 0)
	f.get("sku-1", "S2", 0)
	if on, v := f.get("sku-1", "S1", 2); on != 5 || v != 1 {
		t.Fatalf("on_hand %d at %d, want 5 at 1", on, v)
	}
	if h := f.lookups("GetStock", "hit"); h != 1 {
		t.Fatalf("%d GetStock hits, want 1 (projected version 2 is held)", h)
	}

	// The projection moves on; its notification has not arrived.
	f.setQuietly("sku-1", "S1", 4, 3)
	if on, v := f.get("sku-1", "S1", 3); on != 4 || v != 3 {
		t.Fatalf("min_version 3: on_hand %d at %d, want 4 at 3", on, v)
	}
	if on, v := f.get("sku-1", "S1", 0); on != 4 || v != 3 {
		t.Fatalf("after reading version 3: on_hand %d at %d, want 4 at 3 again", on, v)
	}
	// Another store's level held from before version 3 was dropped too.
	f.setQuietly("sku-1", "S2", 8, 2)
	if on, _ := f.get("sku-1", "S2", 0); on != 8 {
		t.Fatalf("S2 on_hand %d, want 8 read from PostgreSQL", on)
	}
}

// BatchGetStock answers held keys from the cache and the rest from
// PostgreSQL, in the order asked, with the missing ones named.
func TestCacheServesBatchesInOrder(t *testing.T) {
	f := newCacheFixture(t, query.Config{})
	f.project(receipt("sku-1", "S1", 1, 5), receipt("sku-2", "S1", 1, 7), receipt("sku-3", "S1", 1, 8))
	f.get("sku-2", "S1", 0)
	keys := []*inventoryv1.StockKey{{SkuId: "sku-3", StoreId: "S1"}, {SkuId: "sku-9", StoreId: "S1"}, {SkuId: "sku-2", StoreId: "S1"}, {SkuId: "sku-1", StoreId: "S1"}}
	for round := range 2 {
		r, err := f.c.BatchGetStock(t.Context(), connect.NewRequest(&inventoryv1.BatchGetStockRequest{Keys: keys}))
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, l := range r.Msg.GetLevels() {
			got = append(got, l.GetOnHand())
		}
		if len(got) != 3 || got[0] != 8 || got[1] != 7 || got[2] != 5 || len(r.Msg.GetMissing()) != 1 || r.Msg.GetMissing()[0].GetSkuId() != "sku-9" {
			t.Fatalf("round %d: on_hand %v missing %v, want [8 7 5] and sku-9", round, got, r.Msg.GetMissing())
		}
	}
	// Round 0: sku-2 held; round 1: all three found ones held.
	if h, m := f.lookups("BatchGetStock", "hit"), f.lookups("BatchGetStock", "miss"); h != 4 || m != 4 {
		t.Fatalf("%d hits and %d misses, want 4 and 4", h, m)
	}
}

// While the hub's connection is down the cache could miss notifications:
// it is emptied and off until the hub listens again.
func TestCacheIsEmptiedWhenTheListenerIsLost(t *testing.T) {
	f := newCacheFixture(t, query.Config{})
	f.project(receipt("sku-1", "S1", 1, 5))
	f.get("sku-1", "S1", 0)
	f.setQuietly("sku-1", "S1", 9, 2)
	if on, _ := f.get("sku-1", "S1", 0); on != 5 {
		t.Fatalf("on_hand %d: not served from the cache", on)
	}
	f.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`)
	eventually(t, "the change read once the listener was lost", func() bool { on, _ := f.get("sku-1", "S1", 0); return on == 9 })
}

// A negative CacheLevels turns the cache off.
func TestCacheOff(t *testing.T) {
	f := newCacheFixture(t, query.Config{CacheLevels: -1})
	f.project(receipt("sku-1", "S1", 1, 5))
	f.get("sku-1", "S1", 0)
	f.setQuietly("sku-1", "S1", 9, 2)
	if on, _ := f.get("sku-1", "S1", 0); on != 9 {
		t.Fatalf("on_hand %d, want 9 read from PostgreSQL", on)
	}
}

// A listening connection that stops delivering without an error (here its
// backend is stopped with SIGSTOP, as a half-open connection or a failover
// would leave it) is found out by the heartbeats it no longer returns: the
// cache is emptied and the hub listens on a new connection.
func TestCacheIsEmptiedWhenTheListenerGoesSilent(t *testing.T) {
	f := newCacheFixture(t, query.Config{HeartbeatInterval: 50 * time.Millisecond})
	f.project(receipt("sku-1", "S1", 1, 5))
	f.get("sku-1", "S1", 0)
	f.setQuietly("sku-1", "S1", 9, 2)
	if on, _ := f.get("sku-1", "S1", 0); on != 5 {
		t.Fatalf("on_hand %d: not served from the cache", on)
	}
	var pid int
	if err := f.pool.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Skipf("cannot stop the listener's backend (%v): the test needs to signal PostgreSQL's processes", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	eventually(t, "the change read once the listener fell silent", func() bool { on, _ := f.get("sku-1", "S1", 0); return on == 9 })
}
