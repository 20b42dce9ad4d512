package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// snapshotTo brings a replica in line with this primary at position lsn: nothing to send if
// it is at the same Position (the usual case at a new term: the replicas were in line with the
// old primary), a snapshot otherwise. A transfer may take up to SnapshotTimeout, but an
// unreachable replica is given up on after UnreachableAfter — or at once, unless retry is set
// (a learner is tried again later, rather than holding up the shard).
func (n *Node) snapshotTo(ctx context.Context, node uint64, sh *pcspb.Shard, lsn uint64, retry bool) error {
	sctx, cancel := context.WithTimeout(ctx, SnapshotTimeout)
	defer cancel()
	rctx, rcancel := context.WithTimeout(ctx, n.replicateTimeout)
	defer rcancel()
	try := retryTransport
	if !retry {
		try = func(_ context.Context, f func() error) error { return f() }
	}
	return try(rctx, func() error {
		kv, err := n.peer(rctx, node)
		if err != nil {
			return err
		}
		pos, err := kv.Position(rctx, &pcspb.PositionRequest{ShardId: sh.Id, Term: sh.Term, Primary: n.self()})
		if err != nil {
			return err
		}
		if own := n.store.Position(sh.Id); own.LSN == lsn && own.Term != 0 && (Position{pos.Lsn, pos.LastTerm}) == own {
			n.metrics.snapshotsSkipped.Inc()
			return nil // it holds exactly what this primary holds
		}
		return n.sendSnapshot(sctx, kv, sh, lsn)
	})
}

// sendSnapshot brings a replica that missed positions up to this primary: the shard's whole
// data, range and epoch version at position lsn. The caller holds the shard's lock and has
// written lsn locally.
func (n *Node) sendSnapshot(ctx context.Context, kv pcspb.KVClient, sh *pcspb.Shard, lsn uint64) (err error) {
	ctx, span := n.tracer().Start(ctx, "kvnode.snapshot.send", trace.WithAttributes(attribute.Int64("shard", int64(sh.Id)), attribute.Int64("lsn", int64(lsn))))
	defer func() { endSpan(span, err) }()
	if got := n.store.LSN(sh.Id); got != lsn {
		return fmt.Errorf("kvnode: shard %d is at %d locally, not %d", sh.Id, got, lsn)
	}
	cur, ok := n.store.Replica(sh.Id)
	if !ok {
		return fmt.Errorf("kvnode: shard %d: %w", sh.Id, ErrNoReplica)
	}
	stream, err := kv.InstallSnapshot(ctx)
	if err != nil {
		return err
	}
	lastTerm := n.store.Position(sh.Id).Term
	first := true
	sent := 0
	err = n.store.Chunks(sh.Id, SnapshotChunkBytes, func(pairs []*pcspb.KVPair) error {
		for _, kv := range pairs {
			sent += len(kv.Key) + len(kv.Value)
		}
		req := &pcspb.InstallSnapshotRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Pairs: pairs, Primary: n.self(), LastTerm: lastTerm}
		if first {
			req.Start, req.End, req.Version = cur.Start, cur.End, cur.Epoch.GetVersion()
			first = false
		}
		return stream.Send(req)
	}, func(reqs []*pcspb.AppliedRequest) error {
		req := &pcspb.InstallSnapshotRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Primary: n.self(), LastTerm: lastTerm, Requests: reqs}
		if first {
			req.Start, req.End, req.Version = cur.Start, cur.End, cur.Epoch.GetVersion()
			first = false
		}
		return stream.Send(req)
	})
	if err == nil && first { // an empty shard: one chunk with no pairs
		err = stream.Send(&pcspb.InstallSnapshotRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Primary: n.self(), LastTerm: lastTerm,
			Start: cur.Start, End: cur.End, Version: cur.Epoch.GetVersion()})
	}
	if err != nil {
		if _, rerr := stream.CloseAndRecv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr // the replica's answer says more than a failed send
		}
		return err
	}
	if _, err = stream.CloseAndRecv(); err != nil {
		return err
	}
	n.metrics.snapshotsSent.Inc()
	n.metrics.snapshotBytes.Add(float64(sent))
	return nil
}

// SnapshotChunkBytes is about how much of a shard's data one snapshot message carries.
const SnapshotChunkBytes = 1 << 20

// InstallSnapshot replaces this replica's data with the primary's, at the primary's position,
// and adopts the primary's term, range and epoch version: the chunks are gathered in a batch
// and applied at once when the primary closes the stream. The shard's lock is held only to
// check the primary at the start and to check it again and commit at the end, never while
// chunks cross the network; the whole stream has SnapshotTimeout.
func (n *Node) InstallSnapshot(stream pcspb.KV_InstallSnapshotServer) (err error) {
	ctx, span := n.tracer().Start(stream.Context(), "kvnode.snapshot.install")
	defer func() { endSpan(span, err) }()
	ctx, cancel := context.WithTimeout(ctx, SnapshotTimeout)
	defer cancel()
	first, err := recvWithin(ctx, stream)
	if err != nil {
		return err
	}
	target := func() (*pcspb.Shard, error) { // the replica's record as the snapshot leaves it
		sh, err := n.follow(first.ShardId, first.Term, first.Primary)
		if err != nil {
			return nil, err
		}
		if first.Version > 0 && (first.Version != sh.Epoch.GetVersion() || !bytes.Equal(first.Start, sh.Start) || !bytes.Equal(first.End, sh.End)) {
			sh = proto.Clone(sh).(*pcspb.Shard)
			sh.Start, sh.End = first.Start, first.End
			sh.Epoch = &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: first.Version}
		}
		return sh, nil
	}
	l := n.shardLock(first.ShardId)
	l.Lock()
	sh, err := target()
	l.Unlock()
	if err != nil {
		return err
	}
	n.dropView(sh.Id) // the data is replaced
	r, err := n.store.Replace(sh)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	for req := first; ; {
		if req.ShardId != first.ShardId || req.Term != first.Term || req.Lsn != first.Lsn || req.Primary != first.Primary || req.LastTerm != first.LastTerm {
			r.Abort()
			return status.Errorf(codes.InvalidArgument, "kvnode: a snapshot chunk of shard %d term %d position %d in a snapshot of shard %d term %d position %d",
				req.ShardId, req.Term, req.Lsn, first.ShardId, first.Term, first.Lsn)
		}
		if err := r.Add(req.Pairs); err != nil {
			r.Abort()
			return status.Error(codes.Internal, err.Error())
		}
		if err := r.AddRequests(req.Requests); err != nil {
			r.Abort()
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if req, err = recvWithin(ctx, stream); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			r.Abort()
			return err
		}
	}
	l.Lock()
	defer l.Unlock()
	// The replica may have moved on while the chunks came (a newer primary): check again.
	if sh, err = target(); err == nil {
		err = r.SetMeta(sh)
	}
	if err != nil {
		r.Abort()
		return err
	}
	if err := r.Commit(Position{first.Lsn, first.LastTerm}); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	n.metrics.snapshotsReceived.Inc()
	return stream.SendAndClose(&pcspb.InstallSnapshotResponse{})
}

// recvWithin receives the next message of a stream, or fails when ctx ends (the handler then
// returns, which ends the stream and the receive left waiting).
func recvWithin(ctx context.Context, stream pcspb.KV_InstallSnapshotServer) (*pcspb.InstallSnapshotRequest, error) {
	type got struct {
		req *pcspb.InstallSnapshotRequest
		err error
	}
	ch := make(chan got, 1)
	go func() {
		req, err := stream.Recv()
		ch <- got{req, err}
	}()
	select {
	case g := <-ch:
		return g.req, g.err
	case <-ctx.Done():
		return nil, status.Errorf(codes.DeadlineExceeded, "kvnode: snapshot stream: %v", ctx.Err())
	}
}
