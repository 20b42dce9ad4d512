package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// writeBytes is the size of a write's keys and values.
func writeBytes(puts []*pcspb.KVPair, deletes [][]byte) int {
	n := 0
	for _, kv := range puts {
		n += len(kv.Key) + len(kv.Value)
	}
	for _, k := range deletes {
		n += len(k)
	}
	return n
}

// notEnoughReplicas is the error of a write that could not be persisted on min_in_sync
// replicas: retryable, its outcome unknown if it was written anywhere.
func notEnoughReplicas(sh *pcspb.Shard, cause error) error {
	msg := fmt.Sprintf("kvnode: shard %d: fewer than %d replicas (min-in-sync) can persist the write; not acknowledged", sh.Id, sh.MinInSyncOrOne())
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return kvError(codes.Unavailable, msg, &pcspb.KVError{Err: &pcspb.KVError_NotEnoughReplicas{NotEnoughReplicas: sh.MinInSyncOrOne()}})
}

// serve admits a request for the shard named by h and runs f as its primary, under the
// shard's lock (requests of one shard are ordered, and a read never sees a write that is not
// yet on every replica). The checks of check are made again under the lock, so a request that
// waited while the shard changed (a new term, a split) is refused. Before the first request of
// a term, and for every replica that missed a write, the primary brings the replica in line —
// its data as a snapshot — so that what a read can see is on every replica of the
// configuration.
func (n *Node) serve(ctx context.Context, h *pcspb.KVHeader, keys [][]byte, f func(sh *pcspb.Shard) error) error {
	if err := n.admit(ctx, h, keys); err != nil {
		return err
	}
	l := n.shardLock(h.ShardId)
	l.Lock()
	defer l.Unlock()
	sh, err := n.check(h, keys...)
	if err != nil {
		return err
	}
	cur, err := n.syncLocked(ctx, sh, true)
	if err != nil {
		return notInLine(sh, err)
	}
	return f(cur)
}

// notInLine is the error of a request that found a replica out of line with the primary and
// could not bring it in line or have it removed.
func notInLine(sh *pcspb.Shard, err error) error {
	if errors.Is(err, client.ErrNotEnoughReplicas) {
		return notEnoughReplicas(sh, err)
	}
	return status.Errorf(codes.Unavailable, "kvnode: shard %d: replicas not in line with the primary: %v", sh.Id, err)
}

// admit checks a request before it waits for the shard's lock; a request routed with a newer
// epoch than this replica knows makes it refresh the shard from PCS first.
func (n *Node) admit(ctx context.Context, h *pcspb.KVHeader, keys [][]byte) error {
	_, err := n.check(h, keys...)
	if err == nil || !n.newerEpoch(h) || n.refresh(ctx, h.ShardId) != nil {
		return err
	}
	_, err = n.check(h, keys...)
	return err
}

// appliedRequest reads the request id a client sent with a write (gRPC metadata), if any.
func appliedRequest(ctx context.Context) (*pcspb.AppliedRequest, error) {
	id, err := pcspb.RequestIDFrom(ctx)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "kvnode: %v", err)
	}
	if id == nil {
		return nil, nil
	}
	if id.ClientId == 0 || id.Seq == 0 {
		return nil, status.Error(codes.InvalidArgument, "kvnode: a request id needs a client id and a seq (from 1)")
	}
	return &pcspb.AppliedRequest{ClientId: id.ClientId, Seq: id.Seq, AckedBelow: id.AckedBelow}, nil
}

// expiredRequests returns, about once a minute per shard (the clock only paces the search),
// up to 1000 request records of the shard RequestWindow entries behind its log, for the next
// entry to delete. The caller holds the shard's lock.
func (n *Node) expiredRequests(shard uint64) []*pcspb.AppliedRequest {
	now := time.Now()
	n.mu.Lock()
	if n.gcAt == nil {
		n.gcAt = map[uint64]time.Time{}
	}
	due := now.Sub(n.gcAt[shard]) >= time.Minute
	if due {
		n.gcAt[shard] = now
	}
	n.mu.Unlock()
	if !due {
		return nil
	}
	exp, err := n.store.ExpiredRequests(shard, n.store.LSN(shard), 1000)
	if err != nil {
		n.log.Warn("looking for expired request records", "shard", shard, "err", err)
		return nil
	}
	return exp
}

// trimDue decides whether a request trims its client's answered records (about once every
// trimEvery requests). The decision travels with the entry, so every replica trims alike; it
// is remembered only here, and forgetting it costs one early trim.
func (n *Node) trimDue(shard, client, ackedBelow uint64) bool {
	if ackedBelow <= 1 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.trimmed == nil || len(n.trimmed) > 100_000 {
		n.trimmed = map[[2]uint64]uint64{}
	}
	k := [2]uint64{shard, client}
	last, ok := n.trimmed[k]
	if ok && ackedBelow < last+trimEvery {
		return false
	}
	n.trimmed[k] = ackedBelow
	return true
}

// outcomeUnknown is the error of an attempt below its client's floor with no record.
func outcomeUnknown(shard, client, seq, floor uint64) error {
	return pcspb.ReasonError(codes.FailedPrecondition, pcspb.ReasonOutcomeUnknown,
		fmt.Sprintf("kvnode: shard %d has no record of client %x request %d, below its floor %d: it may have been applied", shard, client, seq, floor))
}

// pendingWrite is a write waiting in its shard's queue for group commit.
type pendingWrite struct {
	h       *pcspb.KVHeader
	keys    [][]byte
	puts    []*pcspb.KVPair
	deletes [][]byte
	size    int                   // bytes of keys and values
	req     *pcspb.AppliedRequest // the client request, if it carries an id
	done    chan error            // buffered: the committer never blocks
}

type writeQueue struct {
	mu    sync.Mutex
	items []*pendingWrite
}

func (n *Node) queue(id uint64) *writeQueue {
	q, _ := n.queues.LoadOrStore(id, &writeQueue{})
	return q.(*writeQueue)
}

// MaxGroup bounds the writes committed as one log entry (MaxEntryBytes their bytes).
const MaxGroup = 256

// write commits a write with group commit: it joins its shard's queue, and whichever waiting
// writer takes the shard's lock commits every queued write of the shard as one log entry (one
// fsync per replica), checking each against the shard's current metadata first. Writes are
// applied in arrival order; a write that deletes a key an earlier one in the group puts, or
// puts a key an earlier one deletes, or that would take the entry past MaxEntryBytes, starts a
// new entry.
func (n *Node) write(ctx context.Context, h *pcspb.KVHeader, keys [][]byte, puts []*pcspb.KVPair, deletes [][]byte) error {
	if err := n.admit(ctx, h, keys); err != nil {
		return err
	}
	size := writeBytes(puts, deletes)
	if size > MaxEntryBytes {
		return status.Errorf(codes.InvalidArgument, "kvnode: a write of %d bytes of keys and values exceeds the %d a shard's log entry carries; write it in smaller batches", size, MaxEntryBytes)
	}
	req, err := appliedRequest(ctx)
	if err != nil {
		return err
	}
	w := &pendingWrite{h: h, keys: keys, puts: puts, deletes: deletes, size: size, req: req, done: make(chan error, 1)}
	q := n.queue(h.ShardId)
	q.mu.Lock()
	q.items = append(q.items, w)
	q.mu.Unlock()
	l := n.shardLock(h.ShardId)
	l.Lock()
	defer l.Unlock()
	select {
	case err := <-w.done: // committed by another writer's group
		return err
	default:
	}
	for {
		q.mu.Lock()
		take := min(len(q.items), MaxGroup)
		batch := append([]*pendingWrite(nil), q.items[:take]...)
		q.items = q.items[take:]
		q.mu.Unlock()
		if len(batch) == 0 {
			break
		}
		// The group's outcome is every writer's: it must not hang on the leader's
		// cancellation (replication is bounded by ReplicateTimeout).
		n.commitGroup(context.WithoutCancel(ctx), batch)
	}
	return <-w.done
}

// commitGroup commits queued writes of one shard; the caller holds the shard's lock.
func (n *Node) commitGroup(ctx context.Context, batch []*pendingWrite) {
	var sh *pcspb.Shard
	var group []*pendingWrite
	var puts []*pcspb.KVPair
	var deletes [][]byte
	var reqs []*pcspb.AppliedRequest
	size := 0
	inGroup := map[[2]uint64]bool{}
	putKeys, delKeys := map[string]bool{}, map[string]bool{}
	flush := func() {
		if len(group) == 0 {
			return
		}
		// A repeat of an applied request is answered only once the replicas are in line: its
		// write may be on this primary alone (an earlier attempt ended with an unknown outcome).
		cur, err := n.syncLocked(ctx, sh, true)
		if err != nil {
			err = notInLine(sh, err)
		} else if len(puts)+len(deletes) > 0 {
			err = n.writeLocked(ctx, cur, puts, deletes, nil, reqs)
		}
		if err == nil {
			n.metrics.entryWrites.Observe(float64(len(group)))
		}
		for _, w := range group {
			w.done <- err
		}
		group, puts, deletes, reqs, size = nil, nil, nil, nil, 0
		clear(inGroup)
		clear(putKeys)
		clear(delKeys)
	}
	for _, w := range batch {
		cur, err := n.check(w.h, w.keys...)
		if err != nil {
			w.done <- err
			continue
		}
		if w.req != nil {
			id := [2]uint64{w.req.ClientId, w.req.Seq}
			applied, err := n.store.Applied(cur.Id, id[0], id[1])
			if err != nil {
				w.done <- status.Error(codes.Internal, err.Error())
				continue
			}
			if applied || inGroup[id] {
				// A retry: answered with the outcome of the attempt it repeats, not applied again.
				n.metrics.duplicates.Inc()
				sh = cur
				group = append(group, w)
				continue
			}
			floor, err := n.store.Floor(cur.Id, id[0])
			if err != nil {
				w.done <- status.Error(codes.Internal, err.Error())
				continue
			}
			if id[1] < floor {
				// Below the client's floor with no record: its record expired, or the client
				// had its answer long ago (a delayed copy). Applying it could apply it twice.
				w.done <- outcomeUnknown(cur.Id, id[0], id[1], floor)
				continue
			}
			inGroup[id] = true
			w.req.Trim = n.trimDue(cur.Id, id[0], w.req.AckedBelow)
			reqs = append(reqs, w.req) // stamped with its entry's position by writeLocked
		}
		conflict := false
		for _, kv := range w.puts {
			conflict = conflict || delKeys[string(kv.Key)]
		}
		for _, k := range w.deletes {
			conflict = conflict || putKeys[string(k)]
		}
		if conflict || size+w.size > MaxEntryBytes {
			flush()
		}
		sh = cur
		size += w.size
		group = append(group, w)
		puts = append(puts, w.puts...)
		deletes = append(deletes, w.deletes...)
		for _, kv := range w.puts {
			putKeys[string(kv.Key)] = true
		}
		for _, k := range w.deletes {
			delKeys[string(k)] = true
		}
	}
	flush()
}

// newerEpoch reports whether h names an epoch of its shard newer than this replica's.
func (n *Node) newerEpoch(h *pcspb.KVHeader) bool {
	sh, ok := n.store.Replica(h.GetShardId())
	return ok && n.pcs != nil && (h.Epoch.GetConfVer() > sh.Epoch.GetConfVer() || h.Epoch.GetVersion() > sh.Epoch.GetVersion())
}

// refresh takes the shard's metadata from PCS, one fetch per shard at a time (concurrent
// callers wait for the one in flight).
func (n *Node) refresh(ctx context.Context, id uint64) error {
	done := make(chan struct{})
	if prev, loaded := n.fetching.LoadOrStore(id, done); loaded {
		select {
		case <-prev.(chan struct{}):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { n.fetching.Delete(id); close(done) }()
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	sh, err := n.pcs.Shard(fctx, id)
	if err != nil {
		return err
	}
	if _, ok := n.store.Replica(id); !ok || (!slices.Contains(sh.Replicas, n.self()) && !slices.Contains(sh.Learners, n.self())) {
		return fmt.Errorf("kvnode: shard %d no longer has a replica here", id)
	}
	return n.CreateReplica(ctx, sh)
}

func kvError(code codes.Code, msg string, detail *pcspb.KVError) error {
	st, err := status.New(code, msg).WithDetails(detail)
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// check admits a request on the shard's primary: the replica exists, the epoch matches, this
// node is the primary and holds PCS's grant to serve the shard at its term, and every key is
// inside the shard.
func (n *Node) check(h *pcspb.KVHeader, keys ...[]byte) (*pcspb.Shard, error) {
	sh, err := n.checkReplica(h, keys...)
	if err != nil {
		return nil, err
	}
	if sh.Primary != n.self() {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: not the primary of shard %d (primary is node %d)", sh.Id, sh.Primary),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}})
	}
	if !n.grants.Granted(sh.Id, sh.Term) {
		n.grants.Kick()
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d: no grant from PCS to serve it as primary at term %d (yet)", sh.Id, sh.Term),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{}}})
	}
	return sh, nil
}

// checkReplica admits a request on any replica of the shard: the replica exists, the epoch
// matches, and every key is inside the shard.
func (n *Node) checkReplica(h *pcspb.KVHeader, keys ...[]byte) (*pcspb.Shard, error) {
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "kvnode: request has no header")
	}
	sh, ok := n.store.Replica(h.ShardId)
	if !ok {
		// PCS may have just made the shard (a new partition): ask for commands now, not at the
		// next heartbeat (kicks are spaced, however many requests ask).
		n.grants.Kick()
		return nil, kvError(codes.NotFound, fmt.Sprintf("kvnode: no replica of shard %d here", h.ShardId),
			&pcspb.KVError{Err: &pcspb.KVError_ShardNotFound{ShardNotFound: h.ShardId}})
	}
	if !proto.Equal(h.Epoch, sh.Epoch) {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d epoch is %v, request has %v", sh.Id, sh.Epoch, h.Epoch),
			&pcspb.KVError{Err: &pcspb.KVError_EpochNotMatch{EpochNotMatch: sh}})
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
	if req.Consistency != pcspb.ReadConsistency_READ_CONSISTENCY_PRIMARY {
		if resp, err, served := n.replicaGet(ctx, req); served {
			return resp, err
		}
	}
	var resp *pcspb.KVGetResponse
	err := n.serve(ctx, req.Header, [][]byte{req.Key}, func(sh *pcspb.Shard) error {
		v, found, err := n.store.Get(sh.Id, req.Key)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		resp = &pcspb.KVGetResponse{Value: v, Found: found}
		n.load.add(sh.Id, access{reads: 1, readBytes: len(req.Key) + len(v), key: req.Key})
		return nil
	})
	return resp, err
}

func (n *Node) Put(ctx context.Context, req *pcspb.KVPutRequest) (*pcspb.KVPutResponse, error) {
	if len(req.Value) > MaxValueSize {
		return nil, status.Errorf(codes.InvalidArgument, "kvnode: value of %d bytes exceeds %d", len(req.Value), MaxValueSize)
	}
	if err := n.write(ctx, req.Header, [][]byte{req.Key}, []*pcspb.KVPair{{Key: req.Key, Value: req.Value}}, nil); err != nil {
		return nil, err
	}
	n.load.add(req.Header.GetShardId(), access{writes: 1, writeBytes: len(req.Key) + len(req.Value), key: req.Key})
	return &pcspb.KVPutResponse{}, nil
}

func (n *Node) Delete(ctx context.Context, req *pcspb.KVDeleteRequest) (*pcspb.KVDeleteResponse, error) {
	if err := n.write(ctx, req.Header, [][]byte{req.Key}, nil, [][]byte{req.Key}); err != nil {
		return nil, err
	}
	n.load.add(req.Header.GetShardId(), access{writes: 1, writeBytes: len(req.Key), key: req.Key})
	return &pcspb.KVDeleteResponse{}, nil
}

func (n *Node) Scan(ctx context.Context, req *pcspb.KVScanRequest) (*pcspb.KVScanResponse, error) {
	limit := int(req.Limit)
	if limit == 0 || limit > MaxScan {
		limit = MaxScan
	}
	var resp *pcspb.KVScanResponse
	err := n.serve(ctx, req.Header, nil, func(sh *pcspb.Shard) error {
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
			return status.Error(codes.Internal, err.Error())
		}
		resp = &pcspb.KVScanResponse{Pairs: pairs, More: more}
		n.load.add(sh.Id, access{reads: max(len(pairs), 1), readBytes: pairBytes(pairs, nil), key: start})
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
	if err := n.write(ctx, req.Header, keys, req.Puts, req.Deletes); err != nil {
		return nil, err
	}
	n.load.add(req.Header.GetShardId(), access{writes: len(keys), writeBytes: pairBytes(req.Puts, req.Deletes), key: firstKey(keys)})
	return &pcspb.KVBatchResponse{}, nil
}

// pairBytes is the bytes of keys and values in puts and of the keys in deletes.
func pairBytes(puts []*pcspb.KVPair, deletes [][]byte) int {
	n := 0
	for _, p := range puts {
		n += len(p.Key) + len(p.Value)
	}
	for _, k := range deletes {
		n += len(k)
	}
	return n
}

func firstKey(keys [][]byte) []byte {
	if len(keys) == 0 {
		return nil
	}
	return keys[0]
}
