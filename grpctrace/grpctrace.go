// Package grpctrace instruments gRPC servers and connections with OpenTelemetry (otelgrpc),
// for a given provider and propagator. Heartbeats (a stream per data node, renewed every few
// hundred milliseconds) are not traced.
package grpctrace

import (
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

func options(tp trace.TracerProvider, prop propagation.TextMapPropagator) []otelgrpc.Option {
	return []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(prop),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return !strings.HasSuffix(info.FullMethodName, "/Heartbeat") })}
}

// ServerOption instruments a gRPC server.
func ServerOption(tp trace.TracerProvider, prop propagation.TextMapPropagator) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(options(tp, prop)...))
}

// DialOption instruments a gRPC client connection.
func DialOption(tp trace.TracerProvider, prop propagation.TextMapPropagator) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(options(tp, prop)...))
}
