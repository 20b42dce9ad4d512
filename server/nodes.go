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
	"google.golang.org/protobuf/proto"
)

// nodeCommands holds, per data node, the commands the DDL driver wants it to receive. The
// heartbeat handler hands them out; a command not yet done is handed out again after
// resendAfter. One answer carries at most maxCommandBytes of commands, so a node owed more (a
// table of thousands of shards just created) gets them over several heartbeats instead of an
// answer past the message size limit that would fail its stream again and again; each node's
// cursor resumes where the last answer stopped, so the tail is not starved by the head.
type nodeCommands struct {
	mu      sync.Mutex
	pending map[uint64][]*pcspb.NodeCommand
	gen     uint64 // moves with every set: a new plan
	nodes   map[uint64]*nodeSent
}

// nodeSent is what a node was sent lately: command -> when, and where its next answer resumes.
type nodeSent struct {
	at     map[cmdID]time.Time
	cursor int
	// The node's last answer went through the whole plan of generation idleGen, and every
	// command of it is in at: until the first of them is due again (dueAt) or the plan
	// changes, there is nothing to send, and its heartbeats need not read the plan (tens of
	// thousands of commands while a mass creation is under way).
	idleGen uint64
	dueAt   time.Time
}

const (
	resendAfter = time.Second
	// maxCommandBytes bounds the commands in one heartbeat answer: a quarter of the data
	// node's 8 MiB receive limit (the rest of the answer is small).
	maxCommandBytes = 2 << 20
)

func newNodeCommands() *nodeCommands {
	return &nodeCommands{pending: map[uint64][]*pcspb.NodeCommand{}, gen: 1, nodes: map[uint64]*nodeSent{}}
}

// cmdID names a command for resending: its kind and the ids it acts on.
type cmdID struct {
	kind       uint8
	a, b, c, d uint64
}

func idOf(c *pcspb.NodeCommand) cmdID {
	switch x := c.Cmd.(type) {
	case *pcspb.NodeCommand_CreateReplica:
		return cmdID{kind: 1, a: x.CreateReplica.Id}
	case *pcspb.NodeCommand_DropReplica:
		return cmdID{kind: 2, a: x.DropReplica}
	case *pcspb.NodeCommand_LoadSchema:
		return cmdID{kind: 3, a: x.LoadSchema.TableId, b: x.LoadSchema.Version}
	case *pcspb.NodeCommand_SplitShard:
		return cmdID{kind: 4, a: x.SplitShard.ShardId, b: x.SplitShard.Version}
	case *pcspb.NodeCommand_MergeShards:
		return cmdID{kind: 5, a: x.MergeShards.ShardId, b: x.MergeShards.Version, c: x.MergeShards.SourceId, d: x.MergeShards.SourceVersion}
	}
	return cmdID{} // other commands are not planned by the DDL driver; never deduplicated
}

func (nc *nodeCommands) set(plan map[uint64][]*pcspb.NodeCommand) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.pending = plan
	nc.gen++
}

// take returns the node's commands that were not sent within resendAfter, at most
// maxCommandBytes of them, starting where the node's previous answer stopped.
func (nc *nodeCommands) take(node uint64, now time.Time) []*pcspb.NodeCommand {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	ns := nc.nodes[node]
	if ns == nil {
		ns = &nodeSent{at: map[cmdID]time.Time{}}
		nc.nodes[node] = ns
	}
	if ns.idleGen == nc.gen && now.Before(ns.dueAt) {
		return nil
	}
	ns.idleGen = 0
	first := now // the earliest send of a command not due yet
	for k, t := range ns.at {
		if now.Sub(t) >= resendAfter {
			delete(ns.at, k) // due again (if still pending): the same as never sent
		} else if t.Before(first) {
			first = t
		}
	}
	pending := nc.pending[node]
	var out []*pcspb.NodeCommand
	bytes, i := 0, 0
	everyOne := true // every command read is one a resend is timed for
	for ; i < len(pending); i++ {
		c := pending[(ns.cursor+i)%len(pending)]
		k := idOf(c)
		everyOne = everyOne && k.kind != 0
		if _, ok := ns.at[k]; ok && k.kind != 0 {
			continue
		}
		size := proto.Size(c)
		if len(out) > 0 && bytes+size > maxCommandBytes {
			break
		}
		bytes += size
		ns.at[k] = now
		out = append(out, c)
	}
	if len(pending) > 0 {
		ns.cursor = (ns.cursor + i) % len(pending)
		if i == len(pending) && everyOne { // the whole plan read, and all of it is in at
			ns.idleGen, ns.dueAt = nc.gen, first.Add(resendAfter)
		}
	}
	if len(ns.at) == 0 {
		delete(nc.nodes, node) // let the map's memory go once a node is idle
	}
	return out
}

func (nc *nodeCommands) reset() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.pending = map[uint64][]*pcspb.NodeCommand{}
	nc.gen++
	nc.nodes = map[uint64]*nodeSent{}
}

// Heartbeat serves a data node's stream on the primary.
func (v *service) Heartbeat(stream pcspb.PCS_HeartbeatServer) error {
	s := v.s
	ctx := stream.Context()
	if !s.isPrimary() {
		return toStatus(s.notPrimary())
	}
	var clean struct{ node, gen uint64 } // the node's last check found every held replica its own
	checks := pacer{share: 20}           // of the node's held replicas
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
		heldChanged := s.live.Observe(hb)
		resp := &pcspb.HeartbeatResponse{Seq: hb.Seq, LeaseMs: uint64(s.cfg.NodeLease.Milliseconds()),
			Commands: s.nodeCmds.take(hb.NodeId, time.Now())}
		if s.live.WarmedUp() {
			// Checking every held replica against the catalog costs a lookup each; a node
			// whose list and the catalog are as they were at its last clean check is skipped.
			// A node of millions of replicas whose list changes every beat (while tables are
			// made) is checked for at most a twentieth of the time: a foreign replica is
			// dropped a little later, and the stream keeps up.
			gen := s.fsm.CatalogGeneration()
			if (heldChanged || hb.NodeId != clean.node || gen != clean.gen) && checks.due() {
				start := time.Now()
				foreign, ok := s.fsm.ForeignShards(hb.NodeId, hb.HeldShards, hb.ShardStats)
				checks.ran(start)
				resp.Commands = append(resp.Commands, ddl.Orphans(foreign)...)
				clean.node, clean.gen = 0, 0
				if ok {
					clean.node, clean.gen = hb.NodeId, gen
				}
			}
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

// pacer keeps a pass whose cost grows with the cluster (a read of every replica) to at most
// 1/share of the time: it is due again once share-1 times its last duration has passed since
// it ended. A pass of microseconds is due at every tick.
type pacer struct {
	share int
	ended time.Time
	took  time.Duration
}

func (p *pacer) due() bool { return time.Since(p.ended) >= time.Duration(p.share-1)*p.took }

// ran records a pass that began at start and has just ended.
func (p *pacer) ran(start time.Time) { p.ended = time.Now(); p.took = p.ended.Sub(start) }

// fsmCatalog adapts the state machine to the DDL planner.
type fsmCatalog struct{ f *meta.FSM }

func (c fsmCatalog) Tables() []*pcspb.Table               { return c.f.Tables() }
func (c fsmCatalog) TableShards(id uint64) []*pcspb.Shard { return c.f.TableShards(id) }

// ddlLoop runs the DDL planner on the primary, after the warm-up, and carries out its steps.
func (s *Server) ddlLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.DDLInterval)
	defer t.Stop()
	var lastIntervals time.Time
	type missingKey struct {
		catalog, held uint64
		up            string
	}
	var (
		missing   map[uint64][]*pcspb.NodeCommand // (made once per pass, not every tick)
		missingAt missingKey
		repairs   = pacer{share: 10}
		planned   map[uint64][]*pcspb.NodeCommand // the last step's commands
		steps     = pacer{share: 10}
		hadReqs   bool // the last plan carried splits or merges
	)
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
		// Next reads every replica of every table being created: while millions are (a mass
		// creation), a pass takes a while, and it runs for at most a tenth of the time; the
		// nodes keep the last plan in between.
		var step ddl.Step
		ran := steps.due()
		if ran {
			start := time.Now()
			step = ddl.Next(fsmCatalog{s.fsm}, s.live)
			steps.ran(start)
			planned = step.Commands
		}
		// Missing reads every replica of every public table: it runs again only when the
		// catalog, a node's held set or the set of up nodes has changed, and (at millions of
		// replicas, where a pass takes a while) for at most a tenth of the time.
		key := missingKey{s.fsm.CatalogGeneration(), s.live.HeldGeneration(), fmt.Sprint(s.live.UpNodes())}
		repaired := key != missingAt && repairs.due()
		if repaired {
			start := time.Now()
			missing, missingAt = map[uint64][]*pcspb.NodeCommand{}, key
			for n, shards := range ddl.Missing(fsmCatalog{s.fsm}, s.live) {
				cmds := make([]*pcspb.NodeCommand, len(shards))
				for i, sh := range shards {
					cmds[i] = &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: sh}}
				}
				missing[n] = cmds
			}
			repairs.ran(start)
		}
		splits, merges := s.shardReq.all()
		reqs := len(splits)+len(merges) > 0
		if ran || repaired || reqs || hadReqs {
			cmds := make(map[uint64][]*pcspb.NodeCommand, len(planned)+len(missing))
			for n, c := range planned {
				cmds[n] = c[:len(c):len(c)] // (appended to below: a copy, the plan stays as it was)
			}
			for n, c := range missing {
				cmds[n] = append(cmds[n], c...)
			}
			for _, c := range splits {
				if sh, _, err := s.fsm.ShardByID(c.ShardId); err == nil {
					cmds[sh.Primary] = append(cmds[sh.Primary], &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_SplitShard{SplitShard: c}})
				}
			}
			for _, c := range merges {
				if sh, _, err := s.fsm.ShardByID(c.ShardId); err == nil {
					cmds[sh.Primary] = append(cmds[sh.Primary], &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_MergeShards{MergeShards: c}})
				}
			}
			s.nodeCmds.set(cmds)
			hadReqs = reqs
		}
		if ran && len(step.Public)+len(step.Advance)+len(step.Finished)+len(step.Delete) > 0 {
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
