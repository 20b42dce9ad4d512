package meta

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
)

// alterPartitions applies a partition change (see CmdAlterPartitions). It changes nothing on
// error. It returns the tables it changed: the table, or, for an ADD or DROP of a table in a
// shard group, every table of the group (their partitions are the group's, and the new leaves'
// shards are placed alike, so they stay co-located).
//
// now is the proposer's clock, recorded in the command (see catalog.Alter).
func (c *catalogState) alterPartitions(st *state, cmd *pcspb.CmdAlterPartitions, now time.Time) ([]*pcspb.Table, error) {
	te, ok := c.tables[cmd.TableId]
	if !ok {
		return nil, fmt.Errorf("%w: id %d", ErrTableNotFound, cmd.TableId)
	}
	t := te.t
	if t.State != pcspb.TableState_TABLE_STATE_PUBLIC {
		return nil, fmt.Errorf("%w: %q is %v", ErrTableNotPublic, t.Name, t.State)
	}
	alter := cmd.GetAlter()
	if n, ok := alter.GetOp().(*pcspb.PartitionAlter_SetReplicas); ok {
		return c.setReplicas(t, int(n.SetReplicas))
	}
	var kind string
	switch alter.GetOp().(type) {
	case *pcspb.PartitionAlter_AddRange, *pcspb.PartitionAlter_AddList, *pcspb.PartitionAlter_CoverKey:
		kind = "add partition"
	case *pcspb.PartitionAlter_Truncate:
		kind = "truncate partition"
	case *pcspb.PartitionAlter_Drop:
		kind = "drop partition"
		if len(cmd.Shards) > 0 {
			return nil, fmt.Errorf("%w: a drop takes no shards", ErrInvalid)
		}
	}
	group := []*tableEntry{te}
	if t.ShardGroup != "" && kind != "truncate partition" {
		group = c.groupTables(t.ShardGroup)
	}
	for _, g := range group {
		switch {
		case g.t.State != pcspb.TableState_TABLE_STATE_PUBLIC:
			return nil, fmt.Errorf("%w: %q of shard group %q is %v", ErrTableNotPublic, g.t.Name, t.ShardGroup, g.t.State)
		case g.t.PartitionJob != nil && kind != "add partition":
			// Adds join any job under way (a row's interval must not wait for a retention
			// drop); a drop or truncate waits for the job before it.
			return nil, fmt.Errorf("%w: %q: %s %q has not finished", ErrAlterInProgress, g.t.Name, g.t.PartitionJob.Kind, g.t.PartitionJob.Partition)
		case !proto.Equal(g.t.Partition, t.Partition):
			return nil, fmt.Errorf("%w: the tables of shard group %q have different partitions (%q and %q)", ErrInvalid, t.ShardGroup, t.Name, g.t.Name)
		}
	}
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	newSpec, names, err := catalog.Alter(schema, t.Partition, alter, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalid, t.Name, err)
	}
	if len(names) == 0 {
		return nil, nil // a cover_key already covered: nothing to do
	}
	specs := make([]*catalog.Spec, len(group))
	for i, g := range group {
		gs, err := catalog.CompileSchema(g.t.Columns)
		if err == nil {
			specs[i], err = catalog.Compile(gs, newSpec)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrInvalid, g.t.Name, err)
		}
	}
	var leaves []catalog.Leaf
	if kind != "drop partition" {
		if leaves, err = PartitionsLeaves(specs[0], names); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if len(cmd.Shards) != len(leaves) {
			return nil, fmt.Errorf("%w: %d shards for the %d leaves of partitions %v (the partitions changed since they were placed)", ErrStaleEpoch, len(cmd.Shards), len(leaves), names)
		}
		if err := c.checkPlaced(t, leaves, cmd.Shards); err != nil {
			return nil, err
		}
	}
	// Checked: now change.
	out := make([]*pcspb.Table, len(group))
	for i, g := range group {
		out[i] = c.changePartitions(st, g, newSpec, specs[i], kind, names, leaves, cmd.Shards)
	}
	return out, nil
}

// groupTables returns the tables of a shard group, by id.
func (c *catalogState) groupTables(group string) []*tableEntry {
	var out []*tableEntry
	for _, te := range c.tables {
		if te.t.ShardGroup == group {
			out = append(out, te)
		}
	}
	slices.SortFunc(out, func(a, b *tableEntry) int { return cmp.Compare(a.t.Id, b.t.Id) })
	return out
}

// changePartitions gives a table its new partition spec and job: shards for the new leaves (as
// placed), the shards of a dropped or truncated partition out of the catalog and into the job.
func (c *catalogState) changePartitions(st *state, te *tableEntry, newSpec *pcspb.PartitionSpec, compiled *catalog.Spec, kind string, names []string,
	leaves []catalog.Leaf, placed []*pcspb.Shard) *pcspb.Table {
	nt := proto.Clone(te.t).(*pcspb.Table)
	nt.Partition = newSpec
	job := &pcspb.PartitionJob{Id: st.revision, Kind: kind, Partition: strings.Join(names, ",")}
	if old := te.t.PartitionJob; old != nil {
		job = proto.Clone(old).(*pcspb.PartitionJob)
		job.Partition += "," + strings.Join(names, ",")
		if !strings.HasSuffix(job.Kind, kind) {
			job.Kind += ", " + kind
		}
	}
	shards := te.shards.Clone()
	if kind != "add partition" {
		start, end, _ := compiled.PartitionRange(names[0])
		var gone []*pcspb.Shard
		shards.AscendGreaterOrEqual(&pcspb.Shard{Start: start}, func(s *pcspb.Shard) bool {
			if bytes.Compare(s.Start, end) >= 0 {
				return false
			}
			gone = append(gone, s)
			return true
		})
		for _, s := range gone {
			shards.Delete(s)
			c.shardByID.del(s.Id)
		}
		job.Dropping = append(job.Dropping, gone...)
	}
	epoch := &pcspb.ShardEpoch{ConfVer: 1, Version: 1}
	for i, p := range placed {
		s := &pcspb.Shard{Id: st.nextID("shard"), TableId: nt.Id, Start: leaves[i].Start, End: leaves[i].End, Epoch: epoch, Term: 1,
			Primary: p.Primary, Replicas: append([]uint64(nil), p.Replicas...), Partition: c.name(leaves[i].Name), MinInSync: nt.MinInSync}
		shards.ReplaceOrInsert(s)
		c.shardByID.set(s.Id, s)
		job.Creating = append(job.Creating, s.Id)
	}
	nt.PartitionJob = job
	c.tables[nt.Id] = &tableEntry{t: nt, spec: compiled, shards: shards}
	return nt
}

// PartitionsLeaves returns the leaves of the named partitions, in order.
func PartitionsLeaves(spec *catalog.Spec, names []string) ([]catalog.Leaf, error) {
	var out []catalog.Leaf
	for _, n := range names {
		l, err := spec.PartitionLeaves(n)
		if err != nil {
			return nil, err
		}
		out = append(out, l...)
	}
	return out, nil
}

// checkPlaced checks shards placed for leaves: each covers its leaf, has the table's replica
// count on distinct registered nodes, the primary first.
func (c *catalogState) checkPlaced(t *pcspb.Table, leaves []catalog.Leaf, shards []*pcspb.Shard) error {
	for i, s := range shards {
		if !bytes.Equal(s.Start, leaves[i].Start) || !bytes.Equal(s.End, leaves[i].End) {
			return fmt.Errorf("%w: shard %d does not cover leaf %s", ErrInvalid, i, leaves[i].Name)
		}
		if len(s.Replicas) != int(t.Replicas) || len(s.Replicas) == 0 || s.Primary != s.Replicas[0] {
			return fmt.Errorf("%w: shard %d: %d replicas for replica count %d, primary first", ErrInvalid, i, len(s.Replicas), t.Replicas)
		}
		seen := map[uint64]bool{}
		for _, n := range s.Replicas {
			if _, ok := c.nodes[n]; !ok || seen[n] {
				return fmt.Errorf("%w: shard %d: node %d unknown or listed twice", ErrInvalid, i, n)
			}
			seen[n] = true
		}
	}
	return nil
}

// setReplicas changes the replica count of a table and of every table of its shard group (they
// keep co-located replicas); the scheduler's replica checker adds or removes replicas.
func (c *catalogState) setReplicas(t *pcspb.Table, n int) ([]*pcspb.Table, error) {
	switch {
	case n < 1 || n > MaxReplicas:
		return nil, fmt.Errorf("%w: replica count %d (1..%d)", ErrInvalid, n, MaxReplicas)
	case uint32(n) < t.MinInSync:
		return nil, fmt.Errorf("%w: %q acknowledges a write once %d replicas hold it: it cannot have %d", ErrInvalid, t.Name, t.MinInSync, n)
	}
	group := []*tableEntry{c.tables[t.Id]}
	if t.ShardGroup != "" {
		group = group[:0]
		for _, te := range c.tables {
			if te.t.ShardGroup == t.ShardGroup {
				if te.t.State != pcspb.TableState_TABLE_STATE_PUBLIC || uint32(n) < te.t.MinInSync {
					return nil, fmt.Errorf("%w: table %q of shard group %q is %v with min-in-sync %d", ErrInvalid, te.t.Name, t.ShardGroup, te.t.State, te.t.MinInSync)
				}
				group = append(group, te)
			}
		}
	}
	var out []*pcspb.Table
	for _, te := range group {
		nt := proto.Clone(te.t).(*pcspb.Table)
		nt.Replicas = uint32(n)
		c.tables[nt.Id] = &tableEntry{t: nt, spec: te.spec, shards: te.shards}
		out = append(out, nt)
	}
	return out, nil
}

// finishPartitionJob ends a table's partition job (see CmdFinishPartitionJob).
func (c *catalogState) finishPartitionJob(cmd *pcspb.CmdFinishPartitionJob) (*pcspb.Table, error) {
	te, ok := c.tables[cmd.TableId]
	if !ok {
		return nil, fmt.Errorf("%w: id %d", ErrTableNotFound, cmd.TableId)
	}
	if j := te.t.PartitionJob; j == nil || j.Id != cmd.JobId {
		return nil, fmt.Errorf("%w: table %q has no partition job %d", ErrInvalid, te.t.Name, cmd.JobId)
	}
	nt := proto.Clone(te.t).(*pcspb.Table)
	nt.PartitionJob = nil
	c.tables[nt.Id] = &tableEntry{t: nt, spec: te.spec, shards: te.shards}
	return nt, nil
}
