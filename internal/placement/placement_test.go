package placement

import (
	"errors"
	"fmt"
	"testing"
)

func sixNodesThreeZones() []Node {
	var nodes []Node
	for i := 0; i < 6; i++ {
		nodes = append(nodes, Node{ID: uint64(i + 1), Eligible: true,
			Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3), "host": fmt.Sprintf("h%d", i)}})
	}
	return nodes
}

func TestThousandShardsIsolatedAndBalanced(t *testing.T) {
	nodes := sixNodesThreeZones()
	shards := make([]Shard, 1000)
	plan, err := Place(nodes, Policy{Replicas: 3, IsolationLabel: "zone"}, shards)
	if err != nil {
		t.Fatal(err)
	}
	count := map[uint64]int{}
	primaries := map[uint64]int{}
	zone := map[uint64]string{}
	for _, n := range nodes {
		zone[n.ID] = n.Labels["zone"]
	}
	for i, r := range plan {
		if len(r) != 3 {
			t.Fatalf("shard %d has %d replicas", i, len(r))
		}
		seen := map[string]bool{}
		for _, id := range r {
			if seen[zone[id]] {
				t.Fatalf("shard %d has two replicas in %s: %v", i, zone[id], r)
			}
			seen[zone[id]] = true
			count[id]++
		}
		primaries[r[0]]++
	}
	minC, maxC, minP, maxP := 1<<30, 0, 1<<30, 0
	for _, n := range nodes {
		minC, maxC = min(minC, count[n.ID]), max(maxC, count[n.ID])
		minP, maxP = min(minP, primaries[n.ID]), max(maxP, primaries[n.ID])
	}
	if maxC-minC > 1 {
		t.Fatalf("shard counts per node range %d..%d, want within ±1", minC, maxC)
	}
	if maxP-minP > 1 {
		t.Fatalf("primaries per node range %d..%d", minP, maxP)
	}
	// Deterministic.
	again, _ := Place(nodes, Policy{Replicas: 3, IsolationLabel: "zone"}, shards)
	if fmt.Sprint(again) != fmt.Sprint(plan) {
		t.Fatal("placement is not deterministic")
	}
}

func TestShardGroupsColocate(t *testing.T) {
	plan, err := Place(sixNodesThreeZones(), Policy{Replicas: 2}, []Shard{{Group: "g"}, {}, {Group: "g"}, {Group: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(plan[0]) != fmt.Sprint(plan[2]) {
		t.Fatalf("group g split: %v vs %v", plan[0], plan[2])
	}
}

func TestLoadAndExplicitNodes(t *testing.T) {
	nodes := sixNodesThreeZones()
	nodes[0].Shards = 100 // busy
	plan, err := Place(nodes, Policy{Replicas: 1}, []Shard{{}})
	if err != nil || plan[0][0] == 1 {
		t.Fatalf("placed on the busy node: %v %v", plan, err)
	}
	plan, err = Place(nodes, Policy{Replicas: 2, Nodes: []uint64{1, 4}}, []Shard{{}, {}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range plan {
		for _, id := range r {
			if id != 1 && id != 4 {
				t.Fatalf("explicit placement used node %d", id)
			}
		}
	}
}

func TestNotEnoughNodes(t *testing.T) {
	nodes := sixNodesThreeZones()
	for name, tc := range map[string]Policy{
		"more replicas than nodes": {Replicas: 7},
		"more replicas than zones": {Replicas: 4, IsolationLabel: "zone"},
		"unknown explicit node":    {Replicas: 1, Nodes: []uint64{99}},
		"explicit too few":         {Replicas: 3, Nodes: []uint64{1, 2}},
	} {
		if _, err := Place(nodes, tc, []Shard{{}}); !errors.Is(err, ErrNotEnoughNodes) {
			t.Errorf("%s: %v, want ErrNotEnoughNodes", name, err)
		}
	}
	nodes[0].Eligible, nodes[3].Eligible = false, false // zone z0 is down
	if _, err := Place(nodes, Policy{Replicas: 3, IsolationLabel: "zone"}, []Shard{{}}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Errorf("a zone down: %v", err)
	}
	if _, err := Place(nodes, Policy{Replicas: 0}, nil); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("zero replicas: %v", err)
	}
}

func TestAddOne(t *testing.T) {
	nodes := []Node{
		{ID: 1, Eligible: true, Labels: map[string]string{"zone": "a"}, Shards: 1},
		{ID: 2, Eligible: true, Labels: map[string]string{"zone": "b"}, Shards: 1},
		{ID: 3, Eligible: true, Labels: map[string]string{"zone": "a"}, Shards: 0},
		{ID: 4, Eligible: true, Labels: map[string]string{"zone": "c"}, Shards: 5},
		{ID: 5, Eligible: false, Labels: map[string]string{"zone": "d"}},
	}
	cases := []struct {
		name   string
		policy Policy
		have   []uint64
		want   uint64
		err    bool
	}{
		{"least loaded", Policy{Replicas: 3}, []uint64{1, 2}, 3, false},
		{"isolation", Policy{Replicas: 3, IsolationLabel: "zone"}, []uint64{1, 2}, 4, false},
		{"restricted", Policy{Replicas: 3, Nodes: []uint64{1, 2, 4}}, []uint64{1, 2}, 4, false},
		{"none left", Policy{Replicas: 3, IsolationLabel: "zone"}, []uint64{1, 2, 4}, 0, true},
		{"down node never", Policy{Replicas: 3, Nodes: []uint64{1, 2, 5}}, []uint64{1, 2}, 0, true},
	}
	for _, c := range cases {
		got, err := AddOne(nodes, c.policy, c.have)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: AddOne = %d, %v; want %d, error %v", c.name, got, err, c.want, c.err)
		}
		if err != nil && !errors.Is(err, ErrNotEnoughNodes) {
			t.Errorf("%s: error %v is not ErrNotEnoughNodes", c.name, err)
		}
	}
}

// TestPlaceByScore: with the balancer's scores, the emptiest node by score (a bigger node with
// more shards) is chosen first, and each planned shard raises its score by its step.
func TestPlaceByScore(t *testing.T) {
	nodes := []Node{
		{ID: 1, Eligible: true, Shards: 10, Score: 0.25, ScoreStep: 0.25},
		{ID: 2, Eligible: true, Shards: 20, Score: -0.25, ScoreStep: 0.125}, // twice the capacity
		{ID: 3, Eligible: true, Shards: 10, Score: 0.25, ScoreStep: 0.25},
	}
	plan, err := Place(nodes, Policy{Replicas: 1}, make([]Shard, 8))
	if err != nil {
		t.Fatal(err)
	}
	count := map[uint64]int{}
	for _, r := range plan {
		count[r[0]]++
	}
	// Node 2 takes shards until its score reaches the others' (4 steps), then each takes the
	// lowest score: nodes 1 and 3 one each (to 0.5), node 2 two (to 0.5).
	if count[2] != 6 || count[1] != 1 || count[3] != 1 {
		t.Fatalf("placement by score: %v", count)
	}
}
