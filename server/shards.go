package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/schedule/operator"
)

// shardRequests are the splits and merges the coordinator's operators want the shards'
// primaries to carry out, as of its last tick; the DDL loop hands each to its shard's primary
// node.
type shardRequests struct {
	mu     sync.Mutex
	req    []*pcspb.SplitShardCommand
	merges []*pcspb.MergeShardsCommand
}

func (r *shardRequests) set(req []*pcspb.SplitShardCommand, merges []*pcspb.MergeShardsCommand) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.req, r.merges = req, merges
}

func (r *shardRequests) all() ([]*pcspb.SplitShardCommand, []*pcspb.MergeShardsCommand) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.req, r.merges
}

// SplitShard submits an operator that has the shard's primary split it (at the key, or its
// middle key) and returns its id with the id reserved for the new half; the catalog records
// the split when the primary reports it.
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
	op, err := s.submit(ctx, sh, operator.Admin, "asked: split",
		operator.Step{Kind: operator.Split, Node: sh.Primary, Key: string(req.SplitKey), NewShard: id, Version: sh.Epoch.GetVersion()})
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("shard split submitted", "op", op.Id, "shard", sh.Id, "new_shard", id)
	return &pcspb.SplitShardResponse{Left: sh, OperatorId: op.Id, NewShardId: id}, nil
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
	if err := s.actAsNode(ctx, sh.Primary); err != nil {
		return nil, toStatus(err) // only the shard's primary asks to split it
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

// MoveShard submits an operator that moves a replica from one node to another (a learner on
// the target, promoted once in line; the primary role handed over if the source led; the
// source removed) and returns its id; the coordinator carries it out, also across a change of
// PCS primary. A move already done is answered with no operator.
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
	if !slices.Contains(sh.Replicas, req.FromNode) && !slices.Contains(sh.Learners, req.FromNode) && slices.Contains(sh.Replicas, req.ToNode) {
		return &pcspb.MoveShardResponse{Shard: sh}, nil // already moved
	}
	resp, err := v.AddOperator(ctx, &pcspb.AddOperatorRequest{ShardId: req.ShardId, Kind: "move", FromNode: req.FromNode, ToNode: req.ToNode})
	if err != nil {
		return nil, err
	}
	return &pcspb.MoveShardResponse{Shard: sh, OperatorId: resp.Operator.Id}, nil
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
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	if sh.Primary == req.ToNode {
		return &pcspb.TransferPrimaryResponse{Shard: sh}, nil
	}
	resp, err := v.AddOperator(ctx, &pcspb.AddOperatorRequest{ShardId: req.ShardId, Kind: "transfer-primary", ToNode: req.ToNode})
	if err != nil {
		return nil, err
	}
	return &pcspb.TransferPrimaryResponse{Shard: sh, OperatorId: resp.Operator.Id}, nil
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
	if err := s.actAsNode(ctx, req.Primary); err != nil {
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
	if left := len(sh.Replicas) - len(req.Nodes); left < int(sh.MinInSyncOrOne()) {
		// Kafka's min.insync.replicas: the shard keeps its replicas and the write fails
		// (retryably) rather than being acknowledged with fewer copies.
		return nil, toStatus(fmt.Errorf("%w: shard %d: removing %v would leave %d replicas, fewer than its min-in-sync %d",
			meta.ErrNotEnoughReplicas, sh.Id, req.Nodes, left, sh.MinInSyncOrOne()))
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
