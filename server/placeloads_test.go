package server

import (
	"testing"
	"time"

	"github.com/postdb/pcs/internal/placement"
)

// TestPlaceLoadsCache: the loads are computed once while fresh, count the replicas placed since
// (the primary's node a primary more), are handed out as copies, and are computed again once
// stale or reset.
func TestPlaceLoadsCache(t *testing.T) {
	var p placeLoads
	computed := 0
	compute := func() map[uint64]placement.Node {
		computed++
		return map[uint64]placement.Node{1: {ID: 1, Score: 1, ScoreStep: 0.5, Shards: 10}, 2: {ID: 2, Score: 2, ScoreStep: 0.25, Shards: 20}}
	}
	now := time.Unix(100, 0)
	got := p.get(now, compute)
	got[1] = placement.Node{} // a copy: the cache is not changed through it
	p.placed([]placement.Replicas{{1, 2}, {2, 1}, {1, 3}})
	got = p.get(now.Add(placeLoadsMinAge/2), compute)
	if computed != 1 {
		t.Fatalf("computed %d times while fresh", computed)
	}
	if n := got[1]; n.Shards != 13 || n.Primaries != 2 || n.Score != 2.5 {
		t.Fatalf("node 1 after 3 replicas placed (2 primaries): %+v", n)
	}
	if n := got[2]; n.Shards != 22 || n.Primaries != 1 || n.Score != 2.5 {
		t.Fatalf("node 2 after 2 replicas placed (1 primary): %+v", n)
	}
	if _, ok := got[3]; ok {
		t.Fatal("a node not in the computed loads appeared")
	}
	if got = p.get(now.Add(placeLoadsMinAge), compute); computed != 2 || got[1].Shards != 10 {
		t.Fatalf("stale loads not computed again (computed %d, node 1 %+v)", computed, got[1])
	}
	p.reset()
	if p.get(now.Add(placeLoadsMinAge), compute); computed != 3 {
		t.Fatalf("reset loads not computed again (computed %d)", computed)
	}
	if p.get(now.Add(-time.Second), compute); computed != 4 {
		t.Fatal("a clock that went back did not make the loads stale")
	}
}
