package main

import (
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

func TestShardProblems(t *testing.T) {
	node := func(id uint64, state, zone string) *pcspb.NodeInfo {
		return &pcspb.NodeInfo{Node: &pcspb.DataNode{Id: id, Labels: map[string]string{"zone": zone}, Offline: state == "offline"}, State: state}
	}
	nodes := map[uint64]*pcspb.NodeInfo{1: node(1, "up", "a"), 2: node(2, "up", "b"), 3: node(3, "up", "c"), 4: node(4, "down", "a"),
		5: node(5, "offline", "c"), 6: node(6, "up", "a")}
	tb := &pcspb.Table{Name: "t", Replicas: 3, IsolationLabel: "zone"}
	for _, tc := range []struct {
		kind     string
		replicas []uint64
		want     int
		learners []uint64
	}{
		{"down-replica", []uint64{1, 2, 3}, 0, nil},
		{"down-replica", []uint64{1, 2, 5}, 0, nil},         // offline is draining, not down
		{"down-replica", []uint64{1, 2, 4}, 2, []uint64{9}}, // node 4 down, learner on unknown node 9
		{"pending", []uint64{1, 2, 3}, 0, nil},
		{"pending", []uint64{1, 2}, 1, []uint64{3}},
		{"under-replicated", []uint64{1, 2, 3}, 0, nil},
		{"under-replicated", []uint64{1, 2}, 1, nil},
		{"under-replicated", []uint64{1, 2, 4}, 2, nil}, // node 4 down; 2 of 3 up
		{"misplaced", []uint64{1, 2, 3}, 0, nil},
		{"misplaced", []uint64{1, 2, 6}, 1, nil}, // two in zone a
		{"misplaced", []uint64{1, 2, 5}, 1, nil}, // node 5 offline
		{"misplaced", []uint64{1, 2, 9}, 1, nil}, // node 9 unknown
	} {
		got := shardProblems(tb, &pcspb.Shard{Id: 1, Replicas: tc.replicas, Learners: tc.learners}, nodes, tc.kind)
		if len(got) != tc.want {
			t.Errorf("%s %v: %v, want %d problems", tc.kind, tc.replicas, got, tc.want)
		}
	}
}
