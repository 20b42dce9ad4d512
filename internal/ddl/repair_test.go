package ddl

import (
	"testing"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// TestMissing: an up node that should hold a replica or learner and does not report it is told
// to create it; a node that is not up, or a table being created or dropped, is not.
func TestMissing(t *testing.T) {
	tbl := &pcspb.Table{Id: 1, Replicas: 3, State: pcspb.TableState_TABLE_STATE_PUBLIC}
	sh := &pcspb.Shard{Id: 7, TableId: 1, Term: 2, Primary: 1, Replicas: []uint64{1, 2}, Learners: []uint64{3}, Epoch: &pcspb.ShardEpoch{ConfVer: 3, Version: 1}}
	cat := &fakeCatalog{tables: []*pcspb.Table{tbl}, shards: map[uint64][]*pcspb.Shard{1: {sh}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Down, 3: cluster.Up},
		held: map[uint64]map[uint64]bool{1: {7: true}}}
	m := Missing(cat, live)
	if len(m) != 1 || len(m[3]) != 1 || m[3][0].Id != 7 {
		t.Fatalf("missing: %v", m)
	}
	live.held[3] = map[uint64]bool{7: true}
	if m = Missing(cat, live); len(m) != 0 {
		t.Fatalf("held learner still missing: %v", m)
	}
	delete(live.held, 3)
	tbl.State = pcspb.TableState_TABLE_STATE_DROPPING
	if m = Missing(cat, live); len(m) != 0 {
		t.Fatalf("dropping table: %v", m)
	}
}

// TestMissingBounded: a node owed more than MaxNodeCommands replicas (an empty disk, a cluster
// of new nodes) is given the oldest tables' first, MaxNodeCommands of them, and the rest once
// it holds those.
func TestMissingBounded(t *testing.T) {
	const n = MaxNodeCommands + 500
	big := make([]*pcspb.Shard, n)
	for i := range big {
		big[i] = &pcspb.Shard{Id: uint64(100 + i), Replicas: []uint64{1, 2}}
	}
	public := pcspb.TableState_TABLE_STATE_PUBLIC
	cat := &fakeCatalog{tables: []*pcspb.Table{{Id: 1, State: public}, {Id: 2, State: public}},
		shards: map[uint64][]*pcspb.Shard{1: big, 2: {{Id: 50, Replicas: []uint64{3}}}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Up}, held: map[uint64]map[uint64]bool{1: {}, 2: {}, 3: {}}}
	m := Missing(cat, live)
	if len(m[1]) != MaxNodeCommands || len(m[2]) != MaxNodeCommands || len(m[3]) != 1 {
		t.Fatalf("first pass: %d, %d, %d replicas", len(m[1]), len(m[2]), len(m[3]))
	}
	if m[1][0].Id != 100 || m[1][MaxNodeCommands-1].Id != 100+MaxNodeCommands-1 {
		t.Fatalf("node 1 is owed shards %d..%d, want the first %d in order", m[1][0].Id, m[1][len(m[1])-1].Id, MaxNodeCommands)
	}
	for _, s := range m[1] { // the nodes make what they were told
		live.held[1][s.Id], live.held[2][s.Id] = true, true
	}
	if m = Missing(cat, live); len(m[1]) != n-MaxNodeCommands || len(m[2]) != n-MaxNodeCommands {
		t.Fatalf("second pass: %d, %d replicas, want the %d left", len(m[1]), len(m[2]), n-MaxNodeCommands)
	}
}
