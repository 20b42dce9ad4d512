package pcstls

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BenchmarkReconnect is the cost of a new connection and its first call: plaintext against
// mutual TLS (a full handshake each time, files re-checked, client certificate verified).
//
//	go test -run XXX -bench Reconnect -count 6 ./pcstls
func BenchmarkReconnect(b *testing.B) {
	dir := b.TempDir()
	ca, err := NewCA("bench CA", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if err := ca.WriteCA(dir); err != nil {
		b.Fatal(err)
	}
	src := func(name string) *Source {
		is, err := ca.Issue(name, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		f, err := is.Write(dir, name)
		if err != nil {
			b.Fatal(err)
		}
		s, err := NewSource(f)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	server, client := src("server"), src("client")
	for _, c := range []struct {
		name         string
		server, dial credentials.TransportCredentials
		interceptors bool
	}{
		{"plaintext", insecure.NewCredentials(), insecure.NewCredentials(), false},
		{"mtls", server.ServerCredentials(nil), client.ClientCredentials(nil), true},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := []grpc.ServerOption{grpc.Creds(c.server)}
			if c.interceptors {
				// The work of the role check: the peer's certificate and one allow list.
				opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					cert, err := PeerCertificate(ctx)
					if err == nil {
						err = Permit(cert, &Allow{Kind: "clients"})
					}
					if err != nil {
						return nil, err
					}
					return h(ctx, req)
				}))
			}
			g := grpc.NewServer(opts...)
			healthpb.RegisterHealthServer(g, health.NewServer())
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go g.Serve(ln)
			defer g.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ResetTimer()
			for b.Loop() {
				cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(c.dial))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
				cc.Close()
			}
		})
	}
}
