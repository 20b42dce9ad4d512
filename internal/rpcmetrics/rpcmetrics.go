// Package rpcmetrics times gRPC requests into a Prometheus histogram by method and code.
package rpcmetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Histogram returns a request-latency histogram named name, labelled by method and code.
func Histogram(name, help string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: name, Help: help, Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
	}, []string{"method", "code"})
}

// ServerOptions returns the interceptors that observe every unary request and every stream
// (whole stream) into h.
func ServerOptions(h *prometheus.HistogramVec) []grpc.ServerOption {
	observe := func(method string, start time.Time, err error) {
		h.WithLabelValues(method, status.Code(err).String()).Observe(time.Since(start).Seconds())
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := handler(ctx, req)
			observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			start := time.Now()
			err := handler(srv, ss)
			observe(info.FullMethod, start, err)
			return err
		}),
	}
}
