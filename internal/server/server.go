// Package server is the one HTTP listener of a Tally process: h2c, so one
// port serves Connect, gRPC and gRPC-Web, plus gRPC health and reflection,
// /metrics and anything else mounted on it. It knows no service.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultMaxRequestBytes is the default bound of a request (see
// WithMaxRequestBytes).
const DefaultMaxRequestBytes = 4 << 20

// envelopeSlack is what a request's body may hold beyond its message: the
// 5-byte envelope of gRPC and the Connect streaming protocol, with room to
// spare. The message itself is bounded by connect.WithReadMaxBytes.
const envelopeSlack = 1 << 10

// Server is an h2c HTTP server.
type Server struct {
	mux      *http.ServeMux
	srv      *http.Server
	lis      net.Listener
	services []string
	log      *slog.Logger
	maxBytes int64
}

// Option configures a Server.
type Option func(*Server)

// WithMaxRequestBytes bounds every request to n bytes (default
// DefaultMaxRequestBytes): each route's body is read through
// http.MaxBytesReader, so no request is read into memory beyond n, and
// HandlerOptions bounds each RPC message to n after decompression, so a
// small gzip body cannot expand into a large one. An RPC over the limit is
// answered RESOURCE_EXHAUSTED naming it (connect-go's code for both).
func WithMaxRequestBytes(n int64) Option {
	return func(s *Server) { s.maxBytes = n }
}

// Listen binds addr (host:port; port 0 picks one).
func Listen(addr string, reg *prometheus.Registry, log *slog.Logger, opts ...Option) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &Server{mux: http.NewServeMux(), lis: lis, log: log, maxBytes: DefaultMaxRequestBytes}
	for _, o := range opts {
		o(s)
	}
	if reg != nil {
		s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler:           http.MaxBytesHandler(s.mux, s.maxBytes+envelopeSlack),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// MaxRequestBytes is the request limit (WithMaxRequestBytes).
func (s *Server) MaxRequestBytes() int64 { return s.maxBytes }

// HandlerOptions are the options every Connect handler mounted on s must
// be built with: they bound each message to the server's request limit.
func (s *Server) HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithReadMaxBytes(int(s.maxBytes))}
}

// Handle mounts a handler. service, when not empty, is a gRPC service name
// announced by health and reflection.
func (s *Server) Handle(service, path string, h http.Handler) {
	s.mux.Handle(path, h)
	if service != "" {
		s.services = append(s.services, service)
	}
}

// Close releases the listener of a server that never served (Serve closes
// it itself when it ends).
func (s *Server) Close() { _ = s.lis.Close() }

// Serve serves until ctx ends, then stops taking connections and waits up
// to grace for in-flight calls.
func (s *Server) Serve(ctx context.Context, grace time.Duration) error {
	checker := grpchealth.NewStaticChecker(s.services...)
	s.mux.Handle(grpchealth.NewHandler(checker, s.HandlerOptions()...))
	reflector := grpcreflect.NewStaticReflector(s.services...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, s.HandlerOptions()...))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, s.HandlerOptions()...))

	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.lis) }()
	s.log.Info("serving", "addr", s.Addr(), "services", s.services)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	checker.SetStatus("", grpchealth.StatusNotServing)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.srv.Close()
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
