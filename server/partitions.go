package server

import (
	"context"
	"fmt"

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
	cmd := &pcspb.CmdAlterPartitions{TableId: t.Id, Alter: req.Alter}
	switch req.Alter.Op.(type) {
	case *pcspb.PartitionAlter_AddRange, *pcspb.PartitionAlter_AddList, *pcspb.PartitionAlter_Truncate:
		if cmd.Shards, err = v.s.placePartition(ctx, t, req.Alter); err != nil {
			return nil, toStatus(err)
		}
	}
	if _, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_AlterPartitions{AlterPartitions: cmd}}); err != nil {
		return nil, toStatus(err)
	}
	if t, _, err = v.s.fsm.Table(req.Name); err != nil {
		return nil, toStatus(err)
	}
	v.s.log.Info("table partitions changed", "table", t.Name, "change", req.Alter.String())
	return &pcspb.AlterPartitionsResponse{Table: t}, nil
}

// placePartition places the shards of the partition an ADD creates or a TRUNCATE replaces, by
// the table's placement rules. The state machine checks them against the catalog it applies
// them to.
func (s *Server) placePartition(ctx context.Context, t *pcspb.Table, alter *pcspb.PartitionAlter) ([]*pcspb.Shard, error) {
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	spec, name, err := catalog.Alter(schema, t.Partition, alter)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", meta.ErrInvalid, t.Name, err)
	}
	compiled, err := catalog.Compile(schema, spec)
	if err != nil {
		return nil, err
	}
	leaves, err := compiled.PartitionLeaves(name)
	if err != nil {
		return nil, err
	}
	if err := s.waitNodesHeard(ctx); err != nil {
		return nil, err
	}
	plan, err := placement.Place(s.eligible(), placement.Policy{Replicas: int(t.Replicas), IsolationLabel: t.IsolationLabel, Nodes: t.Nodes},
		make([]placement.Shard, len(leaves)))
	if err != nil {
		return nil, err
	}
	out := make([]*pcspb.Shard, len(leaves))
	for i, l := range leaves {
		out[i] = &pcspb.Shard{Start: l.Start, End: l.End, Primary: plan[i][0], Replicas: plan[i]}
	}
	return out, nil
}
