package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/placement"
)

// AlterPartitions changes a table's partitions (ADD, DROP, TRUNCATE PARTITION) or replica
// count. The catalog routes by the new partitions from the moment the change is applied; the
// data nodes create and drop shards as a job (pcsctl job list) that survives a PCS primary
// change, because it is planned again from the catalog.
func (v *service) AlterPartitions(ctx context.Context, req *pcspb.AlterPartitionsRequest) (*pcspb.AlterPartitionsResponse, error) {
	if req.GetAlter().GetOp() == nil {
		return nil, toStatus(fmt.Errorf("%w: no partition change", ErrInvalid))
	}
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.AlterPartitions(ctx, req)
	}
	t, _, err := v.s.fsm.Table(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, ok := req.Alter.Op.(*pcspb.PartitionAlter_CoverKey); ok {
		err = v.s.coverKey(ctx, t, req.Alter)
	} else {
		err = v.s.alterPartitions(ctx, t, req.Alter, v.s.applyRequest)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if t, _, err = v.s.fsm.Table(req.Name); err != nil {
		return nil, toStatus(err)
	}
	v.s.log.Info("table partitions changed", "table", t.Name, "change", req.Alter.String())
	return &pcspb.AlterPartitionsResponse{Table: t}, nil
}

// alterPartitions places the shards a change creates and applies it with apply.
func (s *Server) alterPartitions(ctx context.Context, t *pcspb.Table, alter *pcspb.PartitionAlter, apply func(context.Context, *pcspb.Command) (*meta.Result, error)) error {
	cmd := &pcspb.CmdAlterPartitions{TableId: t.Id, Alter: alter}
	switch alter.Op.(type) {
	case *pcspb.PartitionAlter_AddRange, *pcspb.PartitionAlter_AddList, *pcspb.PartitionAlter_Truncate, *pcspb.PartitionAlter_CoverKey:
		var err error
		if cmd.Shards, err = s.placePartition(ctx, t, alter); err != nil {
			return err
		}
	}
	_, err := apply(ctx, &pcspb.Command{Op: &pcspb.Command_AlterPartitions{AlterPartitions: cmd}})
	if err == nil {
		select {
		case s.ddlKick <- struct{}{}:
		default:
		}
	}
	return err
}

// coverKey makes sure a partition holds a row of an interval table. It is idempotent (the state
// machine adds nothing for a key already covered), so it needs no request id; when another
// cover changed the partitions between placing and applying, it places again.
func (s *Server) coverKey(ctx context.Context, t *pcspb.Table, alter *pcspb.PartitionAlter) error {
	for attempt := 0; ; attempt++ {
		err := s.alterPartitions(ctx, t, alter, s.apply)
		if !errors.Is(err, meta.ErrStaleEpoch) || attempt == 5 {
			return err
		}
		if t, _, err = s.fsm.Table(t.Name); err != nil {
			return err
		}
	}
}

// placePartition places the shards of the partition an ADD creates or a TRUNCATE replaces, by
// the table's placement rules. The state machine checks them against the catalog it applies
// them to.
func (s *Server) placePartition(ctx context.Context, t *pcspb.Table, alter *pcspb.PartitionAlter) ([]*pcspb.Shard, error) {
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	spec, names, err := catalog.Alter(schema, t.Partition, alter, time.UnixMilli(s.clk.WallMs()))
	if err != nil || len(names) == 0 {
		if err != nil {
			err = fmt.Errorf("%w: %q: %w", meta.ErrInvalid, t.Name, err)
		}
		return nil, err
	}
	compiled, err := catalog.Compile(schema, spec)
	if err != nil {
		return nil, err
	}
	leaves, err := meta.PartitionsLeaves(compiled, names)
	if err != nil {
		return nil, err
	}
	if _, ok := alter.Op.(*pcspb.PartitionAlter_Truncate); ok && t.ShardGroup != "" {
		// A shard group's table keeps its leaves where they are (co-located with the group's).
		return currentPlacement(s.fsm.TableShards(t.Id), leaves), nil
	}
	if err := s.waitNodesHeard(ctx); err != nil {
		return nil, err
	}
	plan, err := placement.Place(s.eligible(), placement.Policy{Replicas: int(t.Replicas), IsolationLabel: t.IsolationLabel, Nodes: t.Nodes},
		make([]placement.Shard, len(leaves)))
	if err != nil {
		return nil, err
	}
	s.placeLoads.placed(plan)
	out := make([]*pcspb.Shard, len(leaves))
	for i, l := range leaves {
		out[i] = &pcspb.Shard{Start: l.Start, End: l.End, Primary: plan[i][0], Replicas: plan[i]}
	}
	return out, nil
}

// maintainIntervals keeps the interval tables' partitions: those with a timestamp column get
// the intervals up to interval-create-ahead past now made ahead of their rows, and the oldest
// partition past the retention dropped (one drop at a time: a drop is a job of its own). It
// runs on the primary, by its clock; every change is idempotent or checked by the state
// machine, so a new primary simply carries on.
func (s *Server) maintainIntervals(ctx context.Context, now time.Time) {
	ahead := int64(s.scheduleConfig().IntervalCreateAhead)
	for _, t := range s.fsm.Tables() {
		if t.State != pcspb.TableState_TABLE_STATE_PUBLIC || t.Partition.GetInterval() == "" {
			continue
		}
		spec, err := compileForCreate(t)
		if err != nil {
			continue
		}
		width, _, _ := spec.Interval()
		if spec.IntervalIsTime() {
			until := now.UnixMicro() + ahead*width
			if add, err := spec.IntervalsFor(until, now); err == nil && len(add) > 0 {
				cover := &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_CoverKey{CoverKey: spec.IntervalKey(until)}}
				if err := s.coverKey(ctx, t, cover); err != nil {
					s.log.Warn("creating intervals ahead", "table", t.Name, "err", err)
				} else {
					s.log.Info("intervals created ahead", "table", t.Name, "partitions", len(add))
				}
				continue
			}
		}
		if t.PartitionJob != nil {
			continue
		}
		if expired := spec.Expired(now); len(expired) > 0 {
			drop := &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: expired[0]}}
			if err := s.alterPartitions(ctx, t, drop, s.apply); err != nil {
				s.log.Warn("dropping a partition past retention", "table", t.Name, "partition", expired[0], "err", err)
				continue
			}
			s.log.Info("partition past retention dropped", "table", t.Name, "partition", expired[0])
		}
	}
}

// currentPlacement places each leaf's new shard on the replicas of the first shard now holding
// the leaf, its primary first.
func currentPlacement(shards []*pcspb.Shard, leaves []catalog.Leaf) []*pcspb.Shard {
	out := make([]*pcspb.Shard, len(leaves))
	for i, l := range leaves {
		out[i] = &pcspb.Shard{Start: l.Start, End: l.End}
		for _, sh := range shards {
			if bytes.Compare(sh.Start, l.Start) >= 0 && bytes.Compare(sh.Start, l.End) < 0 {
				out[i].Primary = sh.Primary
				out[i].Replicas = append([]uint64{sh.Primary}, slices.DeleteFunc(slices.Clone(sh.Replicas), func(r uint64) bool { return r == sh.Primary })...)
				break
			}
		}
	}
	return out
}
