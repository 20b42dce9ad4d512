package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sort"
	"time"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
)

// Catalog errors.
var (
	// ErrTableExists: a table of this name exists.
	ErrTableExists = errors.New("meta: table exists")
	// ErrTableNotFound: no table of this name or id.
	ErrTableNotFound = errors.New("meta: table not found")
	// ErrShardNotFound: no shard holds the key, or no shard has the id.
	ErrShardNotFound = errors.New("meta: shard not found")
	// ErrNodeNotFound: no registered node has the id.
	ErrNodeNotFound = errors.New("meta: node not found")
	// ErrAlterInProgress: an earlier ALTER of the table has not finished.
	ErrAlterInProgress = errors.New("meta: an alter of this table is in progress")
	// ErrTableNotPublic: the operation needs a public table.
	ErrTableNotPublic = errors.New("meta: table is not public")
	// ErrStaleEpoch: a shard change was decided on metadata that has changed since (its term,
	// conf_ver or version moved on).
	ErrStaleEpoch = errors.New("meta: shard metadata changed")
	// ErrIdentity: a data node's address is registered to another certificate identity.
	ErrIdentity = errors.New("meta: another identity")
	// ErrNotEnoughReplicas: a change would leave a shard fewer replicas than its min_in_sync.
	ErrNotEnoughReplicas = errors.New("meta: not enough replicas")
)

// CatalogPrefix is the reserved key prefix of catalog events in the watch history (see
// pcspb.CatalogPrefix).
const CatalogPrefix = pcspb.CatalogPrefix

// tableEvent records a table change in the watch history.
func (f *FSM) tableEventLocked(st *state, t *pcspb.Table, deleted bool) {
	kv := &pcspb.KeyValue{Key: []byte(CatalogPrefix + t.Name), ModRevision: st.revision}
	typ := pcspb.EventType_EVENT_TYPE_PUT
	if deleted {
		typ = pcspb.EventType_EVENT_TYPE_DELETE
	} else {
		kv.Value, _ = proto.Marshal(t)
	}
	st.hist.append(&pcspb.Event{Type: typ, Kv: kv}, f.opts.History)
}

// catalogState is the catalog part of the state: data nodes, tables and their shards.
// Stored messages are never modified in place (an update stores a new message), so clones
// may share them.
type catalogState struct {
	nodes       map[uint64]*pcspb.DataNode
	nodeByAddr  map[string]uint64
	tables      map[uint64]*tableEntry
	tableByName map[string]uint64
	shardByID   *shardIndex
	// names interns leaf partition names: every shard of "h17" in every table holds one string.
	// Only the live state writes it; a clone (a snapshot being written) shares it and never reads
	// it.
	names map[string]string
	// restoring shares, while a snapshot is read, what its shard records repeat: epochs and
	// replica lists (stored messages are never modified in place). nil otherwise.
	restoring *restoreShare
}

// restoreShare is what the shards read from one snapshot share.
type restoreShare struct {
	epochs   map[[2]uint64]*pcspb.ShardEpoch
	replicas map[string][]uint64
}

// name returns the interned copy of a partition name.
func (c *catalogState) name(n string) string {
	if in, ok := c.names[n]; ok {
		return in
	}
	c.names[n] = n
	return n
}

// tableEntry is a table with its compiled spec and its range index.
type tableEntry struct {
	t      *pcspb.Table
	spec   *catalog.Spec // derived from t; not snapshotted
	shards *btree.BTreeG[*pcspb.Shard]
}

func shardLess(a, b *pcspb.Shard) bool { return bytes.Compare(a.Start, b.Start) < 0 }

func newCatalogState() *catalogState {
	return &catalogState{
		nodes:       map[uint64]*pcspb.DataNode{},
		nodeByAddr:  map[string]uint64{},
		tables:      map[uint64]*tableEntry{},
		tableByName: map[string]uint64{},
		shardByID:   newShardIndex(),
		names:       map[string]string{},
	}
}

func (c *catalogState) clone() *catalogState {
	n := &catalogState{
		nodes:       make(map[uint64]*pcspb.DataNode, len(c.nodes)),
		nodeByAddr:  make(map[string]uint64, len(c.nodeByAddr)),
		tables:      make(map[uint64]*tableEntry, len(c.tables)),
		tableByName: make(map[string]uint64, len(c.tableByName)),
		shardByID:   c.shardByID.clone(),
		names:       c.names,
	}
	for k, v := range c.nodes {
		n.nodes[k] = v
	}
	for k, v := range c.nodeByAddr {
		n.nodeByAddr[k] = v
	}
	for k, v := range c.tables {
		n.tables[k] = &tableEntry{t: v.t, spec: v.spec, shards: v.shards.Clone()}
	}
	for k, v := range c.tableByName {
		n.tableByName[k] = v
	}
	return n
}

// compileTable compiles a table's schema and partition spec.
func compileTable(t *pcspb.Table) (*catalog.Spec, error) {
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	return catalog.Compile(schema, t.Partition)
}

// nextID hands out the next id of a kind from the state's counters.
func (st *state) nextID(kind string) uint64 {
	id := max(st.ids[kind], 1)
	st.ids[kind] = id + 1
	return id
}

func (f *FSM) applyCatalogLocked(st *state, cmd *pcspb.Command, res *Result) bool {
	c := st.cat
	switch op := cmd.Op.(type) {
	case *pcspb.Command_RegisterNode:
		n := proto.Clone(op.RegisterNode.Node).(*pcspb.DataNode)
		if id, ok := c.nodeByAddr[n.Address]; ok {
			if old := c.nodes[id]; old.Identity != "" && old.Identity != n.Identity {
				res.Err = fmt.Errorf("%w: the data node at %s registered as %q; %q may not take its place", ErrIdentity, n.Address, old.Identity, n.Identity)
				return true
			}
			n.Id = id
		} else {
			n.Id = st.nextID("node")
			c.nodeByAddr[n.Address] = n.Id
		}
		c.nodes[n.Id] = n
		res.ID = n.Id
	case *pcspb.Command_CreateTable:
		res.ID, res.Err = c.createTable(st, op.CreateTable)
		if res.Err == nil {
			f.tableEventLocked(st, c.tables[res.ID].t, false)
		}
	case *pcspb.Command_SetTableState:
		te, ok := c.tables[op.SetTableState.TableId]
		if !ok {
			res.Err = fmt.Errorf("%w: id %d", ErrTableNotFound, op.SetTableState.TableId)
			return true
		}
		if from, to := te.t.State, op.SetTableState.State; from == pcspb.TableState_TABLE_STATE_DROPPING && to != from {
			res.Err = fmt.Errorf("%w: %q is being dropped", ErrTableNotPublic, te.t.Name)
			return true
		}
		t := proto.Clone(te.t).(*pcspb.Table)
		t.State = op.SetTableState.State
		c.tables[t.Id] = &tableEntry{t: t, spec: te.spec, shards: te.shards}
		f.tableEventLocked(st, t, false)
	case *pcspb.Command_AlterTable:
		res.Err = c.alterTable(op.AlterTable)
		if res.Err == nil {
			f.tableEventLocked(st, c.tables[op.AlterTable.TableId].t, false)
		}
	case *pcspb.Command_AdvanceSchema:
		res.Err = c.advanceSchema(op.AdvanceSchema)
		if res.Err == nil {
			f.tableEventLocked(st, c.tables[op.AdvanceSchema.TableId].t, false)
		}
	case *pcspb.Command_SetNodeAdmin:
		a := op.SetNodeAdmin
		n, ok := c.nodes[a.NodeId]
		if !ok {
			res.Err = fmt.Errorf("%w: id %d", ErrNodeNotFound, a.NodeId)
			return true
		}
		if a.Tombstone {
			c.shardByID.each(func(s *pcspb.Shard) bool {
				if holds(s, a.NodeId) {
					res.Err = fmt.Errorf("%w: node %d still holds replicas (shard %d); drain it first", ErrInvalid, a.NodeId, s.Id)
				}
				return res.Err == nil
			})
			if res.Err != nil {
				return true
			}
		}
		if n.Tombstone && !a.Tombstone {
			res.Err = fmt.Errorf("%w: node %d is a tombstone", ErrInvalid, a.NodeId)
			return true
		}
		nn := proto.Clone(n).(*pcspb.DataNode)
		nn.Offline, nn.Tombstone = a.Offline, a.Tombstone
		c.nodes[nn.Id] = nn
	case *pcspb.Command_ChangePrimary:
		old := c.shardByID.at(op.ChangePrimary.ShardId)
		if res.Err = c.changePrimary(op.ChangePrimary); res.Err == nil {
			f.primaryChangedLocked(old)
		}
	case *pcspb.Command_ChangeReplicas:
		old := c.shardByID.at(op.ChangeReplicas.ShardId)
		if res.Err = c.changeReplicas(op.ChangeReplicas); res.Err == nil {
			f.primaryChangedLocked(old)
		}
	case *pcspb.Command_SplitShard:
		res.ID, res.Err = c.splitShard(st, op.SplitShard)
	case *pcspb.Command_MergeShards:
		res.Err = c.mergeShards(op.MergeShards)
	case *pcspb.Command_AlterPartitions:
		var changed []*pcspb.Table
		changed, res.Err = c.alterPartitions(st, op.AlterPartitions, time.UnixMilli(int64(cmd.ProposedAtMs)))
		for _, t := range changed {
			f.tableEventLocked(st, t, false)
		}
	case *pcspb.Command_FinishPartitionJob:
		var t *pcspb.Table
		if t, res.Err = c.finishPartitionJob(op.FinishPartitionJob); res.Err == nil {
			f.tableEventLocked(st, t, false)
		}
	case *pcspb.Command_CancelAlter:
		te, ok := c.tables[op.CancelAlter.TableId]
		if !ok {
			res.Err = fmt.Errorf("%w: id %d", ErrTableNotFound, op.CancelAlter.TableId)
			return true
		}
		t := proto.Clone(te.t).(*pcspb.Table)
		t.PendingSteps = nil
		c.tables[t.Id] = &tableEntry{t: t, spec: te.spec, shards: te.shards}
		f.tableEventLocked(st, t, false)
	case *pcspb.Command_DeleteTable:
		te, ok := c.tables[op.DeleteTable.TableId]
		if !ok {
			res.Err = fmt.Errorf("%w: id %d", ErrTableNotFound, op.DeleteTable.TableId)
			return true
		}
		te.shards.Ascend(func(s *pcspb.Shard) bool { c.shardByID.del(s.Id); return true })
		delete(c.tables, te.t.Id)
		delete(c.tableByName, te.t.Name)
		f.tableEventLocked(st, te.t, true)
	default:
		return false
	}
	return true
}

// primaryChangedLocked tells OnPrimaryChange if the shard old was has another primary now.
func (f *FSM) primaryChangedLocked(old *pcspb.Shard) {
	cur := f.mu.st.cat.shardByID.at(old.GetId())
	if old != nil && cur != nil && cur.Primary != old.Primary && f.opts.OnPrimaryChange != nil {
		f.opts.OnPrimaryChange(cur.Id, old.Primary, cur.Term)
	}
}

// shardSlab is how many of a new table's shards are allocated at once.
const shardSlab = 32

// createTable validates a table and its shards against its own partition spec and the node
// registry, then stores them with fresh ids. It changes nothing on error.
func (c *catalogState) createTable(st *state, cmd *pcspb.CmdCreateTable) (uint64, error) {
	t := proto.Clone(cmd.Table).(*pcspb.Table)
	if _, ok := c.tableByName[t.Name]; ok {
		return 0, fmt.Errorf("%w: %q", ErrTableExists, t.Name)
	}
	spec, err := compileTable(t)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	leaves := spec.Leaves()
	if len(cmd.Shards) != len(leaves) {
		return 0, fmt.Errorf("%w: %d shards for %d leaf partitions", ErrInvalid, len(cmd.Shards), len(leaves))
	}
	if err := c.checkPlaced(t, leaves, cmd.Shards); err != nil {
		return 0, err
	}
	switch {
	case t.MinInSync > t.Replicas:
		return 0, fmt.Errorf("%w: min-in-sync %d is more than the replica count %d", ErrInvalid, t.MinInSync, t.Replicas)
	case t.MinInSync == 0:
		t.MinInSync = min(2, t.Replicas)
	}
	t.Id = st.nextID("table")
	t.State = pcspb.TableState_TABLE_STATE_CREATING
	t.SchemaVersion, t.MinLiveVersion = 1, 1
	var def []byte
	if len(t.Versions) > 0 {
		def = t.Versions[0].Definition
	}
	t.Versions = []*pcspb.SchemaVersion{{Version: 1, Definition: def}}
	t.PendingSteps = nil
	t.CreateRevision = st.revision
	te := &tableEntry{t: t, spec: spec, shards: btree.NewG(32, shardLess)}
	// Stored messages are never modified in place, so shards can share their first epoch and
	// identical replica lists: a table of 100k shards on a handful of nodes has few distinct
	// replica sets. This saves about 100 bytes per shard.
	epoch := &pcspb.ShardEpoch{ConfVer: 1, Version: 1}
	replicaSets := map[string][]uint64{}
	var prevEnd []byte // a shard's start is the previous one's end: one array for both
	var slab []pcspb.Shard
	for i, s := range cmd.Shards {
		start := s.Start
		if bytes.Equal(start, prevEnd) && len(start) > 0 {
			start = prevEnd
		}
		prevEnd = s.End
		var buf [64]byte
		key := buf[:0]
		for _, r := range s.Replicas {
			key = binary.BigEndian.AppendUint64(key, r)
		}
		reps, ok := replicaSets[string(key)]
		if !ok {
			reps = append([]uint64(nil), s.Replicas...)
			replicaSets[string(key)] = reps
		}
		if len(slab) == cap(slab) {
			// Shards are allocated a few at a time: a slab stays as long as one of its shards
			// does, so it is small enough that shards changed since (a copy each) waste little.
			slab = make([]pcspb.Shard, 0, min(shardSlab, len(cmd.Shards)-i))
		}
		slab = slab[:len(slab)+1]
		sh := &slab[len(slab)-1]
		sh.Id, sh.TableId, sh.Start, sh.End = st.nextID("shard"), t.Id, start, s.End
		sh.Epoch, sh.Term, sh.Primary, sh.Replicas = epoch, 1, s.Primary, reps
		sh.Partition, sh.MinInSync = c.name(leaves[i].Name), t.MinInSync
		te.shards.ReplaceOrInsert(sh)
		c.shardByID.set(sh.Id, sh)
	}
	c.tables[t.Id] = te
	c.tableByName[t.Name] = t.Id
	return t.Id, nil
}

// changePrimary removes a lost node from a shard's configuration (conf_ver + 1) and, if it was
// the primary, makes another replica primary with a higher term.
func (c *catalogState) changePrimary(cmd *pcspb.CmdChangePrimary) error {
	sh, ok := c.shardByID.get(cmd.ShardId)
	if !ok {
		return fmt.Errorf("%w: id %d", ErrShardNotFound, cmd.ShardId)
	}
	switch {
	case sh.Term != cmd.Term || sh.Epoch.GetConfVer() != cmd.ConfVer:
		return fmt.Errorf("%w: shard %d is at term %d conf_ver %d, the decision was made at %d/%d",
			ErrInvalid, sh.Id, sh.Term, sh.Epoch.GetConfVer(), cmd.Term, cmd.ConfVer)
	case !slices.Contains(sh.Replicas, cmd.NewPrimary) || cmd.NewPrimary == cmd.RemoveNode:
		return fmt.Errorf("%w: node %d is not a replica of shard %d to promote", ErrInvalid, cmd.NewPrimary, sh.Id)
	}
	if cmd.RemoveNode == 0 || !slices.Contains(sh.Replicas, cmd.RemoveNode) {
		return fmt.Errorf("%w: node %d is not a replica of shard %d to remove", ErrInvalid, cmd.RemoveNode, sh.Id)
	}
	te := c.tables[sh.TableId]
	ns := proto.Clone(sh).(*pcspb.Shard)
	if cmd.NewPrimary != sh.Primary {
		ns.Term++ // a new primary: the term fences the old one
	}
	ns.Primary = cmd.NewPrimary
	ns.Epoch.ConfVer++
	ns.Replicas = ns.Replicas[:0]
	ns.Replicas = append(ns.Replicas, cmd.NewPrimary) // the primary first
	for _, r := range sh.Replicas {
		if r != cmd.NewPrimary && r != cmd.RemoveNode {
			ns.Replicas = append(ns.Replicas, r)
		}
	}
	te.shards.ReplaceOrInsert(ns)
	c.shardByID.set(ns.Id, ns)
	return nil
}

// changeReplicas makes one configuration change (see CmdChangeReplicas); conf_ver + 1.
func (c *catalogState) changeReplicas(cmd *pcspb.CmdChangeReplicas) error {
	sh, ok := c.shardByID.get(cmd.ShardId)
	if !ok {
		return fmt.Errorf("%w: id %d", ErrShardNotFound, cmd.ShardId)
	}
	if sh.Term != cmd.Term || sh.Epoch.GetConfVer() != cmd.ConfVer {
		return fmt.Errorf("%w: shard %d is at term %d conf_ver %d, the change was decided at %d/%d",
			ErrStaleEpoch, sh.Id, sh.Term, sh.Epoch.GetConfVer(), cmd.Term, cmd.ConfVer)
	}
	set := 0
	for _, n := range []uint64{cmd.AddLearner, cmd.PromoteLearner, cmd.RemoveNode, cmd.NewPrimary} {
		if n != 0 {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: shard %d: a configuration change names exactly one node", ErrInvalid, sh.Id)
	}
	ns := proto.Clone(sh).(*pcspb.Shard)
	switch {
	case cmd.AddLearner != 0:
		n, ok := c.nodes[cmd.AddLearner]
		switch {
		case !ok:
			return fmt.Errorf("%w: id %d", ErrNodeNotFound, cmd.AddLearner)
		case n.Tombstone || n.Offline:
			return fmt.Errorf("%w: node %d is offline or a tombstone", ErrInvalid, n.Id)
		case slices.Contains(sh.Replicas, n.Id) || slices.Contains(sh.Learners, n.Id):
			return fmt.Errorf("%w: node %d already holds shard %d", ErrInvalid, n.Id, sh.Id)
		}
		ns.Learners = append(ns.Learners, n.Id)
	case cmd.PromoteLearner != 0:
		if !slices.Contains(sh.Learners, cmd.PromoteLearner) {
			return fmt.Errorf("%w: node %d is not a learner of shard %d", ErrInvalid, cmd.PromoteLearner, sh.Id)
		}
		ns.Learners = without(ns.Learners, cmd.PromoteLearner)
		ns.Replicas = append(ns.Replicas, cmd.PromoteLearner)
	case cmd.RemoveNode != 0:
		switch {
		case cmd.RemoveNode == sh.Primary:
			return fmt.Errorf("%w: node %d is the primary of shard %d; transfer the primary first", ErrInvalid, cmd.RemoveNode, sh.Id)
		case slices.Contains(sh.Learners, cmd.RemoveNode):
			ns.Learners = without(ns.Learners, cmd.RemoveNode)
		case slices.Contains(sh.Replicas, cmd.RemoveNode):
			if len(sh.Replicas)-1 < int(sh.MinInSyncOrOne()) {
				return fmt.Errorf("%w: shard %d has %d replicas and min-in-sync %d: removing node %d would leave too few to acknowledge a write",
					ErrNotEnoughReplicas, sh.Id, len(sh.Replicas), sh.MinInSyncOrOne(), cmd.RemoveNode)
			}
			ns.Replicas = without(ns.Replicas, cmd.RemoveNode)
		default:
			return fmt.Errorf("%w: node %d is not a replica of shard %d", ErrInvalid, cmd.RemoveNode, sh.Id)
		}
	default:
		switch {
		case cmd.NewPrimary == sh.Primary:
			return fmt.Errorf("%w: node %d is already the primary of shard %d", ErrInvalid, cmd.NewPrimary, sh.Id)
		case !slices.Contains(sh.Replicas, cmd.NewPrimary):
			return fmt.Errorf("%w: node %d is not a replica of shard %d (a learner must be promoted first)", ErrInvalid, cmd.NewPrimary, sh.Id)
		}
		ns.Term++ // the term fences the old primary
		ns.Primary = cmd.NewPrimary
		ns.Replicas = append([]uint64{cmd.NewPrimary}, without(ns.Replicas, cmd.NewPrimary)...)
	}
	ns.Epoch.ConfVer++
	c.tables[sh.TableId].shards.ReplaceOrInsert(ns)
	c.shardByID.set(ns.Id, ns)
	return nil
}

// MinInSync is how many replicas of a shard, the primary included, must persist a write before
// it is acknowledged (1 for shards made before min_in_sync existed).
func MinInSync(sh *pcspb.Shard) uint32 { return max(sh.GetMinInSync(), 1) }

// without returns ids without id, in a new slice.
func without(ids []uint64, id uint64) []uint64 {
	out := make([]uint64, 0, len(ids))
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

// splitShard records a split a shard's primary made (see CmdSplitShard) and returns the new
// shard's id.
func (c *catalogState) splitShard(st *state, cmd *pcspb.CmdSplitShard) (uint64, error) {
	sh, ok := c.shardByID.get(cmd.ShardId)
	if !ok {
		return 0, fmt.Errorf("%w: id %d", ErrShardNotFound, cmd.ShardId)
	}
	switch {
	case sh.Epoch.GetVersion() != cmd.Version:
		return 0, fmt.Errorf("%w: shard %d is at version %d, the split was made at %d", ErrStaleEpoch, sh.Id, sh.Epoch.GetVersion(), cmd.Version)
	case bytes.Compare(cmd.SplitKey, sh.Start) <= 0 || (len(sh.End) > 0 && bytes.Compare(cmd.SplitKey, sh.End) >= 0):
		return 0, fmt.Errorf("%w: split key %x is not strictly inside shard %d [%x, %x)", ErrInvalid, cmd.SplitKey, sh.Id, sh.Start, sh.End)
	case cmd.NewShardId == 0 || cmd.NewShardId >= st.ids["shard"]:
		return 0, fmt.Errorf("%w: shard id %d was not reserved", ErrInvalid, cmd.NewShardId)
	}
	if _, used := c.shardByID.get(cmd.NewShardId); used {
		return 0, fmt.Errorf("%w: shard id %d is in use", ErrInvalid, cmd.NewShardId)
	}
	epoch := &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: sh.Epoch.GetVersion() + 1}
	left := proto.Clone(sh).(*pcspb.Shard)
	left.End, left.Epoch = bytes.Clone(cmd.SplitKey), epoch
	right := proto.Clone(sh).(*pcspb.Shard)
	right.Id, right.Start, right.Epoch = cmd.NewShardId, bytes.Clone(cmd.SplitKey), proto.Clone(epoch).(*pcspb.ShardEpoch)
	te := c.tables[sh.TableId]
	te.shards.ReplaceOrInsert(left)
	te.shards.ReplaceOrInsert(right)
	c.shardByID.set(left.Id, left)
	c.shardByID.set(right.Id, right)
	return right.Id, nil
}

// mergeShards records a merge a shard's primary made (see CmdMergeShards): the survivor's range
// reaches the source's end, its version goes one past the higher of the two, and the source is
// gone. The merge is a fact of the shards' data once the primary reports it, so only the
// versions it was made at are checked, not the configurations (a conf change of the source
// recorded meanwhile concerned a replica that no longer exists; its nodes drop what is left).
func (c *catalogState) mergeShards(cmd *pcspb.CmdMergeShards) error {
	l, lok := c.shardByID.get(cmd.ShardId)
	r, rok := c.shardByID.get(cmd.SourceId)
	switch {
	case !lok:
		return fmt.Errorf("%w: id %d", ErrShardNotFound, cmd.ShardId)
	case !rok:
		return fmt.Errorf("%w: id %d", ErrShardNotFound, cmd.SourceId)
	case l.Epoch.GetVersion() != cmd.Version || r.Epoch.GetVersion() != cmd.SourceVersion:
		return fmt.Errorf("%w: shards %d and %d are at versions %d and %d, the merge was made at %d and %d", ErrStaleEpoch,
			l.Id, r.Id, l.Epoch.GetVersion(), r.Epoch.GetVersion(), cmd.Version, cmd.SourceVersion)
	case l.TableId != r.TableId || l.Partition != r.Partition || len(l.End) == 0 || !bytes.Equal(l.End, r.Start):
		return fmt.Errorf("%w: shard %d [%x, %x) is not followed by shard %d [%x, %x) of its table and partition", ErrInvalid,
			l.Id, l.Start, l.End, r.Id, r.Start, r.End)
	}
	survivor := proto.Clone(l).(*pcspb.Shard)
	survivor.End = bytes.Clone(r.End)
	survivor.Epoch = &pcspb.ShardEpoch{ConfVer: l.Epoch.GetConfVer(), Version: max(l.Epoch.GetVersion(), r.Epoch.GetVersion()) + 1}
	te := c.tables[l.TableId]
	te.shards.Delete(r)
	te.shards.ReplaceOrInsert(survivor)
	c.shardByID.del(r.Id)
	c.shardByID.set(survivor.Id, survivor)
	return nil
}

// MaxAlterSteps bounds the steps of one ALTER.
const MaxAlterSteps = 16

// alterTable starts an online schema change (F1 style): the first step becomes the next
// version; the others wait until every live node has loaded it. At most two versions are live.
func (c *catalogState) alterTable(cmd *pcspb.CmdAlterTable) error {
	te, ok := c.tables[cmd.TableId]
	if !ok {
		return fmt.Errorf("%w: id %d", ErrTableNotFound, cmd.TableId)
	}
	t := te.t
	switch {
	case t.State != pcspb.TableState_TABLE_STATE_PUBLIC:
		return fmt.Errorf("%w: %q is %v", ErrTableNotPublic, t.Name, t.State)
	case t.SchemaVersion != t.MinLiveVersion || len(t.PendingSteps) > 0:
		return fmt.Errorf("%w: %q has versions %d..%d live and %d steps pending", ErrAlterInProgress, t.Name, t.MinLiveVersion, t.SchemaVersion, len(t.PendingSteps))
	case len(cmd.Steps) == 0 || len(cmd.Steps) > MaxAlterSteps:
		return fmt.Errorf("%w: an alter has 1..%d steps", ErrInvalid, MaxAlterSteps)
	}
	nt := proto.Clone(t).(*pcspb.Table)
	nt.SchemaVersion++
	nt.Versions = append(nt.Versions, &pcspb.SchemaVersion{Version: nt.SchemaVersion, Definition: cmd.Steps[0]})
	nt.PendingSteps = cmd.Steps[1:]
	c.tables[t.Id] = &tableEntry{t: nt, spec: te.spec, shards: te.shards}
	return nil
}

// advanceSchema retires the versions below the newest (every live node has loaded it) and starts
// the next pending step.
func (c *catalogState) advanceSchema(cmd *pcspb.CmdAdvanceSchema) error {
	te, ok := c.tables[cmd.TableId]
	if !ok {
		return fmt.Errorf("%w: id %d", ErrTableNotFound, cmd.TableId)
	}
	t := te.t
	if cmd.Loaded != t.SchemaVersion || t.MinLiveVersion == t.SchemaVersion && len(t.PendingSteps) == 0 {
		return fmt.Errorf("%w: advance of %q at version %d, table at %d..%d", ErrInvalid, t.Name, cmd.Loaded, t.MinLiveVersion, t.SchemaVersion)
	}
	nt := proto.Clone(t).(*pcspb.Table)
	nt.MinLiveVersion = nt.SchemaVersion
	nt.Versions = nt.Versions[len(nt.Versions)-1:]
	if len(nt.PendingSteps) > 0 {
		nt.SchemaVersion++
		nt.Versions = append(nt.Versions, &pcspb.SchemaVersion{Version: nt.SchemaVersion, Definition: nt.PendingSteps[0]})
		nt.PendingSteps = nt.PendingSteps[1:]
	}
	c.tables[t.Id] = &tableEntry{t: nt, spec: te.spec, shards: te.shards}
	return nil
}

// ---- reads ------------------------------------------------------------------------------------

// DataNodes returns the registered nodes by id.
func (f *FSM) DataNodes() []*pcspb.DataNode {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pcspb.DataNode, 0, len(f.mu.st.cat.nodes))
	for _, n := range f.mu.st.cat.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// Tables returns every table by id.
func (f *FSM) Tables() []*pcspb.Table {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pcspb.Table, 0, len(f.mu.st.cat.tables))
	for _, te := range f.mu.st.cat.tables {
		out = append(out, te.t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// Table returns a table by name and its shard count.
func (f *FSM) Table(name string) (*pcspb.Table, int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	te, err := f.tableLocked(name)
	if err != nil {
		return nil, 0, err
	}
	return te.t, te.shards.Len(), nil
}

func (f *FSM) tableLocked(name string) (*tableEntry, error) {
	id, ok := f.mu.st.cat.tableByName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrTableNotFound, name)
	}
	return f.mu.st.cat.tables[id], nil
}

// ShardForKey returns the shard of table holding the row key (keyenc of the key columns).
func (f *FSM) ShardForKey(table string, key []byte) (*pcspb.Shard, Position, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pos := Position{f.mu.st.revision, f.mu.st.applied}
	te, err := f.tableLocked(table)
	if err != nil {
		return nil, pos, err
	}
	rk, err := te.spec.RoutingKey(key)
	if err != nil {
		return nil, pos, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s := shardAt(te, rk)
	if s == nil {
		return nil, pos, fmt.Errorf("%w: table %q key %x", ErrShardNotFound, table, key)
	}
	return s, pos, nil
}

// shardAt finds the shard whose range holds routing key rk.
func shardAt(te *tableEntry, rk []byte) *pcspb.Shard {
	var found *pcspb.Shard
	te.shards.DescendLessOrEqual(&pcspb.Shard{Start: rk}, func(s *pcspb.Shard) bool {
		found = s
		return false
	})
	if found == nil || (len(found.End) > 0 && bytes.Compare(rk, found.End) >= 0) {
		return nil
	}
	return found
}

// ScanShards returns up to limit shards of table, in order, from the one holding routing key
// start (nil: the first) up to end (nil: the last).
func (f *FSM) ScanShards(table string, start, end []byte, limit int) ([]*pcspb.Shard, Position, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pos := Position{f.mu.st.revision, f.mu.st.applied}
	te, err := f.tableLocked(table)
	if err != nil {
		return nil, pos, err
	}
	var out []*pcspb.Shard
	from := &pcspb.Shard{Start: start}
	if s := shardAt(te, start); s != nil {
		from = s
	}
	te.shards.AscendGreaterOrEqual(from, func(s *pcspb.Shard) bool {
		if len(out) == limit || (len(end) > 0 && bytes.Compare(s.Start, end) >= 0) {
			return false
		}
		out = append(out, s)
		return true
	})
	return out, pos, nil
}

// ShardByID returns a shard.
func (f *FSM) ShardByID(id uint64) (*pcspb.Shard, Position, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pos := Position{f.mu.st.revision, f.mu.st.applied}
	s, ok := f.mu.st.cat.shardByID.get(id)
	if !ok {
		return nil, pos, fmt.Errorf("%w: id %d", ErrShardNotFound, id)
	}
	return s, pos, nil
}

// CheckInvariants verifies the catalog: every table's shards tile its leaf ranges in order
// with no gap and no overlap; each shard's primary is one of its replicas; epochs and terms
// are at least 1.
func (f *FSM) CheckInvariants() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, te := range f.mu.st.cat.tables {
		// The shards tile the live leaves in order: a gap only where dropped partitions are.
		leaves := te.spec.Leaves()
		startOf, endOf := map[string]int{}, map[string]int{}
		for i, l := range leaves {
			startOf[string(l.Start)], endOf[string(l.End)] = i, i
		}
		var prev *pcspb.Shard
		var err error
		te.shards.Ascend(func(s *pcspb.Shard) bool {
			switch {
			case prev == nil && (len(leaves) == 0 || !bytes.Equal(s.Start, leaves[0].Start)):
				err = fmt.Errorf("table %q: first shard %d starts at %x, not where the first live leaf does", te.t.Name, s.Id, s.Start)
			case prev != nil && !bytes.Equal(prev.End, s.Start) && !leafGap(endOf, startOf, prev.End, s.Start):
				err = fmt.Errorf("table %q: gap or overlap between shards %d and %d", te.t.Name, prev.Id, s.Id)
			case bytes.Compare(s.Start, s.End) >= 0:
				err = fmt.Errorf("table %q: shard %d is empty", te.t.Name, s.Id)
			case !slices.Contains(s.Replicas, s.Primary):
				err = fmt.Errorf("table %q: shard %d primary %d is not a replica", te.t.Name, s.Id, s.Primary)
			case overlap(s.Replicas, s.Learners):
				err = fmt.Errorf("table %q: shard %d has a node that is both replica and learner", te.t.Name, s.Id)
			case s.Term < 1 || s.Epoch.GetConfVer() < 1 || s.Epoch.GetVersion() < 1:
				err = fmt.Errorf("table %q: shard %d has a zero term or epoch", te.t.Name, s.Id)
			}
			prev = s
			return err == nil
		})
		if err != nil {
			return err
		}
		if len(leaves) > 0 && (prev == nil || !bytes.Equal(prev.End, leaves[len(leaves)-1].End)) || len(leaves) == 0 && prev != nil {
			return fmt.Errorf("table %q: shards do not reach the end of the key space", te.t.Name)
		}
		if t := te.t; t.SchemaVersion < t.MinLiveVersion || t.SchemaVersion-t.MinLiveVersion > 1 ||
			uint64(len(t.Versions)) != t.SchemaVersion-t.MinLiveVersion+1 {
			return fmt.Errorf("table %q: live schema versions %d..%d (%d kept); at most two may be live", t.Name, t.MinLiveVersion, t.SchemaVersion, len(t.Versions))
		}
	}
	return nil
}

// leafGap reports whether the routing keys from end to start are the dropped partitions between
// two consecutive live leaves.
func leafGap(endOf, startOf map[string]int, end, start []byte) bool {
	i, ok := endOf[string(end)]
	j, ok2 := startOf[string(start)]
	return ok && ok2 && j == i+1
}

func overlap(a, b []uint64) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// digestCatalog feeds the catalog into a digest in a canonical order.
func (c *catalogState) digest(h hash.Hash) {
	det := proto.MarshalOptions{Deterministic: true}
	write := func(m proto.Message) {
		b, _ := det.Marshal(m)
		var n [8]byte
		for i := 0; i < 8; i++ {
			n[i] = byte(len(b) >> (56 - 8*i))
		}
		h.Write(n[:])
		h.Write(b)
	}
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		write(c.nodes[id])
	}
	ids = ids[:0]
	for id := range c.tables {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		te := c.tables[id]
		write(te.t)
		te.shards.Ascend(func(s *pcspb.Shard) bool { write(s); return true })
	}
}

// writeCatalog writes nodes, then each table followed by its shards in key order.
func writeCatalog(w *snapWriter, c *catalogState) error {
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if err := w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_DataNode{DataNode: c.nodes[id]}}); err != nil {
			return err
		}
	}
	ids = ids[:0]
	for id := range c.tables {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		te := c.tables[id]
		if err := w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Table{Table: te.t}}); err != nil {
			return err
		}
		var err error
		te.shards.Ascend(func(s *pcspb.Shard) bool {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Shard{Shard: s}})
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// readCatalogRecord restores one catalog record, checking it against what came before.
func readCatalogRecord(c *catalogState, rec *pcspb.SnapshotRecord) error {
	switch x := rec.Rec.(type) {
	case *pcspb.SnapshotRecord_DataNode:
		n := x.DataNode
		if n.Id == 0 || n.Address == "" || c.nodes[n.Id] != nil {
			return errors.New("bad or duplicate data node")
		}
		c.nodes[n.Id] = n
		c.nodeByAddr[n.Address] = n.Id
	case *pcspb.SnapshotRecord_Table:
		t := x.Table
		if t.Id == 0 || c.tables[t.Id] != nil || c.tableByName[t.Name] != 0 {
			return errors.New("bad or duplicate table")
		}
		spec, err := compileTable(t)
		if err != nil {
			return fmt.Errorf("table %q: %w", t.Name, err)
		}
		c.tables[t.Id] = &tableEntry{t: t, spec: spec, shards: btree.NewG(32, shardLess)}
		c.tableByName[t.Name] = t.Id
	case *pcspb.SnapshotRecord_Shard:
		return readCatalogShard(c, x.Shard)
	}
	return nil
}

// readCatalogShard adds a snapshot's shard to c.
func readCatalogShard(c *catalogState, s *pcspb.Shard) error {
	te := c.tables[s.TableId]
	if te == nil || s.Id == 0 || c.shardByID.at(s.Id) != nil || s.Epoch == nil {
		return errors.New("shard of an unknown table, or duplicate")
	}
	max, ok := te.shards.Max()
	if ok && bytes.Compare(s.Start, max.End) < 0 {
		return errors.New("shards out of order")
	}
	// Share what neighbours and other shards repeat, as createTable does.
	if ok && len(s.Start) > 0 && bytes.Equal(s.Start, max.End) {
		s.Start = max.End
	}
	s.Partition = c.name(s.Partition)
	if r := c.restoring; r != nil {
		ek := [2]uint64{s.Epoch.ConfVer, s.Epoch.Version}
		if len(s.Epoch.ProtoReflect().GetUnknown()) == 0 { // (both fields are the key)
			if e, ok := r.epochs[ek]; ok {
				s.Epoch = e
			} else {
				r.epochs[ek] = s.Epoch
			}
		}
		if len(s.Replicas) > 0 {
			var buf [64]byte
			key := buf[:0]
			for _, id := range s.Replicas {
				key = binary.BigEndian.AppendUint64(key, id)
			}
			if reps, ok := r.replicas[string(key)]; ok {
				s.Replicas = reps
			} else {
				r.replicas[string(key)] = s.Replicas
			}
		}
	}
	te.shards.ReplaceOrInsert(s)
	c.shardByID.set(s.Id, s)
	return nil
}

// TableShards returns a table's shards in key order (nil for an unknown table).
func (f *FSM) TableShards(tableID uint64) []*pcspb.Shard {
	f.mu.RLock()
	defer f.mu.RUnlock()
	te := f.mu.st.cat.tables[tableID]
	if te == nil {
		return nil
	}
	out := make([]*pcspb.Shard, 0, te.shards.Len())
	te.shards.Ascend(func(s *pcspb.Shard) bool { out = append(out, s); return true })
	return out
}

// ForeignShards returns the ids among the replicas node holds that the catalog does not give
// it: dropped shards, and shards whose configuration no longer includes the node.
//
// A shard the catalog does not know yet but that the node reports as split from one of its
// shards at a newer version than the catalog's is the new half of a split not recorded yet: it
// is kept. clean reports that the catalog gives the node every shard it holds: while neither
// the catalog nor the held list changes, the answer stays none whatever the stats say.
func (f *FSM) ForeignShards(node uint64, held []uint64, stats []*pcspb.ShardStats) (foreign []uint64, clean bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pending := map[uint64]bool{}
	reported := map[uint64]bool{}
	for _, st := range stats {
		reported[st.ShardId] = true
		if st.SplitFrom == 0 {
			continue
		}
		if _, known := f.mu.st.cat.shardByID.get(st.ShardId); known {
			continue
		}
		if p, ok := f.mu.st.cat.shardByID.get(st.SplitFrom); ok && p.Epoch.GetVersion() < st.Version && holds(p, node) {
			pending[st.ShardId] = true
		}
	}
	var out []uint64
	clean = true
	for _, id := range held {
		s, known := f.mu.st.cat.shardByID.get(id)
		if known && holds(s, node) {
			continue
		}
		clean = false
		if !known && pending[id] {
			continue
		}
		if !known && len(stats) > 0 && !reported[id] {
			// Held but not in the node's stats (made after they were taken: the new half of a
			// split): nothing to judge it by yet; the next heartbeat says.
			continue
		}
		out = append(out, id)
	}
	return out, clean
}

// holds reports whether node is a replica or learner of s.
func holds(s *pcspb.Shard, node uint64) bool {
	return slices.Contains(s.Replicas, node) || slices.Contains(s.Learners, node)
}

// PendingSplits returns the splits a shard's primary reports (in its shard stats) that the
// catalog has not recorded: the parent at a newer version than the catalog's, and its new half.
func (f *FSM) PendingSplits(node uint64, stats []*pcspb.ShardStats) []*pcspb.CmdSplitShard {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pcspb.CmdSplitShard
	for _, st := range stats {
		if st.SplitFrom == 0 {
			continue
		}
		if _, known := f.mu.st.cat.shardByID.get(st.ShardId); known {
			continue
		}
		p, ok := f.mu.st.cat.shardByID.get(st.SplitFrom)
		if ok && p.Primary == node && p.Epoch.GetVersion()+1 == st.Version {
			out = append(out, &pcspb.CmdSplitShard{ShardId: p.Id, Version: p.Epoch.GetVersion(), SplitKey: st.Start, NewShardId: st.ShardId})
		}
	}
	return out
}

// PendingMerges returns the merges a shard's primary reports (merged_from in its shard stats)
// that the catalog has not recorded: the survivor at the version the merge gives it, the
// source still in the catalog at the version the merge was made at, and every replica of the
// survivor in line with the primary, so holding the merge entry. (A primary restarted after
// writing the entry but before its replicas had it reports the merge too; recorded then, the
// replicas would take the survivor's wider range without the neighbour's rows.)
func (f *FSM) PendingMerges(node uint64, stats []*pcspb.ShardStats) []*pcspb.CmdMergeShards {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pcspb.CmdMergeShards
	for _, st := range stats {
		if st.MergedFrom == 0 || !allInLine(f.mu.st.cat.shardByID.at(st.ShardId), st) {
			continue
		}
		l, lok := f.mu.st.cat.shardByID.get(st.ShardId)
		r, rok := f.mu.st.cat.shardByID.get(st.MergedFrom)
		if lok && rok && l.Primary == node && r.Epoch.GetVersion() == st.MergedFromVersion &&
			max(l.Epoch.GetVersion(), r.Epoch.GetVersion())+1 == st.Version {
			out = append(out, &pcspb.CmdMergeShards{ShardId: l.Id, Version: l.Epoch.GetVersion(), SourceId: r.Id, SourceVersion: r.Epoch.GetVersion()})
		}
	}
	return out
}

// allInLine reports whether the primary's stats show every replica of sh at its own position.
func allInLine(sh *pcspb.Shard, st *pcspb.ShardStats) bool {
	if sh == nil {
		return false
	}
	own, ok := st.ReplicaPositions[sh.Primary]
	for _, r := range sh.Replicas {
		p, in := st.ReplicaPositions[r]
		ok = ok && in && p == own
	}
	return ok
}

// StaleReplicas returns the catalog's metadata of the replicas whose reported term, conf_ver or version
// (from a node's shard stats) is older than the catalog's, for the node to update.
func (f *FSM) StaleReplicas(node uint64, stats []*pcspb.ShardStats) []*pcspb.Shard {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pcspb.Shard
	for _, st := range stats {
		s, ok := f.mu.st.cat.shardByID.get(st.ShardId)
		if ok && holds(s, node) && (st.Term < s.Term || st.ConfVer < s.Epoch.GetConfVer() || st.Version < s.Epoch.GetVersion()) {
			out = append(out, s)
		}
	}
	return out
}

// Grants decides, from a node's shard stats, which primary grants its heartbeat answer
// renews (DESIGN §6): a shard the node reports leading is denied unless the catalog names the
// node its primary at the reported term and conf_ver; a shard the catalog makes the node
// primary of at a newer term than it reported is granted at the catalog's term. (PCS then
// holds back grants an earlier primary's may still overlap.)
func (f *FSM) Grants(node uint64, stats []*pcspb.ShardStats) (denied []uint64, grants []*pcspb.ShardGrant) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, st := range stats {
		s, ok := f.mu.st.cat.shardByID.get(st.ShardId)
		if st.Primary && (!ok || s.Primary != node || s.Term != st.Term || s.Epoch.GetConfVer() != st.ConfVer) {
			denied = append(denied, st.ShardId)
		}
		if ok && s.Primary == node && s.Term > st.Term {
			grants = append(grants, &pcspb.ShardGrant{ShardId: s.Id, Term: s.Term})
		}
	}
	return denied, grants
}

// KeyError is ShardsForKeys' refusal of one key (the index of keys); it wraps the reason.
type KeyError struct {
	Index int
	Err   error
}

func (e *KeyError) Error() string { return e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// ShardsForKeys routes many row keys of one table under one read lock. A key that does not
// route fails the call with a *KeyError naming it.
func (f *FSM) ShardsForKeys(table string, keys [][]byte) ([]*pcspb.Shard, Position, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pos := Position{f.mu.st.revision, f.mu.st.applied}
	te, err := f.tableLocked(table)
	if err != nil {
		return nil, pos, err
	}
	out := make([]*pcspb.Shard, len(keys))
	var rk []byte
	for i, key := range keys {
		if rk, err = te.spec.RoutingKey(key); err != nil {
			return nil, pos, &KeyError{Index: i, Err: fmt.Errorf("%w: key %d: %w", ErrInvalid, i, err)}
		}
		if out[i] = shardAt(te, rk); out[i] == nil {
			return nil, pos, &KeyError{Index: i, Err: fmt.Errorf("%w: table %q key %x", ErrShardNotFound, table, key)}
		}
	}
	return out, pos, nil
}
