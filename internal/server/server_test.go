package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/tally-oss/tally/internal/server"
	"github.com/tally-oss/tally/internal/testenv"
)

// serveTLS serves cfg's TLS on a free port until the test ends and
// returns the address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return startServer(t, nil, server.WithTLS(cfg)).Addr()
}

// startServer serves h2c (or what opts say) on a free port, with metrics in
// reg (nil: none), until the test ends.
func startServer(t *testing.T, reg *prometheus.Registry, opts ...server.Option) *server.Server {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := server.Listen("127.0.0.1:0", reg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}

// grpcCheck asks the gRPC health service over grpc-go.
func grpcCheck(t *testing.T, addr string, creds credentials.TransportCredentials) (*healthpb.HealthCheckResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
}

// connectCheck asks the health service over Connect (or gRPC-Web) on
// HTTP/1.1.
func connectCheck(t *testing.T, url string, cfg *tls.Config, opts ...connect.ClientOption) (*healthpb.HealthCheckResponse, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	defer tr.CloseIdleConnections()
	c := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](&http.Client{Transport: tr}, url+"/grpc.health.v1.Health/Check", opts...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.CallUnary(ctx, connect.NewRequest(&healthpb.HealthCheckRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func TestTLSServesGRPCConnectAndGRPCWeb(t *testing.T) {
	ca := testenv.NewCA(t)
	cert := ca.Issue(t, "server", "127.0.0.1")
	addr := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	trust := &tls.Config{RootCAs: ca.Pool}

	resp, err := grpcCheck(t, addr, credentials.NewTLS(trust))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc-go over TLS: %v, %v", resp, err)
	}
	for name, opts := range map[string][]connect.ClientOption{"connect": nil, "grpc-web": {connect.WithGRPCWeb()}} {
		resp, err := connectCheck(t, "https://"+addr, trust, opts...)
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s over TLS on HTTP/1.1: %v, %v", name, resp, err)
		}
	}
}

// A plaintext client on the TLS port gets an error at once, not a hang
// until its deadline.
func TestPlaintextClientOnTLSPortFails(t *testing.T) {
	ca := testenv.NewCA(t)
	addr := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "server", "127.0.0.1").TLS}})

	start := time.Now()
	_, err := grpcCheck(t, addr, insecure.NewCredentials())
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("h2c gRPC to the TLS port: %v; want UNAVAILABLE", err)
	}
	_, err = connectCheck(t, "http://"+addr, nil)
	if err == nil {
		t.Fatal("Connect over plain HTTP/1.1 to the TLS port succeeded")
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("plaintext calls took %v to fail; want an immediate error", d)
	}
}

func TestClientCertificateIsRequiredWithClientCA(t *testing.T) {
	ca := testenv.NewCA(t)
	addr := serveTLS(t, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "server", "127.0.0.1").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool,
	})

	if _, err := grpcCheck(t, addr, credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})); status.Code(err) != codes.Unavailable {
		t.Fatalf("grpc-go without a client certificate: %v; want UNAVAILABLE", err)
	}
	if _, err := connectCheck(t, "https://"+addr, &tls.Config{RootCAs: ca.Pool}); err == nil {
		t.Fatal("Connect without a client certificate succeeded")
	}
	other := testenv.NewCA(t).Issue(t, "stranger", "127.0.0.1")
	if _, err := connectCheck(t, "https://"+addr, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{other.TLS}}); err == nil {
		t.Fatal("Connect with a certificate of another CA succeeded")
	}

	client := ca.Issue(t, "client").TLS
	withCert := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client}}
	if resp, err := grpcCheck(t, addr, credentials.NewTLS(withCert)); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc-go with a client certificate: %v, %v", resp, err)
	}
	if resp, err := connectCheck(t, "https://"+addr, withCert); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Connect with a client certificate: %v, %v", resp, err)
	}
}

// gRPC reflection (what `grpcurl list` and `describe` use) lists the
// health service and can describe it.
func TestReflectionListsAndDescribesTheHealthService(t *testing.T) {
	srv := startServer(t, nil)
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var names []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "grpc.health.v1.Health") {
		t.Fatalf("reflection lists %v, not grpc.health.v1.Health", names)
	}
	resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}})
	if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("reflection cannot describe grpc.health.v1.Health: %v", resp.GetErrorResponse())
	}
}

// A request with no or a wrong Content-Type is answered 415 with a body
// that says what to send (curl users see no Accept-Post header).
func TestUnsupportedContentTypeSaysWhatToSend(t *testing.T) {
	srv := startServer(t, nil)
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded"} {
		req, err := http.NewRequest(http.MethodPost, "http://"+srv.Addr()+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "application/json") || !strings.Contains(string(body), "application/proto") {
			t.Fatalf("Content-Type %q: %d %q, want 415 saying application/json or application/proto", ct, resp.StatusCode, body)
		}
	}
	// The right one still works.
	resp, err := http.Post("http://"+srv.Addr()+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "SERVING") {
		t.Fatalf("application/json: %d %q", resp.StatusCode, body)
	}
}

// Every RPC is counted by procedure and code and timed, whatever its
// protocol: here the health service over Connect and over gRPC.
func TestRPCsAreCountedAndTimedByProcedureAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := startServer(t, reg)
	if _, err := connectCheck(t, "http://"+srv.Addr(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := grpcCheck(t, srv.Addr(), insecure.NewCredentials()); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: "no.such.Service"}); status.Code(err) != codes.NotFound {
		t.Fatalf("health of an unknown service: %v, want NotFound", err)
	}
	const check = "/grpc.health.v1.Health/Check"
	if n, _, _ := testenv.Series(t, reg, "tally_rpc_requests_total", map[string]string{"code": "ok", "procedure": check}); n != 2 {
		t.Fatalf("%s ok: %v, want 2", check, n)
	}
	if n, _, _ := testenv.Series(t, reg, "tally_rpc_requests_total", map[string]string{"code": "not_found", "procedure": check}); n != 1 {
		t.Fatalf("%s not_found: %v, want 1", check, n)
	}
	if _, n, _ := testenv.Series(t, reg, "tally_rpc_duration_seconds", map[string]string{"procedure": check}); n != 3 {
		t.Fatalf("tally_rpc_duration_seconds{procedure=%q} observed %d RPCs, want 3", check, n)
	}
}
