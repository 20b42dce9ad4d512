// Package tracing is a process's OpenTelemetry tracing, changed at runtime by the node settings
// trace-ratio and trace-exporter (pcsctl node config set): a TracerProvider whose sampler reads
// the current ratio and whose exporter can be swapped. Off (ratio 0, the default) nothing is
// recorded or exported: a request that comes without a sampled parent gets a non-recording
// span. A request whose caller sampled it is recorded at any ratio, so one trace follows a row
// write from the application through every node it reaches.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/postdb/pcs/grpctrace"
)

// ErrBadTarget: an exporter target that is neither an OTLP address nor file:DIR.
var ErrBadTarget = errors.New("tracing: bad exporter target")

// Tracing is one process's tracing.
type Tracing struct {
	service string
	ratio   atomic.Uint64 // float64 bits
	tp      *sdktrace.TracerProvider
	exp     *swappable
	prop    propagation.TextMapPropagator
}

// New returns tracing for a process of the given service ("pcs", "pcsnode", "client"), off.
func New(service string) *Tracing {
	t := &Tracing{service: service, exp: &swappable{}, prop: propagation.TraceContext{}}
	res := resource.NewSchemaless(attribute.String("service.name", service), attribute.Int("process.pid", os.Getpid()))
	t.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler{t}), sdktrace.WithResource(res),
		sdktrace.WithBatcher(t.exp, sdktrace.WithBatchTimeout(200*time.Millisecond)))
	return t
}

// Provider is the TracerProvider to start spans with.
func (t *Tracing) Provider() trace.TracerProvider { return t.tp }

// Tracer is the process's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.tp.Tracer("github.com/postdb/pcs") }

// Propagator carries trace context in gRPC metadata (W3C trace context).
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// SetRatio sets the share of requests without a sampled parent that are traced (0..1).
func (t *Tracing) SetRatio(r float64) {
	t.ratio.Store(math.Float64bits(min(max(r, 0), 1)))
}

// Ratio is the current ratio.
func (t *Tracing) Ratio() float64 { return math.Float64frombits(t.ratio.Load()) }

// SetExporter sends spans to target: "" (nowhere), "host:port" or "otlp://host:port" (OTLP over
// gRPC, without TLS), or "file:DIR" (JSON lines in DIR/SERVICE-PID.jsonl).
func (t *Tracing) SetExporter(ctx context.Context, target string) error {
	exp, err := t.exporter(ctx, target)
	if err != nil {
		return err
	}
	old := t.exp.swap(target, exp)
	if old != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		old.Shutdown(sctx)
	}
	return nil
}

// Exporter is the current exporter target.
func (t *Tracing) Exporter() string {
	t.exp.mu.Lock()
	defer t.exp.mu.Unlock()
	return t.exp.target
}

func (t *Tracing) exporter(ctx context.Context, target string) (sdktrace.SpanExporter, error) {
	switch {
	case target == "":
		return nil, nil
	case strings.HasPrefix(target, "file:"):
		dir := strings.TrimPrefix(target, "file:")
		if dir == "" {
			return nil, fmt.Errorf("%w: file: needs a directory", ErrBadTarget)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d.jsonl", t.service, os.Getpid())), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(f))
		if err != nil {
			f.Close()
			return nil, err
		}
		return &closing{SpanExporter: exp, f: f}, nil
	default:
		addr := strings.TrimPrefix(target, "otlp://")
		if strings.Contains(addr, "/") || !strings.Contains(addr, ":") {
			return nil, fmt.Errorf("%w: %q (host:port, otlp://host:port or file:DIR)", ErrBadTarget, target)
		}
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure())
	}
}

// ValidateTarget checks an exporter target without opening it.
func ValidateTarget(target string) error {
	switch {
	case target == "", strings.HasPrefix(target, "file:") && len(target) > len("file:"):
		return nil
	}
	addr := strings.TrimPrefix(target, "otlp://")
	if strings.HasPrefix(target, "file:") || strings.Contains(addr, "/") || !strings.Contains(addr, ":") {
		return fmt.Errorf("%w: %q (host:port, otlp://host:port or file:DIR)", ErrBadTarget, target)
	}
	return nil
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// ForceFlush exports the spans ended so far.
func (t *Tracing) ForceFlush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

// ServerOption instruments a gRPC server.
func (t *Tracing) ServerOption() grpc.ServerOption { return grpctrace.ServerOption(t.tp, t.prop) }

// DialOption instruments a gRPC client connection.
func (t *Tracing) DialOption() grpc.DialOption { return grpctrace.DialOption(t.tp, t.prop) }

// sampler follows a sampled parent; otherwise it samples the current ratio of traces.
type sampler struct{ t *Tracing }

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	psc := trace.SpanContextFromContext(p.ParentContext)
	if psc.IsValid() {
		if psc.IsSampled() {
			return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: psc.TraceState()}
		}
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: psc.TraceState()}
	}
	r := s.t.Ratio()
	if r <= 0 {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return sdktrace.TraceIDRatioBased(r).ShouldSample(p)
}

func (sampler) Description() string { return "pcs: parent, else the trace-ratio setting" }

// swappable is a span exporter whose target changes at runtime (none: spans are dropped).
type swappable struct {
	mu     sync.Mutex
	target string
	inner  sdktrace.SpanExporter
}

func (s *swappable) swap(target string, exp sdktrace.SpanExporter) sdktrace.SpanExporter {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.inner
	s.target, s.inner = target, exp
	return old
}

func (s *swappable) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	s.mu.Lock()
	inner := s.inner
	s.mu.Unlock()
	if inner == nil {
		return nil
	}
	return inner.ExportSpans(ctx, spans)
}

func (s *swappable) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	inner := s.inner
	s.inner = nil
	s.mu.Unlock()
	if inner == nil {
		return nil
	}
	return inner.Shutdown(ctx)
}

// closing closes the file behind an exporter when it shuts down.
type closing struct {
	sdktrace.SpanExporter
	f *os.File
}

func (c *closing) Shutdown(ctx context.Context) error {
	return errors.Join(c.SpanExporter.Shutdown(ctx), c.f.Close())
}
