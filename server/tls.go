package server

import (
	"net"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/pcstls"
)

// peerCredentials are the credentials of this node's calls to other members.
func (s *Server) peerCredentials() credentials.TransportCredentials {
	if t := s.cfg.TLS; t != nil {
		return t.Source.ClientCredentials(t.AllowedPeers)
	}
	return insecure.NewCredentials()
}

// tlsServerOptions are the gRPC server's credentials and the interceptors that check who calls
// (internal/roles).
func (s *Server) tlsServerOptions() []grpc.ServerOption {
	t := s.cfg.TLS
	if t == nil {
		return nil
	}
	unary, stream := t.lists().Interceptors("PCS")
	return []grpc.ServerOption{
		grpc.Creds(t.Source.ServerCredentials(func(remote net.Addr, err error) {
			s.log.Warn("refused a client connection", "remote", remote.String(), "err", err)
		})),
		grpc.ChainUnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream),
	}
}

// tlsHTTP wraps the HTTP listener and handler for mutual TLS, each path allowed by the role
// table (/health and /ready to anyone, for load balancers and probes).
func (s *Server) tlsHTTP(ln net.Listener, h http.Handler) (net.Listener, http.Handler) {
	t := s.cfg.TLS
	if t == nil {
		return ln, h
	}
	return pcstls.HTTP(ln, h, t.Source, t.lists().HTTPCheck("HTTP pcs"))
}
