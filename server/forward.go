package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/postdb/pcs/api/pcspb"
)

// peerConns caches gRPC connections to other PCS nodes, for forwarding.
type peerConns struct {
	creds credentials.TransportCredentials
	opts  []grpc.DialOption // tracing
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerConns(creds credentials.TransportCredentials, opts ...grpc.DialOption) *peerConns {
	return &peerConns{creds: creds, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerConns) get(addr string) (pcspb.PCSClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, append(slices.Clone(p.opts), grpc.WithTransportCredentials(p.creds),
			grpc.WithConnectParams(fastReconnect), grpc.WithUnaryInterceptor(forwardRequestID))...)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", addr, err)
		}
		p.conns[addr] = cc
	}
	return pcspb.NewPCSClient(cc), nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, cc := range p.conns {
		cc.Close()
		delete(p.conns, a)
	}
}

// route decides where a request that needs the primary is served: nil means here (this node is
// the primary and ready); otherwise the client of the primary to forward to. A primary still
// taking over, or an election under way, is waited for, up to about two election timeouts.
func (s *Server) route(ctx context.Context, noForward bool) (pcspb.PCSClient, error) {
	deadline := time.Now().Add(2*s.cfg.Raft.ElectionTimeout + 2*s.cfg.Raft.HeartbeatTimeout)
	for {
		if s.isPrimary() {
			return nil, nil
		}
		name, addr := s.primary()
		if name != "" && name != s.cfg.Name {
			if noForward || addr == "" {
				return nil, s.notPrimary()
			}
			return s.peers.get(addr)
		}
		// No primary known, or this node is the primary and still taking over.
		if time.Now().After(deadline) {
			return nil, s.notPrimary()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// forwardSetMember asks the primary to record this member's addresses.
func (s *Server) forwardSetMember(ctx context.Context, me *pcspb.Member) error {
	cli, err := s.route(ctx, false)
	if err != nil {
		return err
	}
	if cli == nil {
		_, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_SetMember{SetMember: &pcspb.CmdSetMember{Member: me}}})
		return err
	}
	_, err = cli.MemberUpdate(ctx, &pcspb.MemberUpdateRequest{Member: me})
	return err
}

// requestJoin asks one of the configured endpoints to add this node.
func (s *Server) requestJoin(ctx context.Context) error {
	var last error
	for _, ep := range s.cfg.Join {
		cli, err := s.peers.get(ep)
		if err != nil {
			last = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		resp, err := cli.MemberAdd(cctx, &pcspb.MemberAddRequest{Name: s.cfg.Name, PeerAddr: s.PeerAddr(), NonVoter: s.cfg.JoinAsNonVoter,
			ClusterId: s.ClusterID()})
		cancel()
		if err == nil && resp.PromotionPending {
			err = errors.New("added as a non-voter; promotion waits for this node to catch up")
		}
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%s: %w", ep, err)
	}
	return last
}

// fastReconnect retries a lost connection within tens of milliseconds (gRPC's default waits a
// second before the first retry, which would add a second to every failover and restart).
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}
