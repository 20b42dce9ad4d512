package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/placement"
)

// Limits of the catalog surface.
const (
	defaultScan = 1000
	maxScan     = 100_000
)

func (v *service) RegisterNode(ctx context.Context, req *pcspb.RegisterNodeRequest) (*pcspb.RegisterNodeResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.RegisterNode(ctx, req)
	}
	res, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_RegisterNode{RegisterNode: &pcspb.CmdRegisterNode{Node: &pcspb.DataNode{
		Address: req.Address, Labels: req.Labels, CapacityBytes: req.CapacityBytes, Identity: callerIdentity(ctx)}}}})
	if err != nil {
		return nil, toStatus(err)
	}
	v.s.log.Info("data node registered", "node", res.ID, "address", req.Address)
	return &pcspb.RegisterNodeResponse{NodeId: res.ID, ClusterId: v.s.ClusterID()}, nil
}

func (v *service) SetNodeState(ctx context.Context, req *pcspb.SetNodeStateRequest) (*pcspb.SetNodeStateResponse, error) {
	cmd := &pcspb.CmdSetNodeAdmin{NodeId: req.NodeId}
	switch req.State {
	case "up":
	case "offline":
		cmd.Offline = true
	case "tombstone":
		cmd.Offline, cmd.Tombstone = true, true
	default:
		return nil, toStatus(fmt.Errorf("%w: node state %q: want up, offline or tombstone", ErrInvalid, req.State))
	}
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.SetNodeState(ctx, req)
	}
	if _, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_SetNodeAdmin{SetNodeAdmin: cmd}}); err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.SetNodeStateResponse{}, nil
}

func (v *service) ListNodes(ctx context.Context, req *pcspb.ListNodesRequest) (*pcspb.ListNodesResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	counts := map[uint64][2]uint64{}
	for _, t := range v.s.fsm.Tables() {
		shards, _, _ := v.s.fsm.ScanShards(t.Name, nil, nil, maxScan*10)
		for _, s := range shards {
			for _, r := range s.Replicas {
				c := counts[r]
				c[0]++
				if r == s.Primary {
					c[1]++
				}
				counts[r] = c
			}
		}
	}
	resp := &pcspb.ListNodesResponse{Header: h}
	evict := v.s.scheduleConfig().EvictPrimaries
	for _, n := range v.s.fsm.DataNodes() {
		ni := &pcspb.NodeInfo{Node: n, State: v.s.nodeState(n), Shards: counts[n.Id][0], Primaries: counts[n.Id][1], EvictPrimaries: evict[n.Id]}
		if st := v.s.live.NodeStats(n.Id); st != nil {
			ni.UsedBytes, ni.DiskFreeBytes = st.BytesUsed, st.DiskFree
			ni.Cpu, ni.MemoryBytes, ni.IoBytesPerSec = st.Cpu, st.MemoryBytes, st.IoBytesPerSec
		}
		ni.ReadPerSec, ni.WritePerSec = v.s.live.NodeLoad(n.Id)
		resp.Nodes = append(resp.Nodes, ni)
	}
	pos := v.s.fsm.Position()
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return resp, nil
}

// nodeState is a data node's state as this PCS knows it. Liveness is tracked by the primary
// from heartbeats; elsewhere only the registry's decisions are known ("unknown").
func (s *Server) nodeState(n *pcspb.DataNode) string { return s.liveState(n) }

// waitNodesHeard waits, on a new primary, until every registered node has heartbeated or the
// warm-up has passed, so that placement does not take a node it has not heard from yet for a
// missing one.
func (s *Server) waitNodesHeard(ctx context.Context) error {
	for !s.live.WarmedUp() {
		all := true
		for _, n := range s.fsm.DataNodes() {
			if !n.Offline && !n.Tombstone && !s.live.Heard(n.Id) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// eligible lists the nodes that may receive new replicas.
func (s *Server) eligible() []placement.Node {
	loads := s.placeLoads.get(time.Now(), s.placementLoads)
	nodes := s.fsm.DataNodes()
	for _, n := range nodes {
		if _, ok := loads[n.Id]; !ok && s.nodeState(n) == "up" {
			// Up now but not when the loads were computed: its load is not known, and it
			// must not look empty.
			s.placeLoads.reset()
			loads = s.placeLoads.get(time.Now(), s.placementLoads)
			break
		}
	}
	var out []placement.Node
	for _, n := range nodes {
		st := s.nodeState(n)
		pn := placement.Node{ID: n.Id, Labels: n.Labels, Eligible: st == "up" && !s.nodeLost(n.Id)}
		if ld, ok := loads[n.Id]; ok {
			pn.Eligible = pn.Eligible && ld.Eligible
			pn.Score, pn.ScoreStep, pn.Shards, pn.Primaries, pn.BytesUsed = ld.Score, ld.ScoreStep, ld.Shards, ld.Primaries, ld.BytesUsed
		}
		out = append(out, pn)
	}
	return out
}

func (v *service) CreateTable(ctx context.Context, req *pcspb.CreateTableRequest) (*pcspb.CreateTableResponse, error) {
	t := req.GetTable()
	if t == nil {
		return nil, toStatus(fmt.Errorf("%w: no table", ErrInvalid))
	}
	p := t.GetPartition()
	firstInterval := p.GetInterval() != "" && p.Strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE && len(p.Ranges) == 0
	if t.Replicas == 0 || firstInterval {
		// The cluster's default-replicas, as the primary knows it (a follower may not have
		// applied the latest setting yet), and the first interval by the primary's clock.
		cli, err := v.s.route(ctx, false)
		if err != nil {
			return nil, toStatus(err)
		}
		if cli != nil {
			return cli.CreateTable(ctx, req)
		}
		t = proto.Clone(t).(*pcspb.Table)
		if t.Replicas == 0 {
			t.Replicas = uint32(v.s.scheduleConfig().DefaultReplicas)
		}
		if firstInterval {
			schema, err := catalog.CompileSchema(t.Columns)
			if err != nil {
				return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err))
			}
			first, err := catalog.FirstInterval(schema, t.Partition, time.Now())
			if err != nil {
				return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err))
			}
			t.Partition.Ranges = []*pcspb.RangePartition{first}
		}
	}
	spec, err := compileForCreate(t)
	if err != nil {
		return nil, toStatus(err)
	}
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.CreateTable(ctx, req)
	}
	if err := v.s.waitNodesHeard(ctx); err != nil {
		return nil, toStatus(err)
	}
	cmd, err := v.s.planTable(t, spec)
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_CreateTable{CreateTable: cmd}})
	if err != nil {
		return nil, toStatus(err)
	}
	created, n, err := v.s.fsm.Table(t.Name)
	if err != nil || created.Id != res.ID {
		return nil, toStatus(fmt.Errorf("table %q created as %d but not found: %w", t.Name, res.ID, err))
	}
	v.s.log.Info("table created", "table", t.Name, "id", res.ID, "shards", n)
	return &pcspb.CreateTableResponse{Table: created, Shards: uint32(n)}, nil
}

func compileForCreate(t *pcspb.Table) (*catalog.Spec, error) {
	if t.Name == "" || len(t.Name) > meta.MaxNameLen {
		return nil, fmt.Errorf("%w: table name must be 1..%d bytes", ErrInvalid, meta.MaxNameLen)
	}
	if t.Replicas == 0 {
		return nil, fmt.Errorf("%w: replica count must be at least 1", ErrInvalid)
	}
	if t.MinInSync > t.Replicas {
		return nil, fmt.Errorf("%w: min-in-sync %d is more than the replica count %d", ErrInvalid, t.MinInSync, t.Replicas)
	}
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	return catalog.Compile(schema, t.Partition)
}

// planTable places a table's shards: co-located leaf by leaf with a table of the same shard
// group if there is one, else by the placement rules.
func (s *Server) planTable(t *pcspb.Table, spec *catalog.Spec) (*pcspb.CmdCreateTable, error) {
	if _, _, err := s.fsm.Table(t.Name); err == nil {
		return nil, fmt.Errorf("%w: %q", meta.ErrTableExists, t.Name)
	}
	leaves := spec.Leaves()
	var plan []placement.Replicas
	if t.ShardGroup != "" {
		// Co-located with the group's anchor table (its member of lowest id), leaf by leaf: each
		// leaf on the nodes of the anchor's first shard of the same partition. If the anchor's
		// leaves were split since, the group checker splits this table's shards to match.
		var anchor *pcspb.Table
		for _, other := range s.fsm.Tables() {
			if other.ShardGroup == t.ShardGroup && (anchor == nil || other.Id < anchor.Id) {
				anchor = other
			}
		}
		if anchor != nil {
			if anchor.Replicas != t.Replicas {
				return nil, fmt.Errorf("%w: shard group %q has tables of %d replicas; this one has %d", ErrInvalid, t.ShardGroup, anchor.Replicas, t.Replicas)
			}
			first := map[string]*pcspb.Shard{}
			for _, sh := range s.fsm.TableShards(anchor.Id) {
				if f := first[sh.Partition]; f == nil || bytes.Compare(sh.Start, f.Start) < 0 {
					first[sh.Partition] = sh
				}
			}
			if len(first) != len(leaves) {
				return nil, fmt.Errorf("%w: shard group %q has tables of %d partitions; this one has %d", ErrInvalid, t.ShardGroup, len(first), len(leaves))
			}
			for _, l := range leaves {
				f := first[l.Name]
				if f == nil {
					return nil, fmt.Errorf("%w: shard group %q: table %q has no partition %q", ErrInvalid, t.ShardGroup, anchor.Name, l.Name)
				}
				r := placement.Replicas{f.Primary} // the primary first, as the anchor's
				for _, n := range f.Replicas {
					if n != f.Primary {
						r = append(r, n)
					}
				}
				plan = append(plan, r)
			}
		}
	}
	if plan == nil {
		var err error
		plan, err = placement.Place(s.eligible(), placement.Policy{Replicas: int(t.Replicas), IsolationLabel: t.IsolationLabel, Nodes: t.Nodes},
			make([]placement.Shard, len(leaves)))
		if err != nil {
			return nil, err
		}
		s.placeLoads.placed(plan)
	}
	cmd := &pcspb.CmdCreateTable{Table: proto.Clone(t).(*pcspb.Table)}
	for i, l := range leaves {
		cmd.Shards = append(cmd.Shards, &pcspb.Shard{Start: l.Start, End: l.End, Primary: plan[i][0], Replicas: plan[i]})
	}
	return cmd, nil
}

func (v *service) DropTable(ctx context.Context, req *pcspb.DropTableRequest) (*pcspb.DropTableResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.DropTable(ctx, req)
	}
	t, _, err := v.s.fsm.Table(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_SetTableState{SetTableState: &pcspb.CmdSetTableState{
		TableId: t.Id, State: pcspb.TableState_TABLE_STATE_DROPPING}}}); err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.DropTableResponse{}, nil
}

func (v *service) GetTable(ctx context.Context, req *pcspb.GetTableRequest) (*pcspb.GetTableResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	t, n, err := v.s.fsm.Table(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	pos := v.s.fsm.Position()
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	resp := &pcspb.GetTableResponse{Header: h, Table: t, Shards: uint32(n)}
	if req.Version != 0 {
		for _, sv := range t.Versions {
			if sv.Version == req.Version {
				resp.Schema = sv
			}
		}
		if resp.Schema == nil {
			return nil, toStatus(fmt.Errorf("%w: table %q has live schema versions %d..%d, not %d",
				meta.ErrTableNotFound, t.Name, t.MinLiveVersion, t.SchemaVersion, req.Version))
		}
	}
	return resp, nil
}

func (v *service) AlterTable(ctx context.Context, req *pcspb.AlterTableRequest) (*pcspb.AlterTableResponse, error) {
	if len(req.Steps) == 0 || len(req.Steps) > meta.MaxAlterSteps {
		return nil, toStatus(fmt.Errorf("%w: an alter has 1..%d steps", ErrInvalid, meta.MaxAlterSteps))
	}
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.AlterTable(ctx, req)
	}
	t, _, err := v.s.fsm.Table(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_AlterTable{AlterTable: &pcspb.CmdAlterTable{TableId: t.Id, Steps: req.Steps}}}); err != nil {
		return nil, toStatus(err)
	}
	t, _, err = v.s.fsm.Table(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.AlterTableResponse{Table: t}, nil
}

func (v *service) ListTables(ctx context.Context, req *pcspb.ListTablesRequest) (*pcspb.ListTablesResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	pos := v.s.fsm.Position()
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	resp := &pcspb.ListTablesResponse{Header: h}
	for _, t := range v.s.fsm.Tables() {
		resp.Tables = append(resp.Tables, summarize(t))
	}
	return resp, nil
}

// summarize drops the partition bounds and lists from a table (a table of 100k range
// partitions has a spec of megabytes); GetTable returns the whole definition.
func summarize(t *pcspb.Table) *pcspb.Table {
	if t.Partition == nil {
		return t
	}
	c := proto.Clone(t).(*pcspb.Table)
	for p := c.Partition; p != nil; p = p.Sub {
		p.Ranges, p.Lists = nil, nil
	}
	return c
}

func (v *service) GetShard(ctx context.Context, req *pcspb.GetShardRequest) (*pcspb.GetShardResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	s, pos, err := v.s.fsm.ShardForKey(req.Table, req.Key)
	if err != nil {
		return nil, toStatus(err)
	}
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.GetShardResponse{Header: h, Shard: s}, nil
}

func (v *service) GetShardByID(ctx context.Context, req *pcspb.GetShardByIDRequest) (*pcspb.GetShardResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	s, pos, err := v.s.fsm.ShardByID(req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.GetShardResponse{Header: h, Shard: s}, nil
}

func (v *service) ScanShards(ctx context.Context, req *pcspb.ScanShardsRequest) (*pcspb.ScanShardsResponse, error) {
	limit := int(req.Limit)
	if limit == 0 {
		limit = defaultScan
	}
	if limit > maxScan {
		return nil, toStatus(fmt.Errorf("%w: limit %d exceeds %d", ErrInvalid, limit, maxScan))
	}
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	shards, pos, err := v.s.fsm.ScanShards(req.Table, req.Start, req.End, limit+1)
	if err != nil {
		return nil, toStatus(err)
	}
	more := len(shards) > limit
	if more {
		shards = shards[:limit]
	}
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	resp := &pcspb.ScanShardsResponse{Header: h, Shards: shards, More: more}
	if req.WithStats {
		for _, sh := range shards {
			resp.Stats = append(resp.Stats, v.s.shardLoad(sh))
		}
	}
	return resp, nil
}

// shardLoad is a shard's load as the primary last heard it: size, keys and rates from the
// shard's primary replica, and each replica's own log position (empty on a follower).
func (s *Server) shardLoad(sh *pcspb.Shard) *pcspb.ShardStats {
	out := &pcspb.ShardStats{ShardId: sh.Id, ReplicaPositions: map[uint64]uint64{}}
	if p := s.live.ShardStats(sh.Primary, sh.Id); p != nil {
		out.SizeBytes, out.Keys, out.ReadPerSec, out.WritePerSec = p.SizeBytes, p.Keys, p.ReadPerSec, p.WritePerSec
		out.Term, out.ConfVer, out.Version = p.Term, p.ConfVer, p.Version
	}
	for _, r := range append(append([]uint64(nil), sh.Replicas...), sh.Learners...) {
		if st := s.live.ShardStats(r, sh.Id); st != nil {
			if pos, ok := st.ReplicaPositions[r]; ok {
				out.ReplicaPositions[r] = pos
			}
		}
	}
	return out
}

// maxBatchKeys bounds one BatchGetShards call.
const maxBatchKeys = 10_000

func (v *service) BatchGetShards(ctx context.Context, req *pcspb.BatchGetShardsRequest) (*pcspb.BatchGetShardsResponse, error) {
	if len(req.Keys) > maxBatchKeys {
		return nil, toStatus(fmt.Errorf("%w: %d keys exceed %d", ErrInvalid, len(req.Keys), maxBatchKeys))
	}
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	shards, pos, err := v.s.fsm.ShardsForKeys(req.Table, req.Keys)
	if ke := (*meta.KeyError)(nil); errors.As(err, &ke) {
		return nil, pcspb.BadKeyError(status.Code(toStatus(err)), err.Error(), ke.Index)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.BatchGetShardsResponse{Header: h, Shards: shards}, nil
}
