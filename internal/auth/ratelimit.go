package auth

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RateLimit is a token bucket per caller: the token's subject when calls
// are authenticated, else the client's IP address. A call beyond it is
// answered RESOURCE_EXHAUSTED with a google.rpc.RetryInfo saying when to
// try again. It must run after Interceptor (it reads the principal).
// Buckets of callers silent for ten minutes are forgotten. The limit is
// per instance: a call forwarded to the partition's owner counts there
// too (a forwarded Apply batch as one call).
func RateLimit(perSecond float64, burst int) connect.Interceptor {
	return &limiter{rate: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[string]*bucket{}, now: time.Now}
}

type limiter struct {
	rate    rate.Limit
	burst   int
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
	now     func() time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

// idleBucket is how long a caller's bucket outlives its last call.
const idleBucket = 10 * time.Minute

func (l *limiter) allow(ctx context.Context, peer string) error {
	who := "client " + peer
	if p, ok := FromContext(ctx); ok {
		who = p.Subject
	}
	now := l.now()
	l.mu.Lock()
	b := l.buckets[who]
	if b == nil {
		b = &bucket{l: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[who] = b
	}
	b.seen = now
	if now.Sub(l.swept) > idleBucket {
		for k, x := range l.buckets {
			if now.Sub(x.seen) > idleBucket {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	r := b.l.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	if wait > 0 {
		r.CancelAt(now) // not taken: the caller is told to come back
	}
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("rate limit of %g calls/s (burst %d) for %s reached; retry in %v", float64(l.rate), l.burst, who, wait.Round(time.Millisecond)))
	if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

func (l *limiter) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		if err := l.allow(ctx, hostOf(req.Peer().Addr)); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (l *limiter) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l *limiter) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := l.allow(ctx, hostOf(conn.Peer().Addr)); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
