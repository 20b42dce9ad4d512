package ddl

import (
	"slices"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

type fakePositions struct {
	*fakeLive
	stats map[[2]uint64]*pcspb.ShardStats // (node, shard)
}

func (f *fakePositions) ShardStats(node, shard uint64) *pcspb.ShardStats {
	return f.stats[[2]uint64{node, shard}]
}

// TestRepair walks one shard through repair: below its replica count it gets a learner on the
// picked node; the learner is told to create its replica; it is promoted only once its primary
// reports it in line in the current term and configuration; a learner on a lost node leaves.
func TestRepair(t *testing.T) {
	tbl := &pcspb.Table{Id: 1, Replicas: 3, State: pcspb.TableState_TABLE_STATE_PUBLIC}
	sh := &pcspb.Shard{Id: 7, TableId: 1, Term: 2, Primary: 1, Replicas: []uint64{1, 2}, Epoch: &pcspb.ShardEpoch{ConfVer: 3, Version: 1}}
	cat := &fakeCatalog{tables: []*pcspb.Table{tbl}, shards: map[uint64][]*pcspb.Shard{1: {sh}}}
	live := &fakePositions{fakeLive: &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Up},
		held: map[uint64]map[uint64]bool{1: {7: true}, 2: {7: true}}}, stats: map[[2]uint64]*pcspb.ShardStats{}}
	pick := func(_ *pcspb.Table, have []uint64) (uint64, bool) {
		for _, n := range []uint64{1, 2, 3} {
			if !slices.Contains(have, n) {
				return n, true
			}
		}
		return 0, false
	}
	st := Repair(cat, live, nil, pick)
	if len(st.Changes) != 1 || st.Changes[0].AddLearner != 3 || st.Changes[0].Term != 2 || st.Changes[0].ConfVer != 3 {
		t.Fatalf("below count: %v", st.Changes)
	}
	// The learner is added; until it holds the replica it is told to create it, and nothing else.
	sh.Learners, sh.Epoch = []uint64{3}, &pcspb.ShardEpoch{ConfVer: 4, Version: 1}
	st = Repair(cat, live, nil, pick)
	if len(st.Changes) != 0 || len(st.Create[3]) != 1 {
		t.Fatalf("learner added: changes %v creates %v", st.Changes, st.Create)
	}
	live.held[3] = map[uint64]bool{7: true}
	// A report from an older configuration, or one where the learner lags, promotes nothing.
	live.stats[[2]uint64{1, 7}] = &pcspb.ShardStats{ShardId: 7, Term: 2, ConfVer: 3, ReplicaPositions: map[uint64]uint64{1: 10, 3: 10}}
	if st = Repair(cat, live, nil, pick); len(st.Changes) != 0 {
		t.Fatalf("stale report promoted: %v", st.Changes)
	}
	live.stats[[2]uint64{1, 7}] = &pcspb.ShardStats{ShardId: 7, Term: 2, ConfVer: 4, ReplicaPositions: map[uint64]uint64{1: 10, 3: 9}}
	if st = Repair(cat, live, nil, pick); len(st.Changes) != 0 {
		t.Fatalf("lagging learner promoted: %v", st.Changes)
	}
	live.stats[[2]uint64{1, 7}].ReplicaPositions[3] = 10
	if st = Repair(cat, live, nil, pick); len(st.Changes) != 1 || st.Changes[0].PromoteLearner != 3 {
		t.Fatalf("caught-up learner: %v", st.Changes)
	}
	// A learner on a lost node leaves; a shard whose primary is lost is Failover's.
	if st = Repair(cat, live, map[uint64]bool{3: true}, pick); len(st.Changes) != 1 || st.Changes[0].RemoveNode != 3 {
		t.Fatalf("lost learner: %v", st.Changes)
	}
	if st = Repair(cat, live, map[uint64]bool{1: true}, pick); len(st.Changes) != 0 {
		t.Fatalf("lost primary: %v", st.Changes)
	}
	// Tables being created or dropped are not repaired.
	tbl.State = pcspb.TableState_TABLE_STATE_DROPPING
	if st = Repair(cat, live, nil, pick); len(st.Changes) != 0 || len(st.Create) != 0 {
		t.Fatalf("dropping table repaired: %v %v", st.Changes, st.Create)
	}
}
