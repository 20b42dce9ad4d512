package kvnode

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"slices"
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
	// MaxEntryBytes bounds the keys and values of one log entry (a write, or a group of
	// writes committed together), well below MaxMessageBytes so that a Replicate message,
	// with its request records, is always one a replica accepts. A single write larger than
	// this is refused; it is never split across entries.
	MaxEntryBytes = 8 << 20
	// MaxMessageBytes is the largest gRPC message a data node receives.
	MaxMessageBytes = 16 << 20
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

// Node serves a store: the gRPC KV service and the nodeagent.Handler.
type Node struct {
	pcspb.UnimplementedKVServer
	store *Store
	log   *slog.Logger
	// self is this node's id (0 until registered); grants are PCS's grants to serve shards as
	// primary.
	self   func() uint64
	grants Grants

	// peer returns the KV client of another data node, for replication.
	peer Peer
	// pcs (nil: none) is asked for a shard's metadata when a request is routed with a newer
	// epoch than this replica has heard of — a new primary learns of its promotion from the
	// first client that was told, rather than from its next heartbeat — and, by a primary, to
	// remove replicas that do not persist its writes.
	pcs      Manager
	fetching sync.Map // shard id -> chan struct{} closed when the fetch in flight ends
	queues   sync.Map // shard id -> *writeQueue

	metrics *metrics
	load    *shardLoad
	// replicateTimeout is ReplicateTimeout unless the node's Config says otherwise.
	replicateTimeout time.Duration

	mu      sync.Mutex
	schemas map[uint64]uint64
	locks   map[uint64]*sync.Mutex // per shard: orders its requests as primary, and its log on a replica
	repl    map[uint64]*replState  // per shard this node is primary of
	gcAt    map[uint64]time.Time   // per shard: when its expired request records were last looked for
}

// replState is what a primary knows of its shard's other replicas and learners.
type replState struct {
	// term and confVer: the state holds only for this term and configuration. A node taken out
	// of the configuration misses the writes made without it, and may come back as a learner
	// with what it had: whether it is in line must be found out again (its Position asked),
	// never carried over — a stale "in line" once had PCS promote a learner that lacked
	// acknowledged writes and hand it the shard's primary role.
	term, confVer uint64
	// inSync: the node has every position this primary has written, at this term and
	// configuration.
	inSync map[uint64]bool
	// retryAt: a learner whose catch-up failed is tried again from then.
	retryAt map[uint64]time.Time
}

// Grants is what a node knows of PCS's grants (nodeagent.Agent implements it). A node serves
// shard S as primary at term T only while Granted(S, T): PCS grants it only to the node its
// catalog names S's primary at T, once no earlier primary of S may hold a grant (see the
// package doc).
type Grants interface {
	// Granted reports whether this node may serve shard as primary at term now.
	Granted(shard, term uint64) bool
	// LeaseValid reports whether PCS counts this node alive (metrics only).
	LeaseValid() bool
	// Kick asks for a heartbeat now: a new primary need not wait a whole interval for its
	// grant.
	Kick()
}

// NewNode serves store. self and grants come from the node's agent; peer reaches the other
// data nodes. log may be nil.
func NewNode(store *Store, self func() uint64, grants Grants, peer Peer, log *slog.Logger) *Node {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{store: store, log: log, self: self, grants: grants, peer: peer, schemas: map[uint64]uint64{},
		locks: map[uint64]*sync.Mutex{}, repl: map[uint64]*replState{}, load: newShardLoad(time.Now), replicateTimeout: ReplicateTimeout}
	n.metrics = newMetrics(n)
	return n
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

// Timeouts of replication.
const (
	// ReplicateTimeout bounds how long a primary waits for a replica to persist a write.
	ReplicateTimeout = 2 * time.Second
	// UnreachableAfter is how long a primary goes on trying to reach a replica that does not
	// answer at all before it has PCS take the replica out (less than the node lease and
	// margin after which PCS would take out a silent node itself).
	UnreachableAfter = time.Second
	// SnapshotTimeout bounds sending a replica the shard's whole data.
	SnapshotTimeout = 30 * time.Second
	// LearnerRetry is how long a primary waits before it tries again to catch up a learner
	// that failed.
	LearnerRetry = time.Second
)

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
	return &pcspb.AppliedRequest{ClientId: id.ClientId, Seq: id.Seq, AckedBelow: id.AckedBelow}, nil
}

// expiredRequests returns, about once a minute per shard, up to 1000 request records of the
// shard older than RequestWindow, for the next entry to delete. The caller holds the shard's
// lock.
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
	exp, err := n.store.ExpiredRequests(shard, uint64(now.UnixMilli())-RequestWindow, 1000)
	if err != nil {
		n.log.Warn("looking for expired request records", "shard", shard, "err", err)
		return nil
	}
	return exp
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
			inGroup[id] = true
			w.req.AtMs = uint64(time.Now().UnixMilli())
			reqs = append(reqs, w.req)
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

// state returns the shard's replication state at sh's term and configuration (fresh when
// either changed).
func (n *Node) state(sh *pcspb.Shard) *replState {
	rs := n.repl[sh.Id]
	if rs == nil || rs.term != sh.Term || rs.confVer != sh.Epoch.GetConfVer() {
		rs = &replState{term: sh.Term, confVer: sh.Epoch.GetConfVer(), inSync: map[uint64]bool{}, retryAt: map[uint64]time.Time{}}
		n.repl[sh.Id] = rs
	}
	return rs
}

func (n *Node) inSync(sh *pcspb.Shard, node uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state(sh).inSync[node]
}

func (n *Node) setInSync(sh *pcspb.Shard, node uint64, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rs := n.state(sh)
	rs.inSync[node] = ok
	if !ok {
		rs.retryAt[node] = time.Now().Add(LearnerRetry)
	}
}

// syncLocked brings every replica that is not known to be in line up to this primary. If
// remove is set, a replica that cannot be (see removable) is taken out of the configuration
// through PCS (PacificA) and syncLocked returns the new configuration; otherwise, or if that
// cannot be done either, it fails. Learners are caught up too, but one that fails does not
// hold up the shard: it is tried again after LearnerRetry.
func (n *Node) syncLocked(ctx context.Context, sh *pcspb.Shard, remove bool) (*pcspb.Shard, error) {
	lsn := n.store.LSN(sh.Id)
	var failed []uint64
	var first error
	for _, r := range sh.Replicas {
		if r == n.self() || n.inSync(sh, r) {
			continue
		}
		if err := n.snapshotTo(ctx, r, sh, lsn, true); err != nil {
			n.setInSync(sh, r, false)
			if !remove || !removable(err) {
				return nil, fmt.Errorf("replica on node %d: %w", r, err)
			}
			failed = append(failed, r)
			first = cmp.Or(first, fmt.Errorf("replica on node %d: %w", r, err))
			continue
		}
		n.setInSync(sh, r, true)
	}
	if len(failed) > 0 {
		cur, err := n.dropReplicas(ctx, sh, failed)
		if err != nil {
			return nil, fmt.Errorf("%w; removing it: %w", first, err)
		}
		sh = cur
	}
	for _, l := range sh.Learners {
		n.mu.Lock()
		rs := n.state(sh)
		skip := rs.inSync[l] || time.Now().Before(rs.retryAt[l])
		n.mu.Unlock()
		if skip {
			continue
		}
		if err := n.snapshotTo(ctx, l, sh, lsn, false); err != nil {
			n.log.Warn("catching up a learner", "shard", sh.Id, "learner", l, "err", err)
			n.setInSync(sh, l, false)
			continue
		}
		n.log.Info("learner caught up from a snapshot", "shard", sh.Id, "learner", l, "lsn", lsn)
		n.setInSync(sh, l, true)
	}
	return sh, nil
}

// dropReplicas asks PCS to take replicas that did not persist this primary's writes out of the
// shard's configuration, and adopts the new configuration. The caller holds the shard's lock.
func (n *Node) dropReplicas(ctx context.Context, sh *pcspb.Shard, nodes []uint64) (*pcspb.Shard, error) {
	if n.pcs == nil {
		return nil, errors.New("kvnode: no PCS to ask")
	}
	rctx, cancel := context.WithTimeout(ctx, n.replicateTimeout)
	defer cancel()
	nsh, err := n.pcs.RemoveReplicas(rctx, &pcspb.RemoveReplicasRequest{ShardId: sh.Id, Primary: n.self(), Term: sh.Term,
		ConfVer: sh.Epoch.GetConfVer(), Nodes: nodes})
	if errors.Is(err, client.ErrStaleEpoch) {
		// The configuration changed meanwhile (PCS may have removed a lost node itself): what
		// counts is whether the current one, of the same term and primary, holds only replicas
		// that have what this primary has.
		cur, ferr := n.pcs.Shard(rctx, sh.Id)
		if ferr != nil {
			return nil, fmt.Errorf("%w; reading the shard: %w", err, ferr)
		}
		for _, r := range cur.Replicas {
			if !slices.Contains(sh.Replicas, r) || slices.Contains(nodes, r) {
				return nil, fmt.Errorf("%w; the configuration is now %v", err, cur.Replicas)
			}
		}
		if cur.Term != sh.Term || cur.Primary != n.self() {
			return nil, fmt.Errorf("%w; the shard is at term %d with primary %d", err, cur.Term, cur.Primary)
		}
		nsh, err = cur, nil
	}
	if err != nil {
		return nil, err
	}
	if err := n.adoptLocked(nsh); err != nil {
		return nil, err
	}
	cur, ok := n.store.Replica(sh.Id)
	if !ok || cur.Primary != n.self() || cur.Term != sh.Term {
		return nil, fmt.Errorf("kvnode: shard %d is no longer led by this node at term %d", sh.Id, sh.Term)
	}
	n.metrics.replicasRemoved.Add(float64(len(nodes)))
	n.log.Warn("replicas that did not persist a write removed from the configuration", "shard", sh.Id, "nodes", nodes, "conf_ver", cur.Epoch.GetConfVer())
	return cur, nil
}

// CatchUp brings the replicas and learners of the shards this node leads in line, without
// waiting for a client request to do it (a learner must catch up on an idle shard too).
func (n *Node) CatchUp(ctx context.Context) {
	for _, id := range n.store.Held() {
		sh, ok := n.store.Replica(id)
		if !ok || sh.Primary != n.self() || !n.grants.Granted(sh.Id, sh.Term) || !n.laggards(sh) {
			continue
		}
		if err := n.catchUp(ctx, sh); err != nil {
			n.log.Debug("catching up replicas", "shard", id, "err", err)
		}
	}
}

// catchUp syncs a shard's replicas and learners without a client request: a replica that
// cannot be brought in line is not removed (no write is waiting on it).
func (n *Node) catchUp(ctx context.Context, sh *pcspb.Shard) error {
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	cur, err := n.check(&pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch})
	if err != nil {
		return err
	}
	_, err = n.syncLocked(ctx, cur, false)
	return err
}

// laggards reports whether a replica or learner of sh is not known to be in line, and is due
// a try.
func (n *Node) laggards(sh *pcspb.Shard) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	rs := n.state(sh)
	for _, r := range slices.Concat(sh.Replicas, sh.Learners) {
		if r != n.self() && !rs.inSync[r] && !time.Now().Before(rs.retryAt[r]) {
			return true
		}
	}
	return false
}

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

// retryTransport retries f, a request to another node, while it fails without an answer from
// the node (unreachable, restarting, connection being re-established), for UnreachableAfter
// or until ctx ends: a blip must not take a replica out of the configuration. Requests to
// replicas are idempotent.
func retryTransport(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, UnreachableAfter)
	defer cancel()
	wait := 20 * time.Millisecond
	for {
		err := f()
		if err == nil || client.KVErrorOf(err) != nil || ctx.Err() != nil {
			return err
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.Unknown {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// removable reports whether a replica's failure to persist is a reason to take it out of the
// configuration: not if it has seen a newer term (this primary is deposed), nor if it does
// not hold the shard yet (being created; PCS has it created).
func removable(err error) bool {
	ke := client.KVErrorOf(err)
	return err != nil && ke.GetStaleTerm() == 0 && ke.GetShardNotFound() == 0
}

// writeLocked gives a write (or a split, if split is set) the shard's next log position,
// persists it locally and on every other replica of the configuration and every learner in
// line, in parallel, and returns once every replica has it. If a replica does not acknowledge,
// the outcome is unknown to the client (ABORTED: the write may be on some replicas) and the
// replicas are brought in line again before the shard's next request. A learner that does not
// acknowledge only falls out of line.
func (n *Node) writeLocked(ctx context.Context, sh *pcspb.Shard, puts []*pcspb.KVPair, deletes [][]byte, split *pcspb.Shard, reqs []*pcspb.AppliedRequest) error {
	if split == nil && len(sh.Replicas) < int(sh.MinInSyncOrOne()) {
		// Too few replicas to acknowledge: written nowhere, refused (retryable) until PCS has
		// added replicas.
		n.metrics.notEnoughReplicas.Inc()
		return notEnoughReplicas(sh, fmt.Errorf("the configuration has %d", len(sh.Replicas)))
	}
	start := time.Now()
	lsn := n.store.LSN(sh.Id) + 1
	var expired []*pcspb.AppliedRequest
	if split == nil {
		expired = n.expiredRequests(sh.Id)
	}
	type result struct {
		node    uint64
		learner bool
		keep    bool // the failure is no reason to take the node out (see removable)
		err     error
	}
	results := make(chan result, 1+len(sh.Replicas)+len(sh.Learners))
	localDone := make(chan struct{}) // closed once the local write is durable (or failed)
	var localErr error
	go func() {
		defer close(localDone)
		if split != nil {
			left := proto.Clone(sh).(*pcspb.Shard)
			left.End, left.Epoch = split.Start, proto.Clone(split.Epoch).(*pcspb.ShardEpoch)
			localErr = n.store.Split(left, split, Position{lsn, sh.Term})
		} else {
			localErr = n.store.Write(sh.Id, Position{lsn, sh.Term}, puts, deletes, reqs, expired)
		}
		if localErr != nil {
			localErr = status.Error(codes.Internal, localErr.Error())
		}
		results <- result{node: n.self(), err: localErr}
	}()
	req := &pcspb.ReplicateRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Puts: puts, Deletes: deletes, Primary: n.self(), Split: split,
		Requests: reqs, Expired: expired}
	waiting := 1
	send := func(r uint64, learner bool) {
		waiting++
		go func() {
			rctx, cancel := context.WithTimeout(ctx, n.replicateTimeout)
			defer cancel()
			err := retryTransport(rctx, func() error {
				kv, err := n.peer(rctx, r)
				if err != nil {
					return err
				}
				_, err = kv.Replicate(rctx, req)
				if ke := client.KVErrorOf(err); ke != nil && isGap(ke) {
					<-localDone // the snapshot must include this write
					if err = localErr; err == nil {
						sctx, cancel := context.WithTimeout(ctx, SnapshotTimeout)
						err = n.sendSnapshot(sctx, kv, sh, lsn)
						cancel()
					}
				}
				return err
			})
			keep := !removable(err)
			if err != nil {
				err = status.Errorf(codes.Unavailable, "kvnode: node %d did not persist shard %d position %d: %v", r, sh.Id, lsn, err)
			}
			results <- result{node: r, learner: learner, keep: keep, err: err}
		}()
	}
	for _, r := range sh.Replicas {
		if r != n.self() {
			send(r, false)
		}
	}
	for _, l := range sh.Learners {
		if n.inSync(sh, l) {
			send(l, true)
		}
	}
	var first error
	var failed []uint64 // replicas that did not persist the write
	keep := false
	for i := 0; i < waiting; i++ {
		r := <-results
		switch {
		case r.err == nil:
		case r.learner:
			n.log.Warn("learner fell behind", "shard", sh.Id, "learner", r.node, "err", r.err)
			n.setInSync(sh, r.node, false)
		default:
			first = cmp.Or(first, r.err)
			failed = append(failed, r.node)
			keep = keep || r.keep
		}
	}
	if first != nil && localErr == nil && !keep {
		// Every replica but the failed ones has the write: once PCS has taken those out of the
		// configuration, every replica of the configuration has it, and it is acknowledged.
		for _, r := range failed {
			n.setInSync(sh, r, false)
		}
		if _, err := n.dropReplicas(ctx, sh, failed); errors.Is(err, client.ErrNotEnoughReplicas) {
			// PCS keeps the replicas: the write is on fewer than min_in_sync of them.
			n.mu.Lock()
			delete(n.repl, sh.Id)
			n.mu.Unlock()
			n.metrics.notEnoughReplicas.Inc()
			return notEnoughReplicas(sh, first)
		} else if err != nil {
			first = fmt.Errorf("%w; removing the replica: %w", first, err)
		} else if !n.grants.Granted(sh.Id, sh.Term) {
			first = fmt.Errorf("%w; no grant to serve the shard at term %d", first, sh.Term)
		} else {
			first = nil
		}
	}
	if first != nil {
		// Some replica may hold a position another lacks: bring every one in line again.
		n.mu.Lock()
		delete(n.repl, sh.Id)
		n.mu.Unlock()
		return status.Errorf(codes.Aborted, "kvnode: write to shard %d at position %d has an unknown outcome: %v", sh.Id, lsn, first)
	}
	n.metrics.entrySeconds.Observe(time.Since(start).Seconds())
	return nil
}

func isGap(ke *pcspb.KVError) bool {
	_, ok := ke.GetErr().(*pcspb.KVError_LogGap)
	return ok
}

// sendSnapshot brings a replica that missed positions up to this primary: the shard's whole
// data, range and epoch version at position lsn. The caller holds the shard's lock and has
// written lsn locally.
func (n *Node) sendSnapshot(ctx context.Context, kv pcspb.KVClient, sh *pcspb.Shard, lsn uint64) error {
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

// follow checks a message from a shard's primary against this replica and returns the replica's
// metadata with the primary's term and identity adopted. A primary of a lower term than the
// replica has seen is refused (fencing). The caller holds the shard's lock.
func (n *Node) follow(id, term, primary uint64) (*pcspb.Shard, error) {
	sh, ok := n.store.Replica(id)
	if !ok {
		return nil, kvError(codes.NotFound, fmt.Sprintf("kvnode: no replica of shard %d here", id),
			&pcspb.KVError{Err: &pcspb.KVError_ShardNotFound{ShardNotFound: id}})
	}
	if term < sh.Term {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d is at term %d; refusing a primary of term %d", sh.Id, sh.Term, term),
			&pcspb.KVError{Err: &pcspb.KVError_StaleTerm{StaleTerm: sh.Term}})
	}
	if term > sh.Term || (primary != 0 && primary != sh.Primary) {
		nsh := proto.Clone(sh).(*pcspb.Shard)
		nsh.Term = term
		if primary != 0 {
			nsh.Primary = primary
		}
		return nsh, nil
	}
	return sh, nil
}

// recordFollowed persists the metadata follow returned if it adopted a new term or primary, so
// that the fencing survives a restart. The caller holds the shard's lock.
func (n *Node) recordFollowed(sh *pcspb.Shard) error {
	if stored, _ := n.store.Replica(sh.Id); stored != sh {
		if err := n.store.PutReplica(sh); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	}
	return nil
}

// InstallSnapshot replaces this replica's data with the primary's, at the primary's position,
// and adopts the primary's term, range and epoch version: the chunks are gathered in a batch
// and applied at once when the primary closes the stream. The shard's lock is held only to
// check the primary at the start and to check it again and commit at the end, never while
// chunks cross the network; the whole stream has SnapshotTimeout.
func (n *Node) InstallSnapshot(stream pcspb.KV_InstallSnapshotServer) error {
	ctx, cancel := context.WithTimeout(stream.Context(), SnapshotTimeout)
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

// Position tells the shard's primary where this replica's log ends, adopting the primary's
// term (fencing as for replication: a primary of a lower term is refused).
func (n *Node) Position(_ context.Context, req *pcspb.PositionRequest) (*pcspb.PositionResponse, error) {
	l := n.shardLock(req.ShardId)
	l.Lock()
	defer l.Unlock()
	sh, err := n.follow(req.ShardId, req.Term, req.Primary)
	if err != nil {
		return nil, err
	}
	if err := n.recordFollowed(sh); err != nil {
		return nil, err
	}
	pos := n.store.Position(sh.Id)
	return &pcspb.PositionResponse{Lsn: pos.LSN, LastTerm: pos.Term}, nil
}

// Replicate persists a write (or a split) from the shard's primary. It refuses a primary of a
// lower term than this replica has seen (fencing) and positions that would leave a gap; a
// position it already has is acknowledged again (the primary retried: a new primary always
// sends a snapshot first, so positions of one term never differ).
func (n *Node) Replicate(_ context.Context, req *pcspb.ReplicateRequest) (*pcspb.ReplicateResponse, error) {
	l := n.shardLock(req.ShardId)
	l.Lock()
	defer l.Unlock()
	sh, err := n.follow(req.ShardId, req.Term, req.Primary)
	if err != nil {
		return nil, err
	}
	cur := n.store.LSN(sh.Id)
	switch {
	case req.Lsn <= cur:
		return &pcspb.ReplicateResponse{Lsn: cur}, nil
	case req.Lsn != cur+1:
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d has position %d; %d leaves a gap", sh.Id, cur, req.Lsn),
			&pcspb.KVError{Err: &pcspb.KVError_LogGap{LogGap: cur}})
	}
	if req.Split != nil {
		if bytes.Compare(req.Split.Start, sh.Start) <= 0 || req.Split.Id == sh.Id {
			return nil, status.Errorf(codes.InvalidArgument, "kvnode: split of shard %d at %x is outside [%x, %x)", sh.Id, req.Split.Start, sh.Start, sh.End)
		}
		left := proto.Clone(sh).(*pcspb.Shard)
		left.End, left.Epoch = req.Split.Start, proto.Clone(req.Split.Epoch).(*pcspb.ShardEpoch)
		if err := n.store.Split(left, req.Split, Position{req.Lsn, req.Term}); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &pcspb.ReplicateResponse{Lsn: req.Lsn}, nil
	}
	if err := n.recordFollowed(sh); err != nil {
		return nil, err
	}
	if err := n.store.Write(sh.Id, Position{req.Lsn, req.Term}, req.Puts, req.Deletes, req.Requests, req.Expired); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	n.load.add(sh.Id, 0, len(req.Puts)+len(req.Deletes))
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
// node is the primary and holds PCS's grant to serve the shard at its term, and every key is
// inside the shard.
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
	if sh.Primary != n.self() {
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: not the primary of shard %d (primary is node %d)", sh.Id, sh.Primary),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{PrimaryNode: sh.Primary}}})
	}
	if !n.grants.Granted(sh.Id, sh.Term) {
		n.grants.Kick()
		return nil, kvError(codes.FailedPrecondition, fmt.Sprintf("kvnode: shard %d: no grant from PCS to serve it as primary at term %d (yet)", sh.Id, sh.Term),
			&pcspb.KVError{Err: &pcspb.KVError_NotPrimary{NotPrimary: &pcspb.NotPrimaryKV{}}})
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
	var resp *pcspb.KVGetResponse
	err := n.serve(ctx, req.Header, [][]byte{req.Key}, func(sh *pcspb.Shard) error {
		v, found, err := n.store.Get(sh.Id, req.Key)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		resp = &pcspb.KVGetResponse{Value: v, Found: found}
		n.load.add(sh.Id, 1, 0)
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
	n.load.add(req.Header.GetShardId(), 0, 1)
	return &pcspb.KVPutResponse{}, nil
}

func (n *Node) Delete(ctx context.Context, req *pcspb.KVDeleteRequest) (*pcspb.KVDeleteResponse, error) {
	if err := n.write(ctx, req.Header, [][]byte{req.Key}, nil, [][]byte{req.Key}); err != nil {
		return nil, err
	}
	n.load.add(req.Header.GetShardId(), 0, 1)
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
		n.load.add(sh.Id, max(len(pairs), 1), 0)
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
	n.load.add(req.Header.GetShardId(), 0, len(keys))
	return &pcspb.KVBatchResponse{}, nil
}

// ---- nodeagent.Handler ------------------------------------------------------------------------

// CreateReplica records a replica, or takes PCS's newer metadata for one it holds (keeping its
// data). A replica that split ahead of the catalog keeps its narrower range and newer version.
func (n *Node) CreateReplica(_ context.Context, sh *pcspb.Shard) error {
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	return n.adoptLocked(sh)
}

// adoptLocked creates a replica or takes newer metadata for it (keeping a newer range and
// version it has split to). The caller holds the shard's lock.
func (n *Node) adoptLocked(sh *pcspb.Shard) error {
	cur, ok := n.store.Replica(sh.Id)
	if ok && (sh.Term < cur.Term || (sh.Term == cur.Term && sh.Epoch.GetConfVer() < cur.Epoch.GetConfVer())) {
		// Metadata older than this replica's (a command that waited in a queue): a record
		// never goes back to an earlier term, where this node may have been primary.
		return nil
	}
	if ok && cur.Epoch.GetVersion() > sh.Epoch.GetVersion() {
		sh = proto.Clone(sh).(*pcspb.Shard)
		sh.Start, sh.End = cur.Start, cur.End
		sh.Epoch = &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: cur.Epoch.GetVersion()}
	}
	if ok && proto.Equal(cur, sh) {
		return nil
	}
	return n.store.PutReplica(sh)
}

// DropReplica deletes a replica and its data.
func (n *Node) DropReplica(_ context.Context, id uint64) error {
	l := n.shardLock(id)
	l.Lock()
	defer l.Unlock()
	if _, ok := n.store.Replica(id); !ok {
		return nil
	}
	n.mu.Lock()
	delete(n.repl, id)
	n.mu.Unlock()
	return n.store.DropReplica(id)
}

// rangeMiddle returns a key about halfway between start and end (end empty: unbounded), read
// as big-endian fractions, or nil if there is none strictly between them.
func rangeMiddle(start, end []byte) []byte {
	n := max(len(start), len(end)) + 1
	pad := func(b []byte) *big.Int {
		return new(big.Int).SetBytes(append(bytes.Clone(b), make([]byte, n-len(b))...))
	}
	lo, hi := pad(start), new(big.Int).Lsh(big.NewInt(1), uint(8*n))
	if len(end) > 0 {
		hi = pad(end)
	}
	inside := func(k []byte) bool {
		return bytes.Compare(k, start) > 0 && (len(end) == 0 || bytes.Compare(k, end) < 0)
	}
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1).FillBytes(make([]byte, n))
	for len(mid) > 1 && mid[len(mid)-1] == 0 && inside(mid[:len(mid)-1]) {
		mid = mid[:len(mid)-1]
	}
	if inside(mid) {
		return mid
	}
	// The bounds differ only in trailing zero bytes: the smallest key after start.
	if next := append(bytes.Clone(start), 0); inside(next) {
		return next
	}
	return nil
}

// ErrCannotSplit: a split was asked of a shard that cannot make it (too few keys, a key outside
// the shard, the new id in use).
var ErrCannotSplit = errors.New("kvnode: cannot split")

// SplitShard splits a shard this node is primary of, as an entry of the shard's log so that
// every replica splits at the same position; PCS learns of it from the next heartbeat. A
// command for another version of the shard, or a shard this node does not lead, is ignored
// (the command is stale). An empty key splits the data into halves of about equal size.
func (n *Node) SplitShard(ctx context.Context, c *pcspb.SplitShardCommand) error {
	sh, ok := n.store.Replica(c.ShardId)
	if !ok || sh.Primary != n.self() || sh.Epoch.GetVersion() != c.Version {
		return nil
	}
	h := &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}
	return n.serve(ctx, h, nil, func(sh *pcspb.Shard) error {
		key := c.SplitKey
		if len(key) == 0 {
			var err error
			if _, key, err = n.store.SplitPoint(sh.Id); err != nil {
				return err
			}
			if key == nil {
				// Fewer than two keys (an empty table being pre-split): the middle of the range.
				if key = rangeMiddle(sh.Start, sh.End); key == nil {
					return fmt.Errorf("%w: shard %d has fewer than two keys and no key between its bounds", ErrCannotSplit, sh.Id)
				}
			}
		}
		if bytes.Compare(key, sh.Start) <= 0 || (len(sh.End) > 0 && bytes.Compare(key, sh.End) >= 0) {
			return fmt.Errorf("%w: key %x is not strictly inside shard %d [%x, %x)", ErrCannotSplit, key, sh.Id, sh.Start, sh.End)
		}
		if _, exists := n.store.Replica(c.NewShardId); exists || c.NewShardId == 0 {
			return fmt.Errorf("%w: shard id %d is in use", ErrCannotSplit, c.NewShardId)
		}
		right := &pcspb.Shard{Id: c.NewShardId, TableId: sh.TableId, Start: bytes.Clone(key), End: sh.End,
			Epoch: &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: sh.Epoch.GetVersion() + 1},
			Term:  sh.Term, Primary: sh.Primary, Replicas: sh.Replicas, Learners: sh.Learners, Partition: sh.Partition}
		rl := n.shardLock(right.Id)
		rl.Lock()
		defer rl.Unlock()
		if err := n.writeLocked(ctx, sh, nil, nil, right, nil); err != nil {
			return err
		}
		// Every replica in line with the parent has the new shard's first position.
		n.mu.Lock()
		prs, nrs := n.state(sh), n.state(right)
		for k, v := range prs.inSync {
			nrs.inSync[k] = v
		}
		n.mu.Unlock()
		n.metrics.splits.Inc()
		n.log.Info("shard split", "shard", sh.Id, "new_shard", right.Id, "key", fmt.Sprintf("%x", key), "version", right.Epoch.Version)
		return nil
	})
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
	ns := &pcspb.NodeStats{ShardCount: uint64(len(held)), SchemaVersions: map[uint64]uint64{}, DiskFree: n.store.DiskFree()}
	n.mu.Lock()
	for k, v := range n.schemas {
		ns.SchemaVersions[k] = v
	}
	n.mu.Unlock()
	var ss []*pcspb.ShardStats
	for _, id := range held {
		size := n.store.Size(id)
		ns.BytesUsed += size
		lsn := n.store.LSN(id)
		st := &pcspb.ShardStats{ShardId: id, SizeBytes: size, ReplicaPositions: map[uint64]uint64{n.self(): lsn}, SplitFrom: n.store.Parent(id)}
		st.ReadPerSec, st.WritePerSec = n.load.rate(id)
		if sh, ok := n.store.Replica(id); ok {
			st.Term, st.ConfVer, st.Version, st.Start, st.End = sh.Term, sh.Epoch.GetConfVer(), sh.Epoch.GetVersion(), sh.Start, sh.End
			st.Primary = sh.Primary == n.self()
			if sh.Primary == n.self() {
				// The replicas and learners in line have every position this primary has.
				n.mu.Lock()
				if rs := n.repl[id]; rs != nil && rs.term == sh.Term && rs.confVer == sh.Epoch.GetConfVer() {
					for r, ok := range rs.inSync {
						if ok {
							st.ReplicaPositions[r] = lsn
						}
					}
				}
				n.mu.Unlock()
			}
		}
		ss = append(ss, st)
	}
	return ns, ss
}
