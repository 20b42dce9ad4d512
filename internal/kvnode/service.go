package kvnode

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
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

	mu      sync.Mutex
	schemas map[uint64]uint64
}

// NewNode serves store. self and leaseValid come from the node's agent.
func NewNode(store *Store, self func() uint64, leaseValid func() bool) *Node {
	return &Node{store: store, self: self, leaseValid: leaseValid, schemas: map[uint64]uint64{}}
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

func (n *Node) Get(_ context.Context, req *pcspb.KVGetRequest) (*pcspb.KVGetResponse, error) {
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	v, found, err := n.store.Get(sh.Id, req.Key)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.KVGetResponse{Value: v, Found: found}, nil
}

func (n *Node) Put(_ context.Context, req *pcspb.KVPutRequest) (*pcspb.KVPutResponse, error) {
	if len(req.Value) > MaxValueSize {
		return nil, status.Errorf(codes.InvalidArgument, "kvnode: value of %d bytes exceeds %d", len(req.Value), MaxValueSize)
	}
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	if err := n.store.Write(sh.Id, []*pcspb.KVPair{{Key: req.Key, Value: req.Value}}, nil); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.KVPutResponse{}, nil
}

func (n *Node) Delete(_ context.Context, req *pcspb.KVDeleteRequest) (*pcspb.KVDeleteResponse, error) {
	sh, err := n.check(req.Header, req.Key)
	if err != nil {
		return nil, err
	}
	if err := n.store.Write(sh.Id, nil, [][]byte{req.Key}); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.KVDeleteResponse{}, nil
}

func (n *Node) Scan(_ context.Context, req *pcspb.KVScanRequest) (*pcspb.KVScanResponse, error) {
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
	pairs, more, err := n.store.Scan(sh.Id, start, end, limit)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pcspb.KVScanResponse{Pairs: pairs, More: more}, nil
}

func (n *Node) Batch(_ context.Context, req *pcspb.KVBatchRequest) (*pcspb.KVBatchResponse, error) {
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
	if err := n.store.Write(sh.Id, req.Puts, req.Deletes); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
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
		ss = append(ss, &pcspb.ShardStats{ShardId: id, SizeBytes: size})
	}
	return ns, ss
}
