package backoff_test

import (
	"context"
	"errors"
	"fmt"
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

func TestRetryUntilSuccessReportingEachFailureAndItsDelay(t *testing.T) {
	b := backoff.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}
	calls := 0
	var delays []time.Duration
	var errs []error
	boom := errors.New("boom")
	err := b.Retry(t.Context(), func() error {
		if calls++; calls < 4 {
			return fmt.Errorf("attempt %d: %w", calls, boom)
		}
		return nil
	}, func(err error, next time.Duration) {
		errs = append(errs, err)
		delays = append(delays, next)
	})
	if err != nil || calls != 4 {
		t.Fatalf("Retry = %v after %d calls, want nil after 4", err, calls)
	}
	if want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
	for _, e := range errs {
		if !errors.Is(e, boom) {
			t.Errorf("failed saw %v, not the attempt's error", e)
		}
	}
}

func TestRetryStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	b := backoff.Backoff{Min: time.Hour, Max: time.Hour}
	calls, failures := 0, 0
	err := b.Retry(ctx, func() error {
		calls++
		cancel() // the failure is the context's doing: not reported
		return context.Canceled
	}, func(error, time.Duration) { failures++ })
	if !errors.Is(err, context.Canceled) || calls != 1 || failures != 0 {
		t.Fatalf("Retry = %v after %d calls, %d reported failures; want context.Canceled after 1, none reported", err, calls, failures)
	}

	ctx, cancel = context.WithCancel(t.Context())
	err = b.Retry(ctx, func() error { return errors.New("down") }, func(error, time.Duration) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Retry cancelled while waiting = %v, want context.Canceled", err)
	}
}
