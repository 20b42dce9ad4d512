package server

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
)

// forwardRequestID copies the client's request id onto a call this node forwards to the
// primary, so that the primary deduplicates it as it would the client's own.
func forwardRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if vals := metadata.ValueFromIncomingContext(ctx, pcspb.RequestIDHeader); len(vals) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, pcspb.RequestIDHeader, vals[0])
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// applyRequest applies the one command that carries out a client's request, exactly once: a
// retry of a request already applied gets the recorded result.
func (s *Server) applyRequest(ctx context.Context, cmd *pcspb.Command) (*meta.Result, error) {
	id, err := pcspb.RequestIDFrom(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cmd.Request = id
	return s.apply(ctx, cmd)
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
