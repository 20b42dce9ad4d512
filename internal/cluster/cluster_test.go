package cluster

import (
	"math"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
)

func TestLivenessAndWarmup(t *testing.T) {
	clk := clock.NewManual(0)
	r := New(clk, Config{DisconnectAfter: time.Second, DownAfter: 3 * time.Second, Warmup: 5 * time.Second})
	r.Observe(&pcspb.NodeHeartbeat{NodeId: 1, HeldShards: []uint64{7}})
	steps := []struct {
		at       time.Duration
		n1, n2   State
		warmedUp bool
	}{
		{0, Up, Disconnected, false},
		{1500 * time.Millisecond, Disconnected, Disconnected, false},
		{4 * time.Second, Disconnected, Disconnected, false}, // silent past DownAfter, but warming up
		{5 * time.Second, Down, Down, true},
	}
	var now time.Duration
	for _, s := range steps {
		clk.Advance(s.at - now)
		now = s.at
		if got := r.State(1); got != s.n1 {
			t.Fatalf("at %v: node 1 %s, want %s", s.at, got, s.n1)
		}
		if got := r.State(2); got != s.n2 {
			t.Fatalf("at %v: node 2 (never heard) %s, want %s", s.at, got, s.n2)
		}
		if r.WarmedUp() != s.warmedUp {
			t.Fatalf("at %v: warmed up %v", s.at, !s.warmedUp)
		}
	}
	r.Observe(&pcspb.NodeHeartbeat{NodeId: 1})
	if r.State(1) != Up || r.Holds(1, 7) {
		t.Fatal("a new heartbeat did not replace the old view")
	}
	r.Reset()
	if r.State(1) != Disconnected || r.Heard(1) {
		t.Fatal("a new term must start with no node down and nothing heard")
	}
}

func TestShardLoadAverage(t *testing.T) {
	clk := clock.NewManual(0)
	r := New(clk, Config{DisconnectAfter: time.Second, DownAfter: 1300 * time.Millisecond, Warmup: 10 * time.Second})
	beat := func(stats ...*pcspb.ShardStats) { r.Observe(&pcspb.NodeHeartbeat{NodeId: 1, ShardStats: stats}) }
	st := func(id, version, from uint64, writes float64) *pcspb.ShardStats {
		return &pcspb.ShardStats{ShardId: id, Version: version, SplitFrom: from, WritePerSec: writes, Primary: true}
	}
	beat(st(1, 1, 0, 1000))
	if got := r.ShardLoad(1).Writes; got != 1000 {
		t.Fatalf("first report: %v", got)
	}
	// A jump shows half within one half-life.
	clk.Advance(LoadHalfLife)
	beat(st(1, 1, 0, 3000))
	if got := r.ShardLoad(1).Writes; math.Abs(got-2000) > 1e-6 {
		t.Fatalf("after one half-life: %v, want 2000", got)
	}
	// A secondary's report does not count.
	r.Observe(&pcspb.NodeHeartbeat{NodeId: 2, ShardStats: []*pcspb.ShardStats{{ShardId: 1, Version: 1, WritePerSec: 0}}})
	if got := r.ShardLoad(1).Writes; math.Abs(got-2000) > 1e-6 {
		t.Fatalf("a secondary's report moved the average: %v", got)
	}
	// A split halves it between the halves, whichever half reports first.
	for _, childFirst := range []bool{true, false} {
		r.Reset()
		beat(st(1, 1, 0, 1000))
		split := []*pcspb.ShardStats{st(1, 2, 0, 1000), st(2, 2, 1, 0)}
		if childFirst {
			split[0], split[1] = split[1], split[0]
		}
		beat(split...)
		if a, b := r.ShardLoad(1).Writes, r.ShardLoad(2).Writes; a != 500 || b != 500 {
			t.Fatalf("child first %v: halves %v and %v, want 500 each", childFirst, a, b)
		}
	}
	// Averages of shards nobody reports go after five minutes.
	clk.Advance(6 * time.Minute)
	beat(st(9, 1, 0, 1))
	if got := r.ShardLoad(1); got != (Load{}) {
		t.Fatalf("stale average kept: %v", got)
	}
}

// TestHeldChanges: Observe reports a change of a node's held set (and only then moves the held
// generation), takes an unsorted list with duplicates as its sorted set, and a Reset counts as
// a change.
func TestHeldChanges(t *testing.T) {
	r := New(clock.NewManual(0), Config{DisconnectAfter: time.Second, DownAfter: 3 * time.Second})
	beat := func(node uint64, held ...uint64) (bool, uint64) {
		changed := r.Observe(&pcspb.NodeHeartbeat{NodeId: node, HeldShards: held})
		return changed, r.HeldGeneration()
	}
	steps := []struct {
		node    uint64
		held    []uint64
		changed bool
	}{
		{1, []uint64{3, 1, 2, 2}, true}, // first heartbeat
		{1, []uint64{1, 2, 3}, false},   // the same set, sorted this time
		{1, []uint64{3, 2, 1}, false},   // the same set again
		{2, []uint64{1, 2, 3}, true},    // another node's first
		{1, []uint64{1, 2}, true},       // one dropped
		{1, []uint64{1, 2}, false},
		{1, nil, true},
		{1, nil, false},
	}
	prev := r.HeldGeneration()
	for i, s := range steps {
		changed, gen := beat(s.node, s.held...)
		if changed != s.changed || (gen != prev) != s.changed {
			t.Fatalf("step %d (node %d holds %v): changed %v, generation %d -> %d; want changed %v", i, s.node, s.held, changed, prev, gen, s.changed)
		}
		prev = gen
	}
	if !r.Holds(2, 3) || r.Holds(1, 3) || r.Holds(2, 4) {
		t.Fatal("Holds disagrees with the last heartbeats")
	}
	r.Reset()
	if r.HeldGeneration() == prev {
		t.Fatal("a Reset did not change the held generation")
	}
	if changed, _ := beat(1); !changed {
		t.Fatal("the first heartbeat after a Reset is not a change")
	}
}
