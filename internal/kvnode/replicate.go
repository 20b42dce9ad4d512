package kvnode

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

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

// control is a log entry that changes the shard itself rather than its rows: a split (the new
// half) or a merge (the neighbour absorbed).
type control struct {
	split *pcspb.Shard
	merge *pcspb.MergeEntry
}

// writeLocked gives a write (or a split or merge, if ctl says so) the shard's next log position,
// persists it locally and on every other replica of the configuration and every learner in
// line, in parallel, and returns once every replica has it. If a replica does not acknowledge,
// the outcome is unknown to the client (ABORTED: the write may be on some replicas) and the
// replicas are brought in line again before the shard's next request. A learner that does not
// acknowledge only falls out of line.
func (n *Node) writeLocked(ctx context.Context, sh *pcspb.Shard, puts []*pcspb.KVPair, deletes [][]byte, ctl *control, reqs []*pcspb.AppliedRequest) error {
	var split *pcspb.Shard
	var merge *pcspb.MergeEntry
	if ctl != nil {
		split, merge = ctl.split, ctl.merge
	}
	if ctl == nil && len(sh.Replicas) < int(sh.MinInSyncOrOne()) {
		// Too few replicas to acknowledge: written nowhere, refused (retryable) until PCS has
		// added replicas.
		n.metrics.notEnoughReplicas.Inc()
		return notEnoughReplicas(sh, fmt.Errorf("the configuration has %d", len(sh.Replicas)))
	}
	start := time.Now()
	lsn := n.store.LSN(sh.Id) + 1
	ctx, span := n.tracer().Start(ctx, "kvnode.entry", trace.WithAttributes(attribute.Int64("shard", int64(sh.Id)), attribute.Int64("lsn", int64(lsn)),
		attribute.Int("puts", len(puts)), attribute.Int("deletes", len(deletes)), attribute.Int("replicas", len(sh.Replicas))))
	defer span.End()
	for _, r := range reqs {
		r.At = lsn // records are stamped with a log position, never a clock
	}
	var expired []*pcspb.AppliedRequest
	if ctl == nil {
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
		_, span := n.tracer().Start(ctx, "kvnode.store.write")
		defer span.End()
		switch {
		case split != nil:
			left := proto.Clone(sh).(*pcspb.Shard)
			left.End, left.Epoch = split.Start, proto.Clone(split.Epoch).(*pcspb.ShardEpoch)
			localErr = n.store.Split(left, split, Position{lsn, sh.Term})
		case merge != nil:
			localErr = n.store.Merge(merge.Survivor, merge.SourceId, Position{lsn, sh.Term}, Position{merge.SourceLsn, merge.SourceTerm})
		default:
			localErr = n.store.Write(sh.Id, Position{lsn, sh.Term}, puts, deletes, reqs, expired)
		}
		if localErr != nil {
			localErr = status.Error(codes.Internal, localErr.Error())
		}
		results <- result{node: n.self(), err: localErr}
	}()
	req := &pcspb.ReplicateRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn, Puts: puts, Deletes: deletes, Primary: n.self(), Split: split,
		Merge: merge, Requests: reqs, Expired: expired}
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

// follow checks a message from a shard's primary against this replica and returns the replica's
// metadata with the primary's term and identity adopted. A primary of a lower term than the
// replica has seen is refused (fencing). The caller holds the shard's lock.
func (n *Node) follow(id, term, primary uint64) (*pcspb.Shard, error) {
	sh, ok := n.store.Replica(id)
	if !ok {
		n.grants.Kick() // as in check: a new shard's replica may be waiting for its command
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
	if req.Split != nil || req.Merge != nil {
		n.dropView(sh.Id) // the range changes: a view of the old one would serve keys it lost
	} else if cur > 0 {
		// The primary sends an entry only once the one before is on every replica: the state
		// here now is committed.
		n.setView(sh.Id, cur, time.Now())
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
	if m := req.Merge; m != nil {
		if m.Survivor.GetId() != sh.Id {
			return nil, status.Errorf(codes.InvalidArgument, "kvnode: a merge entry of shard %d names survivor %d", sh.Id, m.Survivor.GetId())
		}
		if err := n.recordFollowed(sh); err != nil {
			return nil, err
		}
		// The neighbour's lock: no write of it is in flight here (its primary holds its own).
		rl := n.shardLock(m.SourceId)
		rl.Lock()
		defer rl.Unlock()
		if err := n.store.Merge(m.Survivor, m.SourceId, Position{req.Lsn, req.Term}, Position{m.SourceLsn, m.SourceTerm}); err != nil {
			// This replica lacks some of the neighbour's acknowledged writes, or holds more than
			// the primary: it fails the entry as for any write, and the primary has it taken out
			// of the configuration (then brought back by repair).
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		n.forgetReplica(m.SourceId)
		return &pcspb.ReplicateResponse{Lsn: req.Lsn}, nil
	}
	if err := n.recordFollowed(sh); err != nil {
		return nil, err
	}
	if err := n.store.Write(sh.Id, Position{req.Lsn, req.Term}, req.Puts, req.Deletes, req.Requests, req.Expired); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	n.load.add(sh.Id, access{writes: len(req.Puts) + len(req.Deletes), writeBytes: pairBytes(req.Puts, req.Deletes)})
	return &pcspb.ReplicateResponse{Lsn: req.Lsn}, nil
}
