// Package rpclimits holds the bounds every PCS and data-node server sets on its connections:
// concurrent streams, keepalive enforcement and HTTP timeouts, so that a misbehaving or
// malicious peer cannot hold unbounded resources.
package rpclimits

import (
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Bounds of a connection.
const (
	// MaxConcurrentStreams a connection may have open at once (calls, watches, heartbeats).
	MaxConcurrentStreams = 1000
	// KeepaliveMinTime is the shortest interval between a client's keepalive pings; a client
	// pinging more often is disconnected (GOAWAY too_many_pings).
	KeepaliveMinTime = 5 * time.Second
	// IdlePing: a connection silent this long is pinged; one that does not answer within
	// IdlePingTimeout is closed (a peer that vanished without a FIN).
	IdlePing        = time.Minute
	IdlePingTimeout = 20 * time.Second
)

// GRPC returns the server options that bound a gRPC server's connections.
func GRPC() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: IdlePing, Timeout: IdlePingTimeout}),
	}
}

// HTTP returns an HTTP server of h with read, write and idle timeouts (the write timeout leaves
// room for a 60 s CPU profile).
func HTTP(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}
