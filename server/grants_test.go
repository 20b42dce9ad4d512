package server

import (
	"slices"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

func leads(ids ...uint64) []*pcspb.ShardStats {
	var out []*pcspb.ShardStats
	for _, id := range ids {
		out = append(out, &pcspb.ShardStats{ShardId: id, Term: 2, Primary: true})
	}
	return out
}

// TestFences: a new primary's grants are held back while the old primary's may run; the fence
// lifts when the old primary reports the new term, when it no longer holds the shard, or when
// its lease and margin have passed; an old primary silent long enough is not fenced at all;
// after a snapshot restore nothing is granted for lease + margin.
func TestFences(t *testing.T) {
	const lease = time.Second
	f := newFences(lease)
	now := 10 * time.Second
	f.changed(1, 100, 2, now, 0) // shard 1: node 100 replaced at term 2
	f.changed(2, 100, 2, now, 0)
	f.changed(3, 100, 2, now, 0)
	f.changed(4, 100, 2, now, 2*lease) // node 100 silent for longer than its lease: no fence

	denied, grants := f.filter(200, leads(1, 4), nil, []*pcspb.ShardGrant{{ShardId: 2, Term: 2}, {ShardId: 4, Term: 2}}, now)
	if !slices.Equal(denied, []uint64{1}) || len(grants) != 1 || grants[0].ShardId != 4 {
		t.Fatalf("denied %v, grants %v; want 1 denied and only shard 4 granted", denied, grants)
	}
	// The old primary itself is not fenced from renewing (PCS's catalog decides that).
	if denied, _ := f.filter(100, leads(1), nil, nil, now); len(denied) != 0 {
		t.Fatalf("old primary's own report denied by its fence: %v", denied)
	}
	// Node 100 reports shard 1 at the new term and no longer holds shard 2.
	f.observe(&pcspb.NodeHeartbeat{NodeId: 100, HeldShards: []uint64{1, 3},
		ShardStats: []*pcspb.ShardStats{{ShardId: 1, Term: 2}, {ShardId: 3, Term: 1, Primary: true}}}, now)
	denied, _ = f.filter(200, leads(1, 2, 3), nil, nil, now)
	if !slices.Equal(denied, []uint64{3}) {
		t.Fatalf("denied %v; want only shard 3 (its old primary still claims it)", denied)
	}
	// Lease + margin later, shard 3's fence has run out.
	if denied, _ = f.filter(200, leads(3), nil, nil, now+lease); len(denied) != 0 {
		t.Fatalf("denied %v after the fence ran out", denied)
	}
	if f.len() != 0 {
		t.Fatalf("%d fences left", f.len())
	}
	f.restored(now)
	if denied, grants := f.filter(200, leads(5), nil, []*pcspb.ShardGrant{{ShardId: 6, Term: 3}}, now+lease/2); !slices.Equal(denied, []uint64{5}) || len(grants) != 0 {
		t.Fatalf("after a restore: denied %v, grants %v; want everything withheld", denied, grants)
	}
	if denied, _ := f.filter(200, leads(5), nil, nil, now+lease); len(denied) != 0 {
		t.Fatalf("denied %v once the restore's window passed", denied)
	}
}

// TestFencesSwept: fences of shards nobody reports any more go once they have run out, and
// those still running stay.
func TestFencesSwept(t *testing.T) {
	f := newFences(time.Second)
	for i := uint64(1); i < sweepFencesAt; i++ {
		f.changed(i, 100, 2, 0, 0) // until 1 s
	}
	f.changed(sweepFencesAt, 100, 2, 500*time.Millisecond, 0) // until 1.5 s
	f.changed(sweepFencesAt+1, 100, 2, 1200*time.Millisecond, 0)
	if n := f.len(); n != 2 {
		t.Fatalf("%d fences after the sweep, want the 2 still running", n)
	}
	if denied, _ := f.filter(200, leads(sweepFencesAt), nil, nil, 1200*time.Millisecond); len(denied) != 1 {
		t.Fatalf("a running fence was swept: denied %v", denied)
	}
}
