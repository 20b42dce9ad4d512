package server

import (
	"net"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/pcstls"
)

// peerCredentials are the credentials of this node's calls to other members.
func (s *Server) peerCredentials() credentials.TransportCredentials {
	if t := s.cfg.TLS; t != nil {
		return t.Source.ClientCredentials(t.AllowedPeers)
	}
	return insecure.NewCredentials()
}

// nodeMethods are the calls only a data node (or a member forwarding one) may make.
var nodeMethods = map[string]bool{
	pcspb.PCS_RegisterNode_FullMethodName: true,
	pcspb.PCS_Heartbeat_FullMethodName:    true,
}

// tlsServerOptions are the gRPC server's credentials and the interceptors that check who calls.
func (s *Server) tlsServerOptions() []grpc.ServerOption {
	t := s.cfg.TLS
	if t == nil {
		return nil
	}
	unary, stream := pcstls.Interceptors(func(method string) []*pcstls.Allow {
		if nodeMethods[method] {
			return []*pcstls.Allow{t.AllowedNodes, t.AllowedPeers}
		}
		return []*pcstls.Allow{t.AllowedClients, t.AllowedNodes, t.AllowedPeers}
	})
	return []grpc.ServerOption{
		grpc.Creds(t.Source.ServerCredentials(func(remote net.Addr, err error) {
			s.log.Warn("refused a client connection", "remote", remote.String(), "err", err)
		})),
		grpc.ChainUnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream),
	}
}

// tlsHTTP wraps the HTTP listener and handler for mutual TLS: /health and /ready answer
// anyone (load balancers and probes), every other path needs an allowed certificate.
func (s *Server) tlsHTTP(ln net.Listener, h http.Handler) (net.Listener, http.Handler) {
	t := s.cfg.TLS
	if t == nil {
		return ln, h
	}
	return pcstls.HTTP(ln, h, t.Source, []string{"/health", "/ready"}, t.AllowedClients, t.AllowedNodes, t.AllowedPeers)
}
