package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/placement"
)

// splitRequests are the splits PCS asked of shard primaries and has not seen recorded yet
// (in memory on the primary PCS: a caller waiting on SplitShard on a PCS that loses office
// gets an error and asks again). The DDL loop hands each to its shard's primary node.
type splitRequests struct {
	mu  sync.Mutex
	req map[uint64]*pcspb.SplitShardCommand // by shard id
}

func (r *splitRequests) put(c *pcspb.SplitShardCommand) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		r.req = map[uint64]*pcspb.SplitShardCommand{}
	}
	r.req[c.ShardId] = c
}

func (r *splitRequests) remove(c *pcspb.SplitShardCommand) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req[c.ShardId] == c {
		delete(r.req, c.ShardId)
	}
}

func (r *splitRequests) all() []*pcspb.SplitShardCommand {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pcspb.SplitShardCommand, 0, len(r.req))
	for _, c := range r.req {
		out = append(out, c)
	}
	return out
}

// waitShard polls the catalog until cond holds for the shard or ctx ends.
func (s *Server) waitShard(ctx context.Context, id uint64, what string, cond func(*pcspb.Shard) bool) (*pcspb.Shard, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		sh, _, err := s.fsm.ShardByID(id)
		if err != nil {
			return nil, err
		}
		if cond(sh) {
			return sh, nil
		}
		if !s.isPrimary() {
			return nil, fmt.Errorf("%w: lost office while waiting for %s of shard %d", ErrOutcomeUnknown, what, id)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s of shard %d: %w", what, id, ctx.Err())
		case <-t.C:
		}
	}
}

func (v *service) SplitShard(ctx context.Context, req *pcspb.SplitShardRequest) (*pcspb.SplitShardResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.SplitShard(ctx, req)
	}
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(req.SplitKey) > 0 && (bytes.Compare(req.SplitKey, sh.Start) <= 0 || (len(sh.End) > 0 && bytes.Compare(req.SplitKey, sh.End) >= 0)) {
		return nil, toStatus(fmt.Errorf("%w: split key %x is not strictly inside shard %d [%x, %x)", ErrInvalid, req.SplitKey, sh.Id, sh.Start, sh.End))
	}
	id, err := s.allocIDs(ctx, "shard", 1)
	if err != nil {
		return nil, toStatus(err)
	}
	c := &pcspb.SplitShardCommand{ShardId: sh.Id, Version: sh.Epoch.GetVersion(), SplitKey: req.SplitKey, NewShardId: id}
	s.splits.put(c)
	defer s.splits.remove(c)
	left, err := s.waitShard(ctx, sh.Id, "the split", func(cur *pcspb.Shard) bool { return cur.Epoch.GetVersion() > c.Version })
	if err != nil {
		return nil, toStatus(err)
	}
	right, _, err := s.fsm.ShardByID(id)
	if err != nil {
		// The shard moved on by another split (a node asked for one at the same time).
		return nil, toStatus(fmt.Errorf("%w: shard %d was split by another request", meta.ErrStaleEpoch, sh.Id))
	}
	s.log.Info("shard split", "shard", left.Id, "new_shard", right.Id, "version", left.Epoch.GetVersion())
	return &pcspb.SplitShardResponse{Left: left, Right: right}, nil
}

func (v *service) AskSplit(ctx context.Context, req *pcspb.AskSplitRequest) (*pcspb.AskSplitResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.AskSplit(ctx, req)
	}
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	if sh.Epoch.GetVersion() != req.Epoch.GetVersion() {
		return nil, toStatus(fmt.Errorf("%w: shard %d is at version %d, asked at %d", meta.ErrStaleEpoch, sh.Id, sh.Epoch.GetVersion(), req.Epoch.GetVersion()))
	}
	id, err := s.allocIDs(ctx, "shard", 1)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.AskSplitResponse{NewShardId: id}, nil
}

// changeReplicas applies one configuration change decided on sh.
func (s *Server) changeReplicas(ctx context.Context, sh *pcspb.Shard, set func(*pcspb.CmdChangeReplicas)) error {
	c := &pcspb.CmdChangeReplicas{ShardId: sh.Id, Term: sh.Term, ConfVer: sh.Epoch.GetConfVer()}
	set(c)
	_, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_ChangeReplicas{ChangeReplicas: c}})
	if err == nil {
		s.log.Info("shard configuration changed", "shard", sh.Id, "change", c.String())
	}
	return err
}

// MoveShard moves a replica from one node to another: a learner on the target, caught up from
// a snapshot and then the log and promoted by the DDL loop; the primary role handed over if it
// was on the source; the source removed. Each step is decided on the current metadata, so the
// call can be repeated after an interruption and goes on from where the shard is.
func (v *service) MoveShard(ctx context.Context, req *pcspb.MoveShardRequest) (*pcspb.MoveShardResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.MoveShard(ctx, req)
	}
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	from, to := req.FromNode, req.ToNode
	if from == to || from == 0 || to == 0 {
		return nil, toStatus(fmt.Errorf("%w: move needs two different nodes", ErrInvalid))
	}
	for _, n := range []uint64{from, to} {
		if _, err := s.dataNode(n); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := s.checkMove(sh, from, to); err != nil {
		return nil, toStatus(err)
	}
	for {
		sh, _, err = s.fsm.ShardByID(req.ShardId)
		if err != nil {
			return nil, toStatus(err)
		}
		var step error
		switch {
		case !slices.Contains(sh.Replicas, to) && !slices.Contains(sh.Learners, to):
			step = s.changeReplicas(ctx, sh, func(c *pcspb.CmdChangeReplicas) { c.AddLearner = to })
		case slices.Contains(sh.Learners, to):
			_, step = s.waitShard(ctx, sh.Id, "the new replica to catch up", func(cur *pcspb.Shard) bool {
				return !slices.Contains(cur.Learners, to) || cur.Epoch.GetConfVer() != sh.Epoch.GetConfVer()
			})
		case sh.Primary == from:
			step = s.handOver(ctx, sh, to)
		case slices.Contains(sh.Replicas, from) || slices.Contains(sh.Learners, from):
			step = s.changeReplicas(ctx, sh, func(c *pcspb.CmdChangeReplicas) { c.RemoveNode = from })
		default:
			s.log.Info("shard moved", "shard", sh.Id, "from", from, "to", to)
			return &pcspb.MoveShardResponse{Shard: sh}, nil
		}
		if step != nil && !errors.Is(step, meta.ErrStaleEpoch) {
			return nil, toStatus(step)
		}
	}
}

// checkMove refuses a move that would leave the shard in a wrong shape: from a node that holds
// no replica, or to a node that already holds one (which would leave one replica fewer). A move
// that was interrupted — the target added and the source still there, one replica more than
// the table asks for — is let through to go on; one that is done is answered as done.
func (s *Server) checkMove(sh *pcspb.Shard, from, to uint64) error {
	holds := func(n uint64) bool { return slices.Contains(sh.Replicas, n) || slices.Contains(sh.Learners, n) }
	want := 0
	for _, t := range s.fsm.Tables() {
		if t.Id == sh.TableId {
			want = int(t.Replicas)
		}
	}
	have := len(sh.Replicas) + len(sh.Learners)
	switch {
	case !holds(from) && slices.Contains(sh.Replicas, to):
		return nil // already moved: the loop answers with the shard
	case !holds(from):
		return fmt.Errorf("%w: node %d holds no replica of shard %d (replicas %v, learners %v)", ErrShardGuard, from, sh.Id, sh.Replicas, sh.Learners)
	case holds(to) && have <= want:
		return fmt.Errorf("%w: node %d already holds a replica of shard %d (replicas %v): the move would leave %d replicas, the table asks for %d",
			ErrShardGuard, to, sh.Id, sh.Replicas, have-1, want)
	}
	return nil
}

func (v *service) TransferPrimary(ctx context.Context, req *pcspb.TransferPrimaryRequest) (*pcspb.TransferPrimaryResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.TransferPrimary(ctx, req)
	}
	for {
		sh, _, err := s.fsm.ShardByID(req.ShardId)
		if err != nil {
			return nil, toStatus(err)
		}
		if sh.Primary == req.ToNode {
			return &pcspb.TransferPrimaryResponse{Shard: sh}, nil
		}
		if !slices.Contains(sh.Replicas, req.ToNode) {
			return nil, toStatus(fmt.Errorf("%w: node %d is not a replica of shard %d", ErrInvalid, req.ToNode, sh.Id))
		}
		if err := s.handOver(ctx, sh, req.ToNode); err != nil && !errors.Is(err, meta.ErrStaleEpoch) {
			return nil, toStatus(err)
		}
	}
}

// RemoveReplicas takes replicas that did not persist a write in time out of a shard's
// configuration at its primary's request (PacificA), one conf change each. Only the primary of
// the current term and configuration may ask, and only while PCS holds its lease as alive: a
// primary cut off from PCS must not be able to shrink the configuration it will be failed over
// from.
func (v *service) RemoveReplicas(ctx context.Context, req *pcspb.RemoveReplicasRequest) (*pcspb.RemoveReplicasResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.RemoveReplicas(ctx, req)
	}
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(req.Nodes) == 0 {
		return nil, toStatus(fmt.Errorf("%w: no node to remove from shard %d", ErrInvalid, sh.Id))
	}
	if sh.Primary != req.Primary || sh.Term != req.Term || sh.Epoch.GetConfVer() != req.ConfVer {
		return nil, toStatus(fmt.Errorf("%w: shard %d has primary %d at term %d, conf_ver %d; the request is of primary %d at term %d, conf_ver %d",
			meta.ErrStaleEpoch, sh.Id, sh.Primary, sh.Term, sh.Epoch.GetConfVer(), req.Primary, req.Term, req.ConfVer))
	}
	for _, n := range req.Nodes {
		if n == sh.Primary || !slices.Contains(sh.Replicas, n) {
			return nil, toStatus(fmt.Errorf("%w: node %d is not a replica of shard %d other than its primary", ErrInvalid, n, sh.Id))
		}
	}
	if !s.live.Heard(req.Primary) || s.live.Silent(req.Primary) >= s.cfg.NodeLease {
		return nil, toStatus(fmt.Errorf("%w: node %d, primary of shard %d", ErrLeaseExpired, req.Primary, sh.Id))
	}
	for _, n := range req.Nodes {
		if err := s.changeReplicas(ctx, sh, func(c *pcspb.CmdChangeReplicas) { c.RemoveNode = n }); err != nil {
			return nil, toStatus(err)
		}
		if sh, _, err = s.fsm.ShardByID(req.ShardId); err != nil {
			return nil, toStatus(err)
		}
	}
	s.log.Warn("replicas that did not persist a write removed at the primary's request", "shard", sh.Id, "nodes", req.Nodes, "conf_ver", sh.Epoch.GetConfVer())
	return &pcspb.RemoveReplicasResponse{Shard: sh}, nil
}

// handOver makes replica to the primary of sh once the current primary reports it in line —
// holding every position the primary has, in the current term and configuration — so that
// the new primary has every acknowledged write (from the report on, the primary acknowledges
// nothing that to has not persisted, since to is in its configuration).
func (s *Server) handOver(ctx context.Context, sh *pcspb.Shard, to uint64) error {
	inLine := func(cur *pcspb.Shard) bool {
		if cur.Term != sh.Term || cur.Epoch.GetConfVer() != sh.Epoch.GetConfVer() {
			return true // changed meanwhile: the caller decides again
		}
		st := s.live.ShardStats(cur.Primary, cur.Id)
		if st == nil || st.Term != cur.Term || st.ConfVer != cur.Epoch.GetConfVer() {
			return false
		}
		own, ok := st.ReplicaPositions[cur.Primary]
		pos, ok2 := st.ReplicaPositions[to]
		return ok && ok2 && pos == own
	}
	cur, err := s.waitShard(ctx, sh.Id, fmt.Sprintf("node %d to be in line with the primary", to), inLine)
	if err != nil {
		return err
	}
	if cur.Term != sh.Term || cur.Epoch.GetConfVer() != sh.Epoch.GetConfVer() {
		return fmt.Errorf("%w: shard %d changed while handing over", meta.ErrStaleEpoch, sh.Id)
	}
	return s.changeReplicas(ctx, sh, func(c *pcspb.CmdChangeReplicas) { c.NewPrimary = to })
}

// pickNode chooses a node for one more replica of a table's shard.
func (s *Server) pickNode(t *pcspb.Table, have []uint64) (uint64, bool) {
	n, err := placement.AddOne(s.eligible(), placement.Policy{Replicas: int(t.Replicas), IsolationLabel: t.IsolationLabel, Nodes: t.Nodes}, have)
	return n, err == nil
}
