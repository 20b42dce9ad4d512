package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/postdb/pcs/api/pcspb"
)

// The spans PCS makes besides its gRPC calls (grpctrace): each Raft write (pcs.raft.apply,
// named by its command), each DDL pass that changes something (pcs.ddl) and each scheduling
// tick that starts, saves or finishes operators or fails primaries over (pcs.schedule). A
// request's write is a child of the request; a background loop's starts a trace of its own,
// sampled at the trace-ratio setting (none at the default 0).

// commandOp is the descriptor of Command's operation.
var commandOp = (&pcspb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")

// commandName names cmd's operation ("put", "create_table", ...).
func commandName(cmd *pcspb.Command) string {
	if fd := cmd.ProtoReflect().WhichOneof(commandOp); fd != nil {
		return string(fd.Name())
	}
	return "none"
}

// span starts a span of this member's tracer.
func (s *Server) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return s.cfg.Tracing.Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, marking it failed with err, if any.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
