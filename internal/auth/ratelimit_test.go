package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tally-oss/tally/internal/auth"
)

// Each token has its own bucket: one caller over the limit is told
// RESOURCE_EXHAUSTED with when to retry, another is not held back.
func TestRateLimitIsPerTokenWithRetryInfo(t *testing.T) {
	v, key := hsVerifier(t)
	mux := http.NewServeMux()
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(), connect.WithInterceptors(auth.Interceptor(v), auth.RateLimit(1, 3))))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := connect.NewClient[grpc_health_v1.HealthCheckRequest, grpc_health_v1.HealthCheckResponse](srv.Client(), srv.URL+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	call := func(tok string) error {
		r := connect.NewRequest(&grpc_health_v1.HealthCheckRequest{})
		r.Header().Set("Authorization", "Bearer "+tok)
		_, err := client.CallUnary(context.Background(), r)
		return err
	}
	a, _ := auth.Issue(key, "till-a", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	b, _ := auth.Issue(key, "till-b", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	for i := range 3 {
		if err := call(a); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	err := call(a)
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("fourth call at once: %v, want resource_exhausted", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if r, ok := v.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > time.Second {
		t.Fatalf("retry info %v, want a delay of at most 1 s", retry)
	}
	if err := call(b); err != nil {
		t.Fatalf("another token: %v, want its own bucket", err)
	}
	time.Sleep(retry.GetRetryDelay().AsDuration() + 50*time.Millisecond)
	if err := call(a); err != nil {
		t.Fatalf("after the retry delay: %v", err)
	}
}
