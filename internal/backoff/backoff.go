// Package backoff is the one retry delay of Tally's loops that wait for a
// dependency to come back (a partition writer reopening, a projection
// retrying a batch): doubling from Min up to Max.
package backoff

import (
	"context"
	"time"
)

// Backoff is an exponential delay. The zero value waits 100 ms, doubling up
// to 5 s.
type Backoff struct {
	// Min is the first delay. Default 100 ms.
	Min time.Duration
	// Max caps the delay. Default 5 s.
	Max  time.Duration
	next time.Duration
}

// Next returns the delay before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	if b.next == 0 {
		b.next = b.Min
	}
	d := min(b.next, b.Max)
	b.next = min(2*b.next, b.Max)
	return d
}

// Reset starts again from Min.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps the next delay, or less when ctx ends first; it reports
// whether the full delay passed.
func (b *Backoff) Wait(ctx context.Context) bool { return sleep(ctx, b.Next()) }

// Retry calls f until it returns nil or ctx ends, sleeping the next delay
// after each failure. failed, when not nil, sees each failure (except one
// that ctx's end caused) and the delay before the next attempt. Retry
// returns nil, or ctx's error once ctx ends.
func (b *Backoff) Retry(ctx context.Context, f func() error, failed func(err error, next time.Duration)) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := b.Next()
		if failed != nil {
			failed(err, d)
		}
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
