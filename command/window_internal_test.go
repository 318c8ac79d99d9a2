package command

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tally-oss/tally/command/domain"
)

// The budget: at most 100 bytes of heap per remembered command
// (it was about 1.15 KB when the window kept whole results).
func TestWindowRemembersACommandInUnder100Bytes(t *testing.T) {
	const n = 500_000
	keys := make([]windowKey, n)
	for i := range keys {
		keys[i] = keyOf("sku-"+fmt.Sprint(i%5000), fmt.Sprintf("pos-17-till-4-%012d", i))
	}
	at := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := newWindow(time.Hour)
	for i, k := range keys {
		w.put(k, rememberedOf(domain.Fingerprint{1, 2, 3}, int64(i), 1), at, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per remembered command (%d commands)", per, w.len())
	if per > 100 {
		t.Fatalf("%.1f bytes per remembered command, want at most 100", per)
	}
	runtime.KeepAlive(w)
}

func TestWindowForgetsByRecordedTimeAndKeepsItsHorizon(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	w := newWindow(time.Hour)
	a, b := keyOf("A", "1"), keyOf("A", "2")
	w.put(a, rememberedOf(domain.Fingerprint{}, 10, 1), t0, nil)
	w.put(b, rememberedOf(domain.Fingerprint{}, 11, 2), t0.Add(30*time.Minute), nil)
	w.evict(t0.Add(time.Hour)) // a is exactly an hour old: kept
	if _, _, ok := w.get(a); !ok || !w.horizon.IsZero() {
		t.Fatalf("a forgotten at exactly the window's span (horizon %v)", w.horizon)
	}
	w.evict(t0.Add(time.Hour + time.Second))
	if _, _, ok := w.get(a); ok {
		t.Fatal("a remembered past the window")
	}
	if r, _, ok := w.get(b); !ok || r.offset() != 11 || r.events() != 2 {
		t.Fatalf("b: %v %v, want offset 11, 2 events", r, ok)
	}
	// The end of the forgotten command's second.
	if !w.horizon.Equal(t0.Add(time.Second)) {
		t.Fatalf("horizon %v, want %v", w.horizon, t0.Add(time.Second))
	}
	old := &Command{ID: "1", SKU: "A", OccurredAt: t0}
	if !w.tooOld(old) {
		t.Fatal("a command that occurred at the horizon is not too old")
	}
	// Occurred more than the allowed skew after the horizon: any earlier
	// acceptance of it would be remembered.
	if w.tooOld(&Command{ID: "3", SKU: "A", OccurredAt: t0.Add(MaxFutureSkew + 2*time.Second)}) {
		t.Fatal("a command after the horizon is too old")
	}
	if w.tooOld(&Command{ID: "4", SKU: "A"}) {
		t.Fatal("a command without occurred_at is too old")
	}
}

// A command id used again after the window forgot its first use, both
// read in one fold (no eviction between them): the first use's slot must
// not take the second with it.
func TestAnIDUsedAgainKeepsItsSecondUse(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	w := newWindow(72 * time.Hour)
	k := keyOf("A", "receipt-0001")
	w.put(k, rememberedOf(domain.Fingerprint{1}, 10, 1), t0, nil)
	w.put(k, rememberedOf(domain.Fingerprint{2}, 900, 1), t0.Add(96*time.Hour), nil) // the id reused four days later
	w.evict(t0.Add(97 * time.Hour))
	r, _, ok := w.get(k)
	if !ok || r.offset() != 900 {
		t.Fatalf("second use: %v %v, want it remembered at offset 900", r, ok)
	}
	if got := w.packedSince(0); len(got) != 1 || got[0].r.offset() != 900 {
		t.Fatalf("packed %v, want the second use only", got)
	}
	w.evict(t0.Add(96*time.Hour + 73*time.Hour))
	if _, _, ok := w.get(k); ok {
		t.Fatal("second use remembered past the window")
	}
}
