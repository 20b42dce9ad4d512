package raftgroup

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/pcstls"
)

// TLS is mutual TLS on the Raft port: both sides present a certificate of the CA, and each
// side's certificate must name an identity of Allow (the PCS peers).
type TLS struct {
	Source *pcstls.Source
	Allow  *pcstls.Allow
}

// handshakeTimeout bounds a Raft connection's TLS handshake.
const handshakeTimeout = 5 * time.Second

// tlsStream is the Raft stream layer over mutual TLS.
type tlsStream struct {
	raft.StreamLayer
	tls    *TLS
	onFail func(error)
}

func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	// The handshake runs on the connection's first read, in raft's goroutine for it, so a
	// slow or hostile dialer never holds up Accept.
	return &tlsConn{Conn: tls.Server(c, s.tls.Source.ServerConfig(s.tls.Allow)), onFail: s.onFail}, nil
}

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft peer address %s: %w", addr, err)
	}
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, s.tls.Source.ClientConfig(host, s.tls.Allow))
	ctx, cancel := context.WithTimeout(context.Background(), min(timeout, handshakeTimeout))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: raft handshake with %s: %v", pcstls.ErrTLS, addr, err)
	}
	return tc, nil
}

// tlsConn completes the server side of the handshake before the first byte either way, so a
// refused peer is logged as such rather than as a Raft decoding error.
type tlsConn struct {
	net.Conn // *tls.Conn
	once     sync.Once
	err      error
	onFail   func(error)
}

func (c *tlsConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.Conn.(*tls.Conn).HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("%w: raft handshake from %s: %v", pcstls.ErrTLS, c.Conn.RemoteAddr(), err)
			if c.onFail != nil {
				c.onFail(c.err)
			}
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *tlsConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *tlsConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
