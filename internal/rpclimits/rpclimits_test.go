package rpclimits

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestConcurrentStreamsBounded: one connection opening more streams than MaxConcurrentStreams
// never has more than that many running at the server; the rest wait.
func TestConcurrentStreamsBounded(t *testing.T) {
	var active, peak atomic.Int64
	opts := append(GRPC(), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		n := active.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		defer active.Add(-1)
		return h(srv, ss)
	}))
	g := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	for range MaxConcurrentStreams + 20 {
		go func() {
			if st, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
				st.Recv() // the first status, then the watch stays open
				<-ctx.Done()
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for active.Load() < MaxConcurrentStreams {
		if time.Now().After(deadline) {
			t.Fatalf("only %d streams running", active.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p := peak.Load(); p > MaxConcurrentStreams {
		t.Fatalf("%d streams ran at once, more than %d", p, MaxConcurrentStreams)
	}
}
