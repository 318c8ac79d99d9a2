package backoff_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tally-oss/tally/internal/backoff"
)

func TestDelaysDoubleUpToMax(t *testing.T) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 100*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
	b.Max = 150 * time.Millisecond // a caller may lower the cap
	if d := b.Next(); d != 150*time.Millisecond {
		t.Errorf("after lowering Max: %v", d)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := backoff.Backoff{Min: time.Hour, Max: time.Hour}
	if b.Wait(ctx) {
		t.Error("Wait on a cancelled context reported the full delay")
	}
}
