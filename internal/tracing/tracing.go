// Package tracing is Tally's OpenTelemetry tracing: off unless an OTLP
// endpoint is given, then one trace per command from the RPC through the
// partition writer, across Kafka (a W3C traceparent header on the event's
// record), to the projector's transaction; reads get their RPC span.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Header is the Kafka record header carrying the trace context.
const Header = "traceparent"

var propagator = propagation.TraceContext{}

// Tracer makes Tally's spans, from the global provider (a no-op until
// Setup).
func Tracer() trace.Tracer { return otel.Tracer("github.com/tally-oss/tally") }

// Setup exports spans over OTLP/HTTP to endpoint (such as
// http://collector:4318; /v1/traces when it names no path), sampling the fraction sample of traces that
// start here (a caller's sampled traceparent is always followed). It
// returns the function that flushes and stops the export. An empty
// endpoint leaves tracing off.
func Setup(ctx context.Context, endpoint string, sample float64, service string, log *slog.Logger) (func(context.Context) error, error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	if sample < 0 || sample > 1 {
		return nil, fmt.Errorf("--otlp-sample must be 0 to 1, got %v", sample)
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--otlp-endpoint must be an http(s) URL such as http://collector:4318, got %q", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces" // OTLP/HTTP's path for traces
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sample))),
	)
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "error", err) }))
	log.Info("tracing to OTLP", "endpoint", endpoint, "sample", sample)
	return func(ctx context.Context) error {
		otel.SetTracerProvider(prev)
		return tp.Shutdown(ctx)
	}, nil
}

// RecordHeader is the header that carries ctx's span to the record's
// readers, if that span is sampled.
func RecordHeader(ctx context.Context) (kgo.RecordHeader, bool) {
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return kgo.RecordHeader{}, false
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return kgo.RecordHeader{Key: Header, Value: []byte(c[Header])}, true
}

// FromRecord returns the span context a record carries, if any.
func FromRecord(rec *kgo.Record) (context.Context, bool) {
	for _, h := range rec.Headers {
		if h.Key == Header {
			ctx := propagator.Extract(context.Background(), propagation.MapCarrier{Header: string(h.Value)})
			return ctx, trace.SpanContextFromContext(ctx).IsValid()
		}
	}
	return nil, false
}

// Interceptor gives every RPC a server span named after its procedure,
// continuing the caller's trace when its request carries one.
func Interceptor() connect.Interceptor { return interceptor{} }

type interceptor struct{}

func (interceptor) start(ctx context.Context, spec connect.Spec, h propagation.HeaderCarrier) (context.Context, trace.Span) {
	ctx = propagator.Extract(ctx, h)
	service, method, _ := strings.Cut(strings.TrimPrefix(spec.Procedure, "/"), "/")
	return Tracer().Start(ctx, service+"/"+method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.service", service), attribute.String("rpc.method", method)))
}

func end(span trace.Span, err error) {
	if err != nil {
		span.SetAttributes(attribute.String("rpc.connect_rpc.error_code", connect.CodeOf(err).String()))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, span := i.start(ctx, req.Spec(), propagation.HeaderCarrier(req.Header()))
		resp, err := next(ctx, req)
		end(span, err)
		return resp, err
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, span := i.start(ctx, conn.Spec(), propagation.HeaderCarrier(conn.RequestHeader()))
		err := next(ctx, conn)
		end(span, err)
		return err
	}
}
