package checker

import (
	"slices"
	"testing"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/view"
)

func steps(op *operator.Operator) []operator.Step {
	if op == nil {
		return nil
	}
	return op.Steps
}

func TestReplica(t *testing.T) {
	type S = operator.Step
	for _, tc := range []struct {
		name     string
		nodes    int
		replicas []uint64
		learners []uint64
		down     []uint64
		offline  []uint64
		public   bool
		want     []S
	}{
		{name: "complete", nodes: 4, replicas: []uint64{1, 2, 3}, public: true},
		{name: "one missing: the least loaded other node", nodes: 4, replicas: []uint64{1, 2}, public: true,
			want: []S{{Kind: operator.AddLearner, Node: 4}, {Kind: operator.PromoteLearner, Node: 4}}},
		{name: "one missing, a learner catching up", nodes: 4, replicas: []uint64{1, 2}, learners: []uint64{3}, public: true},
		{name: "table not public", nodes: 4, replicas: []uint64{1, 2}},
		{name: "primary down: failover's", nodes: 4, replicas: []uint64{1, 2}, down: []uint64{1}, public: true},
		{name: "one extra: the one on the offline node", nodes: 4, replicas: []uint64{1, 2, 3, 4}, offline: []uint64{3}, public: true,
			want: []S{{Kind: operator.RemoveReplica, Node: 3}}},
		{name: "no node to add to", nodes: 2, replicas: []uint64{1, 2}, public: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := schedtest.Cluster(tc.nodes, 0, 3, "")
			v.Tables[1].Public = tc.public
			// Load: node 3 holds more than node 4, so 4 is the least loaded target.
			schedtest.Shard(v, 0, 3)
			sh := schedtest.Shard(v, 0, tc.replicas...)
			sh.Learners = tc.learners
			for _, n := range tc.down {
				v.Node(n).State = view.Down
			}
			for _, n := range tc.offline {
				v.Node(n).State = view.Offline
			}
			got := steps(Replica{}.Check(schedtest.Env(v), sh))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLearner(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas []uint64
		learner  uint64
		inLine   bool
		down     bool
		want     []operator.Step
	}{
		{name: "in line: promoted", replicas: []uint64{1, 2}, learner: 3, inLine: true,
			want: []operator.Step{{Kind: operator.PromoteLearner, Node: 3}}},
		{name: "catching up: left alone", replicas: []uint64{1, 2}, learner: 3},
		{name: "not needed: removed", replicas: []uint64{1, 2, 4}, learner: 3, inLine: true,
			want: []operator.Step{{Kind: operator.RemoveReplica, Node: 3}}},
		{name: "on a down node: removed", replicas: []uint64{1, 2}, learner: 3, down: true,
			want: []operator.Step{{Kind: operator.RemoveReplica, Node: 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := schedtest.Cluster(4, 0, 3, "")
			sh := schedtest.Shard(v, 0, tc.replicas...)
			sh.Learners = []uint64{tc.learner}
			if tc.inLine {
				sh.InLine = append(sh.InLine, tc.learner)
			}
			if tc.down {
				v.Node(tc.learner).State = view.Down
			}
			if got := steps(Learner{}.Check(schedtest.Env(v), sh)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlacement(t *testing.T) {
	// Zones a, b, c, a, b, c for nodes 1..6.
	for _, tc := range []struct {
		name     string
		replicas []uint64
		allowed  []uint64
		want     []operator.Step
	}{
		{name: "isolated", replicas: []uint64{1, 2, 3}},
		{name: "two in zone a: the one that is not primary moves to zone c", replicas: []uint64{1, 2, 4},
			want: operator.Move(&view.Shard{Primary: 1}, 4, 3)},
		{name: "outside the table's nodes", replicas: []uint64{1, 2, 6}, allowed: []uint64{1, 2, 3},
			want: operator.Move(&view.Shard{Primary: 1}, 6, 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := schedtest.Cluster(6, 3, 3, "zone")
			v.Tables[1].Nodes = tc.allowed
			sh := schedtest.Shard(v, 0, tc.replicas...)
			op := Placement{}.Check(schedtest.Env(v), sh)
			got := steps(op)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if op != nil {
				after := append(slices.DeleteFunc(slices.Clone(tc.replicas), func(r uint64) bool { return r == op.From }), op.To)
				if !v.Isolated(v.Tables[1], after) {
					t.Fatalf("after the move %v breaks isolation", after)
				}
			}
		})
	}
}
