package scheduler_test

import (
	"testing"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

const mib = 1 << 20

// spread places n shards of size bytes round-robin over the first k nodes, 3 replicas each.
func spread(v *view.Cluster, n, k int, size uint64) {
	for i := 0; i < n; i++ {
		a, b, c := uint64(i%k+1), uint64((i+1)%k+1), uint64((i+2)%k+1)
		schedtest.Shard(v, size, a, b, c)
	}
}

func TestBalanceReplica(t *testing.T) {
	for _, tc := range []struct {
		name      string
		build     func() *view.Cluster
		wantMoves bool
		check     func(t *testing.T, v *view.Cluster, ops []*operator.Operator)
	}{
		{name: "scale-out: moves go from old nodes to new ones", wantMoves: true,
			build: func() *view.Cluster { v := schedtest.Cluster(6, 0, 3, ""); spread(v, 60, 3, 64*mib); return v },
			check: func(t *testing.T, v *view.Cluster, ops []*operator.Operator) {
				for _, op := range ops {
					if op.From > 3 || op.To <= 3 || op.Kind != operator.Balance {
						t.Errorf("move %d -> %d (%s)", op.From, op.To, op.Kind)
					}
				}
			}},
		{name: "balanced: nothing", build: func() *view.Cluster { v := schedtest.Cluster(3, 0, 3, ""); spread(v, 60, 3, 64*mib); return v }},
		{name: "one big shard among empty ones: nothing", build: func() *view.Cluster {
			v := schedtest.Cluster(10, 0, 3, "")
			schedtest.Shard(v, 10*mib, 1, 2, 3)
			for i := 0; i < 99; i++ {
				schedtest.Shard(v, 0, uint64(i%10+1), uint64((i+1)%10+1), uint64((i+2)%10+1))
			}
			return v
		}},
		{name: "inside the start band: nothing", build: func() *view.Cluster {
			// 4 nodes: 3 hold 25 replicas of 64 MiB shards... one holds 1 more (one shard's worth).
			v := schedtest.Cluster(4, 0, 1, "")
			for i := 0; i < 101; i++ {
				schedtest.Shard(v, 64*mib, uint64(i%4+1))
			}
			return v
		}},
		{name: "zones: a new node takes only its own zone's replicas", wantMoves: true,
			build: func() *view.Cluster {
				v := schedtest.Cluster(3, 3, 3, "zone") // a, b, c
				spread(v, 30, 3, 64*mib)
				v.Nodes = append(v.Nodes, &view.Node{ID: 4, Labels: map[string]string{"zone": "a"}, State: view.Up, Heard: true})
				return v
			},
			check: func(t *testing.T, v *view.Cluster, ops []*operator.Operator) {
				for _, op := range ops {
					if op.From != 1 || op.To != 4 {
						t.Errorf("move %d -> %d crosses zones", op.From, op.To)
					}
				}
			}},
		{name: "capacity: the bigger node is the target", wantMoves: true,
			build: func() *view.Cluster {
				v := schedtest.Cluster(4, 0, 1, "")
				for _, n := range v.Nodes {
					n.Capacity = 1 << 40
				}
				v.Nodes[3].Capacity = 2 << 40
				for i := 0; i < 100; i++ {
					schedtest.Shard(v, 64*mib, uint64(i%4+1))
				}
				return v
			},
			check: func(t *testing.T, v *view.Cluster, ops []*operator.Operator) {
				for _, op := range ops {
					if op.To != 4 {
						t.Errorf("move to %d, want the double-capacity node 4", op.To)
					}
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.build()
			env := schedtest.Env(v)
			ops := (&scheduler.BalanceReplica{}).Schedule(env, 1000)
			if got := len(ops) > 0; got != tc.wantMoves {
				t.Fatalf("%d moves, want moves: %v", len(ops), tc.wantMoves)
			}
			seen := map[uint64]bool{}
			for _, op := range ops {
				if seen[op.Shard] {
					t.Fatalf("shard %d moved twice in one round", op.Shard)
				}
				seen[op.Shard] = true
			}
			if tc.check != nil {
				tc.check(t, v, ops)
			}
			// The loads account for the operators proposed, and no node is pushed across its
			// share by more than one shard (no overshoot, so nothing will move back).
			l := env.Loads
			for _, ld := range l.List {
				share := ld.Weight * float64(l.Count)
				before := 0
				for _, sh := range v.Shards {
					if sh.Holds(ld.Node.ID) {
						before++
					}
				}
				after := float64(ld.Count)
				if (float64(before) > share && after < share-1) || (float64(before) < share && after > share+1) {
					t.Errorf("node %d: %d replicas, %.0f after the round, share %.1f: overshoot", ld.Node.ID, before, after, share)
				}
			}
		})
	}
}

func TestBalanceReplicaSkipsBusyAndCooling(t *testing.T) {
	v := schedtest.Cluster(4, 0, 1, "")
	for i := 0; i < 40; i++ {
		schedtest.Shard(v, 64*mib, uint64(i%2+1)) // nodes 1 and 2 hold everything
	}
	env := schedtest.Env(v)
	env.HasOp = func(id uint64) bool { return id%2 == 0 }
	env.Cooling = func(id, node uint64) bool { return id%3 == 0 }
	for _, op := range (&scheduler.BalanceReplica{}).Schedule(env, 1000) {
		if op.Shard%2 == 0 || op.Shard%3 == 0 {
			t.Fatalf("shard %d moved: busy or cooling", op.Shard)
		}
	}
	env = schedtest.Env(v)
	env.CanSnapshot = func(operator.Kind, uint64, uint64) bool { return false }
	if ops := (&scheduler.BalanceReplica{}).Schedule(env, 1000); len(ops) != 0 {
		t.Fatalf("%d moves without snapshot budget", len(ops))
	}
}

func TestBalancePrimary(t *testing.T) {
	v := schedtest.Cluster(3, 0, 3, "")
	for i := 0; i < 30; i++ {
		schedtest.Shard(v, 0, 1, 2, 3) // node 1 leads all 30
	}
	env := schedtest.Env(v)
	ops := (&scheduler.BalancePrimary{}).Schedule(env, 1000)
	to := map[uint64]int{}
	for _, op := range ops {
		if len(op.Steps) != 1 || op.Steps[0].Kind != operator.TransferPrimary {
			t.Fatalf("not a transfer: %v", op)
		}
		to[op.Steps[0].Node]++
	}
	if len(ops) < 18 || to[2] < 9 || to[3] < 9 {
		t.Fatalf("%d transfers %v, want about 10 to each of nodes 2 and 3", len(ops), to)
	}
	// A replica not in line is never made primary.
	v = schedtest.Cluster(2, 0, 2, "")
	for i := 0; i < 10; i++ {
		sh := schedtest.Shard(v, 0, 1, 2)
		sh.InLine = []uint64{1}
	}
	if ops := (&scheduler.BalancePrimary{}).Schedule(schedtest.Env(v), 1000); len(ops) != 0 {
		t.Fatalf("transfer to a replica not in line: %v", ops)
	}
}

func TestDrain(t *testing.T) {
	v := schedtest.Cluster(5, 0, 3, "")
	schedtest.Shard(v, mib, 1, 2, 3) // led by the drained node
	schedtest.Shard(v, mib, 2, 1, 3) // a replica on it
	l := schedtest.Shard(v, mib, 2, 3, 4)
	l.Learners = []uint64{1} // a learner on it
	v.Node(1).State = view.Offline
	ops := (&scheduler.Drain{}).Schedule(schedtest.Env(v), 100)
	if len(ops) != 1 || ops[0].Shard != 1 || ops[0].Steps[0].Kind != operator.TransferPrimary || ops[0].Steps[0].Node == 1 {
		t.Fatalf("while it leads a shard only its primaries move: %v", ops)
	}
	// Once it leads nothing, its replicas move and its learner is dropped.
	v.Shards[0].Primary, v.Shards[0].Replicas = 2, []uint64{2, 1, 3}
	ops = (&scheduler.Drain{}).Schedule(schedtest.Env(v), 100)
	if len(ops) != 3 {
		t.Fatalf("%d operators, want 3: %v", len(ops), ops)
	}
	for _, op := range ops {
		if op.From != 1 && !(op.Shard == 3 && op.Steps[0] == (operator.Step{Kind: operator.RemoveReplica, Node: 1})) {
			t.Errorf("operator %v does not take node 1's replica away", op)
		}
		if op.To != 0 && (op.To == 1 || op.To == 2 && op.Shard != 3 || op.To == 3) {
			t.Errorf("replica of shard %d moved to %d, which holds it or is drained", op.Shard, op.To)
		}
	}
}

// TestTargetSkipsLowSpace: a node whose replicas take more of its capacity than the low-space
// ratio is no target for a new replica, however few replicas it has; one of unknown capacity
// is.
func TestTargetSkipsLowSpace(t *testing.T) {
	v := schedtest.Cluster(4, 0, 3, "")
	for _, n := range v.Nodes {
		n.Capacity = 1000 * mib
	}
	v.Nodes[3].Capacity = 100 * mib
	schedtest.Shard(v, 90*mib, 4) // node 4: 90 % used by one big shard
	sh := schedtest.Shard(v, mib, 1, 2, 3)
	env := schedtest.Env(v)
	env.LowSpaceRatio = 0.8
	if to := scheduler.Target(env, sh, 1, nil); to != 0 {
		t.Fatalf("target %d for a shard whose only other node is 90 %% full", to)
	}
	env.LowSpaceRatio = 0.95
	if to := scheduler.Target(env, sh, 1, nil); to != 4 {
		t.Fatalf("target %d, want node 4 below a 95 %% ratio", to)
	}
	v.Nodes[3].Capacity = 0 // unknown
	env = schedtest.Env(v)
	env.LowSpaceRatio = 0.8
	if to := scheduler.Target(env, sh, 1, nil); to != 4 {
		t.Fatalf("target %d, want node 4 (unknown capacity is no reason to skip it)", to)
	}
}
