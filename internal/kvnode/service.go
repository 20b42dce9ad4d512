package kvnode

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// Limits of the KV service.
const (
	MaxKeySize   = 4 << 10
	MaxValueSize = 1 << 20
	MaxBatchOps  = 10_000
	MaxScan      = 10_000
)

// Node serves a store: the gRPC KV service and the nodeagent.Handler.
type Node struct {
	pcspb.UnimplementedKVServer
	store *Store
	// self is this node's id (0 until registered); leaseValid reports the node's lease.
	self       func() uint64
	leaseValid func() bool

	// peer returns the KV client of another data node, for replication.
	peer func(ctx context.Context, node uint64) (pcspb.KVClient, error)

	mu      sync.Mutex
	schemas map[uint64]uint64
	locks   map[uint64]*sync.Mutex // per shard: orders its requests as primary
	synced  map[uint64]syncKey     // per shard: the configuration all replicas were last brought in line with
}

// syncKey identifies a shard's configuration: a new term or replica set needs a new sync.
type syncKey struct{ term, confVer uint64 }

// NewNode serves store. self and leaseValid come from the node's agent; peer reaches the other
// data nodes.
func NewNode(store *Store, self func() uint64, leaseValid func() bool, peer func(context.Context, uint64) (pcspb.KVClient, error)) *Node {
	return &Node{store: store, self: self, leaseValid: leaseValid, peer: peer, schemas: map[uint64]uint64{},
		locks: map[uint64]*sync.Mutex{}, synced: map[uint64]syncKey{}}
}

func (n *Node) shardLock(id uint64) *sync.Mutex {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, ok := n.locks[id]
	if !ok {
		l = &sync.Mutex{}
		n.locks[id] = l
	}
	return l
}

// ReplicateTimeout bounds how long a primary waits for a replica to persist a write.
const ReplicateTimeout = 2 * time.Second

// serve runs f as the shard's primary, under the shard's lock (requests of one shard are
// ordered, and a read never sees a write that is not yet on every replica). Before the first
// request of a configuration (a new term or replica set), and after a write that a replica
// did not acknowledge, it brings every replica in line with this primary — the primary's data
// as a snapshot — so that what a read can see is on every replica of the configuration.
func (n *Node) serve(ctx context.Context, sh *pcspb.Shard, f func() error) error {
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	if err := n.syncLocked(ctx, sh); err != nil {
		return status.Errorf(codes.Unavailable, "kvnode: shard %d: replicas not in line with the primary: %v", sh.Id, err)
	}
	return f()
}

func (n *Node) syncLocked(ctx context.Context, sh *pcspb.Shard) error {
	key := syncKey{sh.Term, sh.Epoch.GetConfVer()}
	n.mu.Lock()
	done := n.synced[sh.Id] == key
	n.mu.Unlock()
	if done {
		return nil
	}
	lsn := n.store.LSN(sh.Id)
	for _, r := range sh.Replicas {
		if r == n.self() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, ReplicateTimeout)
		kv, err := n.peer(rctx, r)
		if err == nil {
			err = n.sendSnapshot(rctx, kv, sh, lsn)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("replica on node %d: %w", r, err)
		}
	}
	n.mu.Lock()
	n.synced[sh.Id] = key
	n.mu.Unlock()
	return nil
}

// writeLocked gives a write the shard's next log position, persists it locally and on every
// other replica of the configuration in parallel, and returns once all have it. If a replica
// does not acknowledge, the outcome is unknown to the client (ABORTED: the write may be on some
// replicas) and the shard is synced again before its next request.
func (n *Node) writeLocked(ctx context.Context, sh *pcspb.Shard, puts []*pcspb.KVPair, deletes [][]byte) error {
	lsn := n.store.LSN(sh.Id) + 1
	errs := make(chan error, len(sh.Replicas))
	localDone := make(chan struct{}) // closed once the local write is durable (or failed)
	var localErr error
	go func() {
		defer close(localDone)
		if localErr = n.store.Write(sh.Id, lsn, puts, deletes); localErr != nil {
			errs <- status.Error(codes.Internal, localErr.Error())
			return
		}
		errs <- nil
	}()
	req := &pcspb.ReplicateRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Puts: puts, Deletes: deletes}
	waiting := 1
	for _, r := range sh.Replicas {
		if r == n.self() {
			continue
		}
		waiting++
		go func(r uint64) {
			rctx, cancel := context.WithTimeout(ctx, ReplicateTimeout)
			defer cancel()
			kv, err := n.peer(rctx, r)
			if err == nil {
				_, err = kv.Replicate(rctx, req)
				if ke := client.KVErrorOf(err); ke != nil && isGap(ke) {
					<-localDone // the snapshot must include this write
					err = localErr
					if err == nil {
						err = n.sendSnapshot(rctx, kv, sh, lsn)
					}
				}
			}
			if err != nil {
				err = status.Errorf(codes.Unavailable, "kvnode: replica on node %d did not persist shard %d position %d: %v", r, sh.Id, lsn, err)
			}
			errs <- err
		}(r)
	}
	var first error
	for i := 0; i < waiting; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		n.mu.Lock()
		delete(n.synced, sh.Id)
		n.mu.Unlock()
		return status.Errorf(codes.Aborted, "kvnode: write to shard %d at position %d has an unknown outcome: %v", sh.Id, lsn, first)
	}
	return nil
}

func isGap(ke *pcspb.KVError) bool {
	_, ok := ke.GetErr().(*pcspb.KVError_LogGap)
	return ok
}

// sendSnapshot brings a replica that missed positions up to this primary: the shard's whole
// data at position lsn. The caller holds the shard's lock and has written lsn locally.
func (n *Node) sendSnapshot(ctx context.Context, kv pcspb.KVClient, sh *pcspb.Shard, lsn uint64) error {
	if got := n.store.LSN(sh.Id); got != lsn {
		return fmt.Errorf("kvnode: shard %d is at %d locally, not %d", sh.Id, got, lsn)
	}
	pairs, more, err := n.store.Scan(sh.Id, nil, nil, MaxSnapshotPairs)
	if err != nil {
		return err
	}
	if more {
		return fmt.Errorf("kvnode: shard %d has more than %d keys for a one-message snapshot", sh.Id, MaxSnapshotPairs)
	}
	_, err = kv.InstallSnapshot(ctx, &pcspb.InstallSnapshotRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Pairs: pairs})
	return err
}

// MaxSnapshotPairs bounds a one-message replica snapshot.
const MaxSnapshotPairs = 100_000

// InstallSnapshot replaces this replica's data with the primary's, at the primary's position.
func (n *Node) InstallSnapshot(_ context.Context, req *pcspb.InstallSnapshotRequest) (*pcspb.InstallSnapshotResponse, error) {
	sh, ok := n.store.Replica(req.ShardId)
	if !ok {
		return nil, kvError(codes.NotFound, fmt.Sprintf("kvnode: no replica of shard %d here", req.ShardId),
			&pcspb.KVError{Err: &pcspb.KVError_ShardNotFound{ShardNotFound: req.ShardId}})
	}
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	if sh, _ = n.store.Replica(req.ShardId); req.Term < sh.Term {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d is at term %d; refusing a snapshot of term %d", sh.Id, sh.Term, req.Term),
			&pcspb.KVError{Err: &pcspb.KVError_StaleTerm{StaleTerm: sh.Term}})
	}
	if err := n.store.Replace(sh.Id, req.Lsn, req.Pairs); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.InstallSnapshotResponse{}, nil
}

// Replicate persists a write from the shard's primary. It refuses a primary of a lower term
// than this replica has seen (fencing) and positions that would leave a gap; a position it
// already has is acknowledged again (the primary retried).
func (n *Node) Replicate(_ context.Context, req *pcspb.ReplicateRequest) (*pcspb.ReplicateResponse, error) {
	sh, ok := n.store.Replica(req.ShardId)
	if !ok {
		return nil, kvError(codes.NotFound, fmt.Sprintf("kvnode: no replica of shard %d here", req.ShardId),
			&pcspb.KVError{Err: &pcspb.KVError_ShardNotFound{ShardNotFound: req.ShardId}})
	}
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	if sh, _ = n.store.Replica(req.ShardId); req.Term < sh.Term {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d is at term %d; refusing a primary of term %d", sh.Id, sh.Term, req.Term),
			&pcspb.KVError{Err: &pcspb.KVError_StaleTerm{StaleTerm: sh.Term}})
	}
	if req.Term > sh.Term {
		nsh := proto.Clone(sh).(*pcspb.Shard)
		nsh.Term = req.Term
		if err := n.store.PutReplica(nsh); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	cur := n.store.LSN(sh.Id)
	switch {
	case req.Lsn <= cur:
		return &pcspb.ReplicateResponse{Lsn: cur}, nil
	case req.Lsn != cur+1:
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d has position %d; %d leaves a gap", sh.Id, cur, req.Lsn),
			&pcspb.KVError{Err: &pcspb.KVError_LogGap{LogGap: cur}})
	}
	if err := n.store.Write(sh.Id, req.Lsn, req.Puts, req.Deletes); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.ReplicateResponse{Lsn: req.Lsn}, nil
}

func kvError(code codes.Code, msg string, detail *pcspb.KVError) error {
	st, err := status.New(code, msg).WithDetails(detail)
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// check admits a request on the shard's primary: the replica exists, the epoch matches, this
// node is the primary and holds a valid lease, and every key is inside the shard.
func (n *Node) check(h *pcspb.KVHeader, keys ...[]byte) (*pcspb.Shard, error) {
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "kvnode: request has no header")
	}
	sh, ok := n.store.Replica(h.ShardId)
	if !ok {
		return nil, kvError(codes.NotFound, fmt.Sprintf("kvnode: no replica of shard %d here", h.ShardId),
			&pcspb.KVError{Err: &pcspb.KVError_ShardNotFound{ShardNotFound: h.ShardId}})
	}
	if !proto.Equal(h.Epoch, sh.Epoch) {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d epoch is %v, request has %v", sh.Id, sh.Epoch, h.Epoch),
			&pcspb.KVError{Err: &pcspb.KVError_EpochNotMatch{EpochNotMatch: sh}})
	}
	if sh.Primary != n.self() || !n.leaseValid() {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: not the primary of shard %d (primary is node %d, lease valid %v)", sh.Id, sh.Primary, n.leaseValid()),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}})
	}
	for _, k := range keys {
		if len(k) > MaxKeySize {
			return nil, status.Errorf(codes.InvalidArgument, "kvnode: key of %d bytes exceeds %d", len(k), MaxKeySize)
		}
		if bytes.Compare(k, sh.Start) < 0 || (len(sh.End) > 0 && bytes.Compare(k, sh.End) >= 0) {
			return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: key %x is outside shard %d [%x, %x)", k, sh.Id, sh.Start, sh.End),
				&pcspb.KVError{Err: &pcspb.KVError_KeyNotInShard{KeyNotInShard: k}})
		}
	}
	return sh, nil
}

func (n *Node) Get(ctx context.Context, req *pcspb.KVGetRequest) (*pcspb.KVGetResponse, error) {
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	var resp *pcspb.KVGetResponse
	err = n.serve(ctx, sh, func() error {
		v, found, err := n.store.Get(sh.Id, req.Key)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		resp = &pcspb.KVGetResponse{Value: v, Found: found}
		return nil
	})
	return resp, err
}

func (n *Node) Put(ctx context.Context, req *pcspb.KVPutRequest) (*pcspb.KVPutResponse, error) {
	if len(req.Value) > MaxValueSize {
		return nil, status.Errorf(codes.InvalidArgument, "kvnode: value of %d bytes exceeds %d", len(req.Value), MaxValueSize)
	}
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	if err := n.serve(ctx, sh, func() error { return n.writeLocked(ctx, sh, []*pcspb.KVPair{{Key: req.Key, Value: req.Value}}, nil) }); err != nil {
		return nil, err
	}
	return &pcspb.KVPutResponse{}, nil
}

func (n *Node) Delete(ctx context.Context, req *pcspb.KVDeleteRequest) (*pcspb.KVDeleteResponse, error) {
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	if err := n.serve(ctx, sh, func() error { return n.writeLocked(ctx, sh, nil, [][]byte{req.Key}) }); err != nil {
		return nil, err
	}
	return &pcspb.KVDeleteResponse{}, nil
}

func (n *Node) Scan(ctx context.Context, req *pcspb.KVScanRequest) (*pcspb.KVScanResponse, error) {
	limit := int(req.Limit)
	if limit == 0 || limit > MaxScan {
		limit = MaxScan
	}
	sh, err := n.check(req.Header)
	if err != nil {
		return nil, err
	}
	start := req.Start
	if bytes.Compare(start, sh.Start) < 0 {
		start = sh.Start
	}
	end := req.End
	if len(end) == 0 || (len(sh.End) > 0 && bytes.Compare(end, sh.End) > 0) {
		end = sh.End
	}
	var resp *pcspb.KVScanResponse
	err = n.serve(ctx, sh, func() error {
		pairs, more, err := n.store.Scan(sh.Id, start, end, limit)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		resp = &pcspb.KVScanResponse{Pairs: pairs, More: more}
		return nil
	})
	return resp, err
}

func (n *Node) Batch(ctx context.Context, req *pcspb.KVBatchRequest) (*pcspb.KVBatchResponse, error) {
	if len(req.Puts)+len(req.Deletes) > MaxBatchOps {
		return nil, status.Errorf(codes.InvalidArgument, "kvnode: %d operations exceed %d", len(req.Puts)+len(req.Deletes), MaxBatchOps)
	}
	keys := make([][]byte, 0, len(req.Puts)+len(req.Deletes))
	for _, kv := range req.Puts {
		if len(kv.Value) > MaxValueSize {
			return nil, status.Errorf(codes.InvalidArgument, "kvnode: value of %d bytes exceeds %d", len(kv.Value), MaxValueSize)
		}
		keys = append(keys, kv.Key)
	}
	keys = append(keys, req.Deletes...)
	sh, err := n.check(req.Header, keys...)
	if err != nil {
		return nil, err
	}
	if err := n.serve(ctx, sh, func() error { return n.writeLocked(ctx, sh, req.Puts, req.Deletes) }); err != nil {
		return nil, err
	}
	return &pcspb.KVBatchResponse{}, nil
}

// ---- nodeagent.Handler ------------------------------------------------------------------------

// CreateReplica records a replica; an existing one keeps its data and takes the newer metadata.
func (n *Node) CreateReplica(_ context.Context, sh *pcspb.Shard) error {
	if cur, ok := n.store.Replica(sh.Id); ok && proto.Equal(cur, sh) {
		return nil
	}
	return n.store.PutReplica(sh)
}

// DropReplica deletes a replica and its data.
func (n *Node) DropReplica(_ context.Context, id uint64) error {
	if _, ok := n.store.Replica(id); !ok {
		return nil
	}
	return n.store.DropReplica(id)
}

// LoadSchema records the schema version (the reference node stores untyped values).
func (n *Node) LoadSchema(_ context.Context, ref *pcspb.SchemaVersionRef) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.schemas[ref.TableId] = max(n.schemas[ref.TableId], ref.Version)
	return nil
}

// HeldShards lists the replicas.
func (n *Node) HeldShards() []uint64 { return n.store.Held() }

// Stats reports the replica count, and per shard the disk usage.
func (n *Node) Stats() (*pcspb.NodeStats, []*pcspb.ShardStats) {
	held := n.store.Held()
	ns := &pcspb.NodeStats{ShardCount: uint64(len(held)), SchemaVersions: map[uint64]uint64{}}
	n.mu.Lock()
	for k, v := range n.schemas {
		ns.SchemaVersions[k] = v
	}
	n.mu.Unlock()
	var ss []*pcspb.ShardStats
	for _, id := range held {
		size := n.store.Size(id)
		ns.BytesUsed += size
		st := &pcspb.ShardStats{ShardId: id, SizeBytes: size, ReplicaPositions: map[uint64]uint64{n.self(): n.store.LSN(id)}}
		if sh, ok := n.store.Replica(id); ok {
			st.Term, st.ConfVer = sh.Term, sh.Epoch.GetConfVer()
		}
		ss = append(ss, st)
	}
	return ns, ss
}
