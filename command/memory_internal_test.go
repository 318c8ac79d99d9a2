package command

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tally-oss/tally/command/domain"
	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// BenchmarkWriterStateMemory measures the heap a partition writer's state
// takes (issue #17): the SKU map the writer folds from the log, built the
// way fold builds it (each event marshalled and decoded again, so every
// string is the decoder's own, as on a rebuild). Reported per (sku, store)
// level and per SKU; the dedupe window is measured apart
// (TestWindowRemembersACommandInUnder100Bytes). Run it with
//
//	go test -run '^$' -bench BenchmarkWriterStateMemory -benchtime 1x ./command
func BenchmarkWriterStateMemory(b *testing.B) {
	for _, c := range []struct{ skus, stores int }{{1_000_000, 1}, {20_000, 50}, {100_000, 50}} {
		b.Run(fmt.Sprintf("skus=%d/stores=%d", c.skus, c.stores), func(b *testing.B) {
			var heap, rss float64
			for range b.N {
				heap, rss = stateBytes(b, c.skus, c.stores)
			}
			levels := float64(c.skus * c.stores)
			b.ReportMetric(heap/levels, "B/level")
			b.ReportMetric(heap/float64(c.skus), "B/SKU")
			b.ReportMetric(heap/(1<<20), "heap-MiB")
			b.ReportMetric(rss/(1<<20), "RSS-MiB")
		})
	}
}

// stateBytes folds one receipt per (sku, store) into a fresh SKU map and
// returns the heap it holds afterwards, and how much the process's
// resident set grew meanwhile.
func stateBytes(b *testing.B, skus, stores int) (heap, rss float64) {
	b.Helper()
	storeIDs := make([]string, stores)
	for i := range storeIDs {
		storeIDs[i] = fmt.Sprintf("ST-%03d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rss0 := residentBytes(b)
	state := map[string]*SKU{}
	buf := []byte{}
	for s := range skus {
		id := fmt.Sprintf("SKU-%08d", s)
		for v, store := range storeIDs {
			var err error
			buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], &inventoryv1.InventoryEvent{
				SkuId: id, StoreId: store, SkuVersion: int64(v + 1), EventType: inventoryv1.EventType_EVENT_TYPE_RECEIPT,
				QuantityDelta: 10, OnHandAfter: 10, CommandId: "pos-0000000000000000", EventId: "0190b6a4-0000-7000-8000-000000000000",
			})
			if err != nil {
				b.Fatal(err)
			}
			e := &inventoryv1.InventoryEvent{}
			if err := proto.Unmarshal(buf, e); err != nil {
				b.Fatal(err)
			}
			sku := state[e.GetSkuId()]
			if sku == nil {
				sku = domain.NewSKU(e.GetSkuId())
				state[e.GetSkuId()] = sku
			}
			if err := sku.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	rss1 := residentBytes(b)
	runtime.KeepAlive(state)
	return float64(after.HeapAlloc) - float64(before.HeapAlloc), float64(rss1 - rss0)
}

// residentBytes is the process's resident set (Linux).
func residentBytes(b *testing.B) int64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skip("no /proc/self/statm:", err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(raw), &size, &resident); err != nil {
		b.Fatal(err)
	}
	return resident * int64(os.Getpagesize())
}
