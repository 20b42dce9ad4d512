package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"

	"github.com/postdb/pcs/api/pcspb"
)

// Replica reads. A backup's store may hold one entry more than is safe to show a reader: the
// write its primary is still replicating (not yet on every replica, not yet acknowledged,
// lost if the primary and this replica both fail). What it may show is a committed state:
// the state before an entry, once that entry arrives (a primary sends entry n only when entry
// n-1 is on every replica of its configuration), or the primary's position, when the primary
// says so (ReadIndex, answered under the shard's lock, after it has brought every replica in
// line). The replica keeps the latest such state as a Pebble snapshot: a read view.
//
//   - follower reads are linearizable: the replica asks the primary for its position and reads
//     exactly that state (its own, if it holds no more; its view, if the view is that state).
//   - stale reads are served from the view if it was known current at most max_staleness ago;
//     otherwise as a follower read (which refreshes the view).

// readView is a committed state of one shard on this replica.
type readView struct {
	snap *pebble.Snapshot
	lsn  uint64
	// at is when the state was known current: an entry after it arrived, or the ReadIndex
	// that named it was sent.
	at      time.Time
	refs    int  // reads in progress
	retired bool // replaced or dropped: closed once no read uses it
}

// ReplicaReadWait bounds how long a follower read waits for this replica to reach the
// primary's position.
const ReplicaReadWait = time.Second

// setView records shard's committed state at lsn, known current at at: a snapshot of the store
// as it is now. The caller holds the shard's lock and the store holds exactly lsn.
func (n *Node) setView(shard, lsn uint64, at time.Time) {
	v := &readView{snap: n.store.db.NewSnapshot(), lsn: lsn, at: at}
	n.mu.Lock()
	old := n.views[shard]
	n.views[shard] = v
	n.mu.Unlock()
	n.retireView(old)
}

// dropView forgets shard's view (its range or data changed other than by an entry: a split, a
// merge, a snapshot installed, the replica dropped).
func (n *Node) dropView(shard uint64) {
	n.mu.Lock()
	old := n.views[shard]
	delete(n.views, shard)
	n.mu.Unlock()
	n.retireView(old)
}

func (n *Node) retireView(v *readView) {
	if v == nil {
		return
	}
	n.mu.Lock()
	v.retired = true
	closeNow := v.refs == 0
	n.mu.Unlock()
	if closeNow {
		v.snap.Close()
	}
}

// closeViews retires every view (the store is about to close; no read is in flight).
func (n *Node) closeViews() {
	n.mu.Lock()
	views := n.views
	n.views = map[uint64]*readView{}
	n.mu.Unlock()
	for _, v := range views {
		n.retireView(v)
	}
}

// acquireView returns shard's view for a read (release it after), or nil.
func (n *Node) acquireView(shard uint64) *readView {
	n.mu.Lock()
	defer n.mu.Unlock()
	v := n.views[shard]
	if v != nil {
		v.refs++
	}
	return v
}

func (n *Node) releaseView(v *readView) {
	n.mu.Lock()
	v.refs--
	closeNow := v.retired && v.refs == 0
	n.mu.Unlock()
	if closeNow {
		v.snap.Close()
	}
}

// replicaGet serves a follower or stale read on a replica that is not the shard's primary.
// served is false when this node is the primary (the read is served as any other).
func (n *Node) replicaGet(ctx context.Context, req *pcspb.KVGetRequest) (resp *pcspb.KVGetResponse, err error, served bool) {
	sh, err := n.checkReplica(req.Header, req.Key)
	if err != nil {
		return nil, err, true
	}
	if sh.Primary == n.self() {
		return nil, nil, false
	}
	if !slices.Contains(sh.Replicas, n.self()) {
		// A learner, still catching up: it serves nothing.
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d: a learner here serves no reads", sh.Id),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}}), true
	}
	if req.Consistency == pcspb.ReadConsistency_READ_CONSISTENCY_STALE {
		if v := n.acquireView(sh.Id); v != nil {
			age := time.Since(v.at)
			if age <= time.Duration(req.MaxStalenessMs)*time.Millisecond {
				resp, err := n.readAt(v.snap, sh.Id, req.Key)
				n.releaseView(v)
				if err == nil {
					resp.StalenessMs = uint32(min(age.Milliseconds()+1, 1<<31))
					n.metrics.replicaReads.WithLabelValues("stale").Inc()
				}
				return resp, err, true
			}
			n.releaseView(v)
		}
	}
	resp, err = n.followerGet(ctx, sh, req)
	if err == nil {
		n.metrics.replicaReads.WithLabelValues("follower").Inc()
	}
	return resp, err, true
}

// followerGet reads the state at the primary's position (see the package doc above).
func (n *Node) followerGet(ctx context.Context, sh *pcspb.Shard, req *pcspb.KVGetRequest) (*pcspb.KVGetResponse, error) {
	for attempt := 0; attempt < 3; attempt++ {
		ri, sent, err := n.readIndex(ctx, sh, req.Header)
		if err != nil {
			// The primary's refusal (no grant, a newer epoch) or silence: the client reads from
			// the primary instead, with fresh routes.
			return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d: the primary's position: %v", sh.Id, err),
				&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}})
		}
		if ri.Term != sh.Term {
			return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d: the primary is at term %d, this replica at %d", sh.Id, ri.Term, sh.Term),
				&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}})
		}
		if err := n.waitLSN(ctx, sh.Id, ri.Lsn); err != nil {
			return nil, err
		}
		resp, ok, err := n.readAtLSN(sh.Id, ri.Lsn, sent, req.Key)
		if err != nil || ok {
			return resp, err
		}
		// Another entry arrived meanwhile: ask again.
	}
	return nil, kvError(codes.Unavailable, fmt.Sprintf("kvnode: shard %d: this replica did not hold the primary's position in time", sh.Id), nil)
}

// readIndexRound is one ReadIndex call to a shard's primary, shared by the follower reads that
// arrived before it was sent.
type readIndexRound struct {
	done chan struct{}
	resp *pcspb.ShardReadIndexResponse
	sent time.Time
	err  error
}

// readIndexBatch collects a shard's follower reads into rounds: one call to the primary at a
// time, for every read that arrived before it was sent (each such read's state is at least
// the primary's position when the read arrived: linearizable).
type readIndexBatch struct {
	mu      sync.Mutex
	next    *readIndexRound // collecting, not sent yet
	running bool
}

// readIndex asks shard's primary for its position, in the next round of the shard's batch; sent
// is when that round's call was sent.
func (n *Node) readIndex(ctx context.Context, sh *pcspb.Shard, h *pcspb.KVHeader) (*pcspb.ShardReadIndexResponse, time.Time, error) {
	v, _ := n.readIndexes.LoadOrStore(sh.Id, &readIndexBatch{})
	b := v.(*readIndexBatch)
	b.mu.Lock()
	if b.next == nil {
		b.next = &readIndexRound{done: make(chan struct{})}
	}
	r := b.next
	if !b.running {
		b.running = true
		go n.readIndexRounds(b, sh.Primary, h)
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.resp, r.sent, r.err
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	}
}

// readIndexRounds sends a batch's rounds, one after another, until none is waiting.
func (n *Node) readIndexRounds(b *readIndexBatch, primary uint64, h *pcspb.KVHeader) {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		r.sent = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), n.replicateTimeout)
		kv, err := n.peer(ctx, primary)
		if err == nil {
			r.resp, err = kv.ReadIndex(ctx, &pcspb.ShardReadIndexRequest{Header: h})
		}
		cancel()
		r.err = err
		close(r.done)
	}
}

// waitLSN waits until this replica holds shard's entries up to lsn.
func (n *Node) waitLSN(ctx context.Context, shard, lsn uint64) error {
	deadline := time.Now().Add(ReplicaReadWait)
	for wait := 100 * time.Microsecond; n.store.LSN(shard) < lsn; wait = min(2*wait, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			return kvError(codes.Unavailable, fmt.Sprintf("kvnode: shard %d: this replica is behind its primary (at %d of %d)", shard, n.store.LSN(shard), lsn), nil)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil
}

// readAtLSN reads key from shard's state at lsn if this replica has it: its store, holding
// exactly lsn (then that state becomes its view, known current at at), or its view. ok is
// false if neither is at lsn.
func (n *Node) readAtLSN(shard, lsn uint64, at time.Time, key []byte) (resp *pcspb.KVGetResponse, ok bool, err error) {
	l := n.shardLock(shard)
	l.Lock()
	if n.store.LSN(shard) == lsn {
		defer l.Unlock()
		v, found, err := n.store.Get(shard, key)
		if err != nil {
			return nil, false, kvError(codes.Internal, err.Error(), nil)
		}
		n.mu.Lock()
		cur := n.views[shard]
		stale := cur == nil || cur.lsn < lsn || cur.at.Before(at)
		n.mu.Unlock()
		if stale {
			n.setView(shard, lsn, at)
		}
		return &pcspb.KVGetResponse{Value: v, Found: found}, true, nil
	}
	l.Unlock()
	v := n.acquireView(shard)
	if v == nil {
		return nil, false, nil
	}
	defer n.releaseView(v)
	if v.lsn != lsn {
		return nil, false, nil
	}
	resp, err = n.readAt(v.snap, shard, key)
	return resp, err == nil, err
}

// readAt reads a key of shard from a snapshot.
func (n *Node) readAt(snap *pebble.Snapshot, shard uint64, key []byte) (*pcspb.KVGetResponse, error) {
	val, closer, err := snap.Get(append(dataPrefix(shard), key...))
	if errors.Is(err, pebble.ErrNotFound) {
		return &pcspb.KVGetResponse{}, nil
	}
	if err != nil {
		return nil, kvError(codes.Internal, err.Error(), nil)
	}
	defer closer.Close()
	return &pcspb.KVGetResponse{Value: bytes.Clone(val), Found: true}, nil
}

// ReadIndex answers a replica's follower read: this primary's position, once every replica of
// the configuration holds it (under the shard's lock, as for a read here).
func (n *Node) ReadIndex(ctx context.Context, req *pcspb.ShardReadIndexRequest) (*pcspb.ShardReadIndexResponse, error) {
	var resp *pcspb.ShardReadIndexResponse
	err := n.serve(ctx, req.Header, nil, func(sh *pcspb.Shard) error {
		resp = &pcspb.ShardReadIndexResponse{Lsn: n.store.LSN(sh.Id), Term: sh.Term}
		return nil
	})
	return resp, err
}
