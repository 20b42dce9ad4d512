package pcstls

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ClientCredentials returns gRPC transport credentials that present this process's certificate
// and verify the server's against the CA and the address dialled, re-reading the files at each
// handshake. If allow is not nil the server must also name an identity it permits.
func (s *Source) ClientCredentials(allow *Allow) credentials.TransportCredentials {
	return &clientCreds{src: s, allow: allow}
}

type clientCreds struct {
	src      *Source
	allow    *Allow
	override string
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := credentials.NewTLS(c.src.ClientConfig(c.override, c.allow)).ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w handshake with %s: %v", ErrTLS, authority, err)
	}
	return conn, info, nil
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("%w: client credentials used by a server", ErrTLS)
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

func (c *clientCreds) OverrideServerName(name string) error {
	c.override = name
	return nil
}

// ServerCredentials returns gRPC transport credentials for a server: TLS with this process's
// certificate, re-reading the files at each handshake. The client's certificate is verified
// against the CA right after the handshake, but a connection whose certificate is missing or
// fails is kept open so that each call is refused with a status that says why (the
// interceptors of Interceptors): a TLS alert would reach the client as a bare reset. onFail,
// if set, is told of every failed handshake and refused certificate.
func (s *Source) ServerCredentials(onFail func(remote net.Addr, err error)) credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: credentials.NewTLS(s.DeferredClientConfig()), src: s, onFail: onFail}
}

type serverCreds struct {
	credentials.TransportCredentials
	src    *Source
	onFail func(net.Addr, error)
}

// AuthInfo is the gRPC AuthInfo of a server connection: the TLS state and the verdict on the
// client's certificate.
type AuthInfo struct {
	credentials.TLSInfo
	// Leaf is the client's verified certificate; nil if Err is set.
	Leaf *x509.Certificate
	Err  error
}

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		if c.onFail != nil {
			c.onFail(raw.RemoteAddr(), err)
		}
		return conn, info, err
	}
	ti := info.(credentials.TLSInfo)
	leaf, verr := c.src.VerifyClient(ti.State.PeerCertificates)
	if verr != nil && c.onFail != nil {
		c.onFail(raw.RemoteAddr(), verr)
	}
	return conn, AuthInfo{TLSInfo: ti, Leaf: leaf, Err: verr}, nil
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{TransportCredentials: c.TransportCredentials.Clone(), src: c.src, onFail: c.onFail}
}

// PeerCertificate returns the verified certificate of a gRPC call's caller on a connection of
// ServerCredentials, or the reason there is none.
func PeerCertificate(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: no peer", ErrTLS)
	}
	info, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return nil, fmt.Errorf("%w: not a mutual TLS connection", ErrTLS)
	}
	return info.Leaf, info.Err
}

// Permit returns nil if any of the lists permits cert, and otherwise an error naming the
// certificate and every list.
func Permit(cert *x509.Certificate, lists ...*Allow) error {
	if cert == nil {
		return fmt.Errorf("%w: no client certificate", ErrTLS)
	}
	var kinds []string
	for _, a := range lists {
		if a.Permits(cert) {
			return nil
		}
		kinds = append(kinds, fmt.Sprintf("%s %v", a.Kind, a.Patterns))
	}
	return fmt.Errorf("%w: %s is not among the allowed %s", ErrNotAllowed, Identity(cert), strings.Join(kinds, " or "))
}
