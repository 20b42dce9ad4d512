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
