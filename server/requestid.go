package server

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/roles"
)

// forwardRequestID copies the client's request id onto a call this node forwards to the
// primary, so that the primary deduplicates it as it would the client's own.
func forwardRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if vals := metadata.ValueFromIncomingContext(ctx, pcspb.RequestIDHeader); len(vals) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, pcspb.RequestIDHeader, vals[0])
	}
	if id := callerIdentity(ctx); id != "" {
		// The primary trusts this only from a peer (callerIdentity).
		ctx = metadata.AppendToOutgoingContext(ctx, forwardedIdentityHeader, id)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// forwardedIdentityHeader carries, on a call a member forwards, the identity of the caller it
// forwards for.
const forwardedIdentityHeader = "pcs-forwarded-identity"

// callerIdentity is the identity of whoever made the call under mutual TLS ("" without): the
// certificate's, or, on a call a peer forwarded, the one it forwarded for.
func callerIdentity(ctx context.Context) string {
	c, ok := roles.CallerFrom(ctx)
	if !ok {
		return ""
	}
	if c.Roles&roles.Peer != 0 {
		if vals := metadata.ValueFromIncomingContext(ctx, forwardedIdentityHeader); len(vals) > 0 {
			return vals[0]
		}
	}
	return c.Identity
}

// actAsNode refuses a call made under mutual TLS by a certificate other than the one the data
// node registered with: a node certificate acts only as its own node. A member acting for
// itself (a peer with nothing forwarded) may act for any node.
func (s *Server) actAsNode(ctx context.Context, id uint64) error {
	n, err := s.dataNode(id)
	if err != nil {
		return err
	}
	c, ok := roles.CallerFrom(ctx)
	if !ok {
		return nil
	}
	who := callerIdentity(ctx)
	if c.Roles&roles.Peer != 0 && who == c.Identity {
		return nil
	}
	if n.Identity != who {
		return fmt.Errorf("%w: %s may act only as the data node it registered; node %d registered as %q", ErrPermissionDenied, who, id, n.Identity)
	}
	return nil
}

// applyRequest applies the one command that carries out a client's request, exactly once: a
// retry of a request already applied gets the recorded result.
func (s *Server) applyRequest(ctx context.Context, cmd *pcspb.Command) (*meta.Result, error) {
	id, err := pcspb.RequestIDFrom(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if id != nil {
		id.Identity = callerIdentity(ctx) // the member says who asked, never the client
	}
	cmd.Request = id
	if id != nil && s.fsm.ClusterVersion() < meta.VersionRequestIDs {
		// Entries below that version carry no request id, so a retry would apply twice. A new
		// cluster raises its version within moments of electing a primary (every member reports
		// it can): its first writes wait for that rather than go without exactly-once. A mixed
		// cluster with a member of an older build stays below it (the version loop finds that
		// out at once) and its writes go on as before; so do they once clusterVersionWait has
		// passed since this member became primary with a member not answering.
		until := time.Unix(0, s.readySince.Load()).Add(clusterVersionWait)
		s.awaitClusterVersion(ctx, meta.VersionRequestIDs, time.Until(until))
		if err := ctx.Err(); err != nil {
			return nil, err // nothing proposed: the client's retry is safe
		}
	}
	return s.apply(ctx, cmd)
}

// clusterVersionWait: for this long after a member becomes primary, client writes wait for a
// new cluster's version to rise to one with request ids.
const clusterVersionWait = 10 * time.Second

// awaitClusterVersion waits until the cluster version is at least v, for at most d or until ctx
// ends.
func (s *Server) awaitClusterVersion(ctx context.Context, v uint32, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(d)
	for s.fsm.ClusterVersion() < v {
		if low := s.membersVersion.Load(); low != 0 && low < v {
			return // a member cannot read v: it will not rise
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-t.C:
		}
	}
}

// waitFuture waits for a Raft future, or for ctx. hashicorp/raft bounds only the enqueueing of
// most requests; the wait for their outcome must be bounded by the caller.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("waiting for raft: %w", ctx.Err())
	}
}
