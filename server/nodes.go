package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/ddl"
	"github.com/postdb/pcs/internal/meta"
	"go.opentelemetry.io/otel/attribute"
)

// nodeCommands holds, per data node, the commands the DDL driver wants it to receive. The
// heartbeat handler hands them out; a command not yet done is handed out again after
// resendAfter.
type nodeCommands struct {
	mu      sync.Mutex
	pending map[uint64][]*pcspb.NodeCommand
	sent    map[uint64]map[string]time.Time // node -> command key -> last sent
}

const resendAfter = time.Second

func newNodeCommands() *nodeCommands {
	return &nodeCommands{pending: map[uint64][]*pcspb.NodeCommand{}, sent: map[uint64]map[string]time.Time{}}
}

func cmdKey(c *pcspb.NodeCommand) string {
	switch x := c.Cmd.(type) {
	case *pcspb.NodeCommand_CreateReplica:
		return fmt.Sprintf("create/%d", x.CreateReplica.Id)
	case *pcspb.NodeCommand_DropReplica:
		return fmt.Sprintf("drop/%d", x.DropReplica)
	case *pcspb.NodeCommand_LoadSchema:
		return fmt.Sprintf("schema/%d/%d", x.LoadSchema.TableId, x.LoadSchema.Version)
	case *pcspb.NodeCommand_SplitShard:
		return fmt.Sprintf("split/%d/%d", x.SplitShard.ShardId, x.SplitShard.Version)
	case *pcspb.NodeCommand_MergeShards:
		return fmt.Sprintf("merge/%d/%d/%d/%d", x.MergeShards.ShardId, x.MergeShards.Version, x.MergeShards.SourceId, x.MergeShards.SourceVersion)
	}
	return c.String()
}

func (nc *nodeCommands) set(plan map[uint64][]*pcspb.NodeCommand) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.pending = plan
}

// take returns the node's commands that were not sent within resendAfter.
func (nc *nodeCommands) take(node uint64, now time.Time) []*pcspb.NodeCommand {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	sent := nc.sent[node]
	if sent == nil {
		sent = map[string]time.Time{}
		nc.sent[node] = sent
	}
	var out []*pcspb.NodeCommand
	live := map[string]bool{}
	for _, c := range nc.pending[node] {
		k := cmdKey(c)
		live[k] = true
		if t, ok := sent[k]; ok && now.Sub(t) < resendAfter {
			continue
		}
		sent[k] = now
		out = append(out, c)
	}
	for k := range sent {
		if !live[k] {
			delete(sent, k)
		}
	}
	if len(sent) == 0 {
		delete(nc.sent, node) // let the map's memory go once a node is idle
	}
	return out
}

func (nc *nodeCommands) reset() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.pending = map[uint64][]*pcspb.NodeCommand{}
	nc.sent = map[uint64]map[string]time.Time{}
}

// Heartbeat serves a data node's stream on the primary.
func (v *service) Heartbeat(stream pcspb.PCS_HeartbeatServer) error {
	s := v.s
	ctx := stream.Context()
	if !s.isPrimary() {
		return toStatus(s.notPrimary())
	}
	for {
		hb, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !s.isPrimary() {
			return toStatus(s.notPrimary())
		}
		if hb.NodeId == 0 || len(hb.HeldShards) > maxHeldShards {
			return toStatus(errInvalidf("heartbeat: node id 0 or more than %d shards", maxHeldShards))
		}
		if err := s.actAsNode(ctx, hb.NodeId); err != nil {
			return toStatus(err)
		}
		s.live.Observe(hb)
		resp := &pcspb.HeartbeatResponse{Seq: hb.Seq, LeaseMs: uint64(s.cfg.NodeLease.Milliseconds()),
			Commands: s.nodeCmds.take(hb.NodeId, time.Now())}
		if s.live.WarmedUp() {
			resp.Commands = append(resp.Commands, ddl.Orphans(s.fsm.ForeignShards(hb.NodeId, hb.HeldShards, hb.ShardStats))...)
		}
		for _, sp := range s.fsm.PendingSplits(hb.NodeId, hb.ShardStats) {
			if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_SplitShard{SplitShard: sp}}); err != nil {
				s.log.Warn("recording a shard split", "shard", sp.ShardId, "new_shard", sp.NewShardId, "err", err)
				continue
			}
			s.log.Info("shard split recorded", "shard", sp.ShardId, "new_shard", sp.NewShardId, "version", sp.Version+1, "node", hb.NodeId)
		}
		if s.fsm.ClusterVersion() >= meta.VersionMerge {
			for _, m := range s.fsm.PendingMerges(hb.NodeId, hb.ShardStats) {
				if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_MergeShards{MergeShards: m}}); err != nil {
					s.log.Warn("recording a shard merge", "shard", m.ShardId, "absorbed", m.SourceId, "err", err)
					continue
				}
				s.metrics.merges.Inc()
				s.log.Info("shard merge recorded", "shard", m.ShardId, "absorbed", m.SourceId, "version", max(m.Version, m.SourceVersion)+1, "node", hb.NodeId)
			}
		}
		resp.Commands = append(resp.Commands, ddl.Updates(s.fsm.StaleReplicas(hb.NodeId, hb.ShardStats))...)
		if c := s.configCommand(hb.NodeId, hb.Stats); c != nil {
			resp.Commands = append(resp.Commands, c)
		}
		resp.Denied, resp.Grants = s.grantsFor(hb)
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		default:
		}
	}
}

const maxHeldShards = 10_000_000

func (s *Server) dataNode(id uint64) (*pcspb.DataNode, error) {
	for _, n := range s.fsm.DataNodes() {
		if n.Id == id {
			return n, nil
		}
	}
	return nil, errNotFoundf(meta.ErrNodeNotFound, id)
}

// fsmCatalog adapts the state machine to the DDL planner.
type fsmCatalog struct{ f *meta.FSM }

func (c fsmCatalog) Tables() []*pcspb.Table               { return c.f.Tables() }
func (c fsmCatalog) TableShards(id uint64) []*pcspb.Shard { return c.f.TableShards(id) }

// ddlLoop runs the DDL planner on the primary, after the warm-up, and carries out its steps.
func (s *Server) ddlLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.DDLInterval)
	defer t.Stop()
	var lastIntervals time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.ddlKick:
		}
		if !s.live.WarmedUp() {
			continue // failover during the warm-up is the coordinator's (scheduleLoop)
		}
		if now := time.Now(); now.Sub(lastIntervals) >= time.Second {
			lastIntervals = now
			s.maintainIntervals(ctx, now)
		}
		step := ddl.Next(fsmCatalog{s.fsm}, s.live)
		for n, shards := range ddl.Missing(fsmCatalog{s.fsm}, s.live) {
			for _, sh := range shards {
				step.Commands[n] = append(step.Commands[n], &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: sh}})
			}
		}
		splits, merges := s.shardReq.all()
		for _, c := range splits {
			if sh, _, err := s.fsm.ShardByID(c.ShardId); err == nil {
				step.Commands[sh.Primary] = append(step.Commands[sh.Primary], &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_SplitShard{SplitShard: c}})
			}
		}
		for _, c := range merges {
			if sh, _, err := s.fsm.ShardByID(c.ShardId); err == nil {
				step.Commands[sh.Primary] = append(step.Commands[sh.Primary], &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_MergeShards{MergeShards: c}})
			}
		}
		s.nodeCmds.set(step.Commands)
		if len(step.Public)+len(step.Advance)+len(step.Finished)+len(step.Delete) > 0 {
			s.ddlApply(ctx, step)
		}
	}
}

// ddlApply writes what a DDL pass decided: tables made public, schema versions advanced,
// partition jobs finished, dropped tables removed.
func (s *Server) ddlApply(ctx context.Context, step ddl.Step) {
	ctx, span := s.span(ctx, "pcs.ddl", attribute.Int("public", len(step.Public)), attribute.Int("advance", len(step.Advance)),
		attribute.Int("finished", len(step.Finished)), attribute.Int("delete", len(step.Delete)))
	defer span.End()
	for _, id := range step.Public {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_SetTableState{SetTableState: &pcspb.CmdSetTableState{
			TableId: id, State: pcspb.TableState_TABLE_STATE_PUBLIC}}}); err != nil {
			s.log.Warn("making table public", "table", id, "err", err)
			continue
		}
		s.log.Info("table public", "table", id)
	}
	for id, v := range step.Advance {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_AdvanceSchema{AdvanceSchema: &pcspb.CmdAdvanceSchema{TableId: id, Loaded: v}}}); err != nil {
			s.log.Warn("advancing schema", "table", id, "err", err)
			continue
		}
		s.log.Info("schema version loaded everywhere", "table", id, "version", v)
	}
	for id, job := range step.Finished {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_FinishPartitionJob{FinishPartitionJob: &pcspb.CmdFinishPartitionJob{TableId: id, JobId: job}}}); err != nil {
			s.log.Warn("finishing partition job", "table", id, "job", job, "err", err)
			continue
		}
		s.log.Info("partition job finished", "table", id, "job", job)
	}
	for _, id := range step.Delete {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_DeleteTable{DeleteTable: &pcspb.CmdDeleteTable{TableId: id}}}); err != nil {
			s.log.Warn("removing dropped table", "table", id, "err", err)
			continue
		}
		s.log.Info("table dropped", "table", id)
	}
}

func (s *Server) liveState(n *pcspb.DataNode) string {
	switch {
	case n.Tombstone:
		return "tombstone"
	case n.Offline:
		return "offline"
	}
	if s.raft.State().String() != "Leader" {
		return "unknown"
	}
	return string(s.live.State(n.Id))
}

// nodeLost reports whether a node is down: silent past down-after, which is never before its
// lease and the margin have lapsed. Its shard primaries are failed over, its replicas removed,
// and it gets no new replica. During a new primary's warm-up it counts silence since the
// primary took office (only lost primaries move then); the registry's State says down only
// after the warm-up.
func (s *Server) nodeLost(id uint64) bool {
	return s.live.Silent(id) >= s.downAfter
}
