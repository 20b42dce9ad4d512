package server

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
)

// requestIDFrom returns the request id a client sent with this call, or nil.
func requestIDFrom(ctx context.Context) (*pcspb.RequestID, error) {
	vals := metadata.ValueFromIncomingContext(ctx, pcspb.RequestIDHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	id := &pcspb.RequestID{}
	if err := proto.Unmarshal([]byte(vals[0]), id); err != nil || id.ClientId == 0 || id.Seq == 0 {
		return nil, errInvalidf("malformed %s header", pcspb.RequestIDHeader)
	}
	return id, nil
}

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
	id, err := requestIDFrom(ctx)
	if err != nil {
		return nil, err
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
