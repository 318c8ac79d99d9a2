// Package server is the one HTTP listener of a Tally process: one port
// serves Connect, gRPC and gRPC-Web, plus gRPC health and reflection,
// /metrics and anything else mounted on it, over h2c (HTTP/2 without TLS,
// and HTTP/1.1) or, WithTLS, over TLS (HTTP/2 negotiated by ALPN, and
// HTTP/1.1). It knows no service.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
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

// Server is an HTTP server: h2c, or TLS when built WithTLS.
type Server struct {
	mux      *http.ServeMux
	srv      *http.Server
	lis      net.Listener
	tls      bool
	services []string
	log      *slog.Logger
	maxBytes int64
	rpc      *rpcMetrics // nil without a registry
	// metricsGuard, when set, must accept a /metrics request.
	metricsGuard func(*http.Request) error
	// interceptors go around every handler, inside the RPC metrics.
	interceptors []connect.Interceptor
}

// WithInterceptors puts interceptors around every handler mounted with
// HandlerOptions (tracing, say), inside the RPC metrics.
func WithInterceptors(i ...connect.Interceptor) Option {
	return func(s *Server) { s.interceptors = append(s.interceptors, i...) }
}

// WithMetricsGuard makes /metrics answer 401 unless guard accepts the
// request (a bearer token, say).
func WithMetricsGuard(guard func(*http.Request) error) Option {
	return func(s *Server) { s.metricsGuard = guard }
}

// Option configures Listen.
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

// WithTLS serves TLS with cfg (its certificates, and its ClientAuth and
// ClientCAs when clients must present a certificate): HTTP/2 for clients
// that negotiate it by ALPN (gRPC), HTTP/1.1 for the others. A client that
// speaks plaintext to the port fails its handshake and is disconnected.
// Default: no TLS (h2c).
func WithTLS(cfg *tls.Config) Option {
	return func(s *Server) {
		if cfg != nil {
			s.tls = true
			s.srv.TLSConfig = cfg.Clone()
		}
	}
}

// Listen binds addr (host:port; port 0 picks one).
func Listen(addr string, reg *prometheus.Registry, log *slog.Logger, opts ...Option) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &Server{mux: http.NewServeMux(), lis: lis, log: log, maxBytes: DefaultMaxRequestBytes}
	if reg != nil {
		s.rpc = newRPCMetrics(reg)
		metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
		s.mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s.metricsGuard != nil {
				if err := s.metricsGuard(r); err != nil {
					w.Header().Set("WWW-Authenticate", "Bearer")
					http.Error(w, err.Error(), http.StatusUnauthorized)
					return
				}
			}
			metrics.ServeHTTP(w, r)
		}))
	}
	s.srv = &http.Server{
		// Also bounds a TLS handshake: a client that connects and says
		// nothing is dropped.
		ReadHeaderTimeout: 10 * time.Second,
	}
	if log != nil {
		// Not the standard logger: failed handshakes (a plaintext client
		// on a TLS port) and recovered panics go where the rest goes.
		s.srv.ErrorLog = slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	}
	for _, o := range opts {
		o(s)
	}
	// No request is read into memory beyond the limit.
	s.srv.Handler = http.MaxBytesHandler(explain415(s.mux), s.maxBytes+envelopeSlack)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if s.tls {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	s.srv.Protocols = protocols
	return s, nil
}

// TLS reports whether the server serves TLS.
func (s *Server) TLS() bool { return s.tls }

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// MaxRequestBytes is the request limit (WithMaxRequestBytes).
func (s *Server) MaxRequestBytes() int64 { return s.maxBytes }

// HandlerOptions are the options every Connect handler mounted on s must
// be built with: they bound each message to the server's request limit
// and, with a registry, count and time every RPC (tally_rpc_…).
func (s *Server) HandlerOptions() []connect.HandlerOption {
	// Responses under 8 KiB are never compressed, whatever the client
	// accepts: gzip costs more CPU than such bytes are worth (a grpc-go
	// client that links the gzip codec, as the OTLP exporter makes Tally's
	// own clients do, asks for it on every call; a BatchGetStock of 100
	// levels is about 5 KiB).
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(int(s.maxBytes)), connect.WithCompressMinBytes(8 << 10)}
	if s.rpc != nil {
		// First, so it is outermost: refusals by later interceptors
		// (authentication, unknown fields) are counted too.
		opts = append(opts, connect.WithInterceptors(s.rpc))
	}
	if len(s.interceptors) > 0 {
		opts = append(opts, connect.WithInterceptors(s.interceptors...))
	}
	return opts
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
	// The health service is listed too, so `grpcurl list` shows it.
	reflector := grpcreflect.NewStaticReflector(append(slices.Clone(s.services), grpchealth.HealthV1ServiceName)...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, s.HandlerOptions()...))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, s.HandlerOptions()...))

	errc := make(chan error, 1)
	go func() {
		if s.tls {
			// The certificates are in TLSConfig; ServeTLS adds the ALPN
			// protocols (h2, http/1.1).
			errc <- s.srv.ServeTLS(s.lis, "", "")
			return
		}
		errc <- s.srv.Serve(s.lis)
	}()
	s.log.Info("serving", "addr", s.Addr(), "tls", s.tls, "services", s.services)
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

// explain415 gives Connect's 415 Unsupported Media Type (a request whose
// Content-Type no protocol takes) a body that says what to send: the
// handlers answer it with an Accept-Post header alone, which curl users
// do not see.
func explain415(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&explaining415{ResponseWriter: w, got: r.Header.Get("Content-Type")}, r)
	})
}

type explaining415 struct {
	http.ResponseWriter
	got string
}

func (w *explaining415) WriteHeader(code int) {
	if code != http.StatusUnsupportedMediaType {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	got := w.got
	if got == "" {
		got = "none"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.ResponseWriter.WriteHeader(code)
	fmt.Fprintf(w.ResponseWriter, "unsupported Content-Type %q: send application/json or application/proto (Connect), "+
		"application/grpc (gRPC) or application/grpc-web (gRPC-Web)\n", got)
}

// Flush and Unwrap keep streaming responses and http.ResponseController
// working through the wrapper.
func (w *explaining415) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *explaining415) Unwrap() http.ResponseWriter { return w.ResponseWriter }
