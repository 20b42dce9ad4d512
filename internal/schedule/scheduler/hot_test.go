package scheduler_test

import (
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// hotCluster: 4 nodes, 40 shards spread 3 ways, each shard 100 keys/s; then loads changes
// shards' loads by id.
func hotCluster(loads map[uint64]float64) *view.Cluster {
	v := schedtest.Cluster(4, 0, 3, "")
	for i := 0; i < 40; i++ {
		a, b, c := uint64(i%4+1), uint64((i+1)%4+1), uint64((i+2)%4+1)
		sh := schedtest.Shard(v, 64*mib, a, b, c)
		sh.Load = view.Load{Writes: 100}
		if l, ok := loads[sh.ID]; ok {
			sh.Load = view.Load{Writes: l}
		}
	}
	return v
}

// runHot runs one Hot scheduler over v at the times given and returns the last pass's
// operators.
func runHot(v *view.Cluster, times ...time.Duration) []*operator.Operator {
	h := &scheduler.Hot{}
	var ops []*operator.Operator
	next := uint64(1000)
	for _, at := range times {
		env := schedtest.Env(v)
		env.Now = at
		env.NewShardID = func() uint64 { next++; return next }
		ops = h.Schedule(env, 64)
	}
	return ops
}

func TestHot(t *testing.T) {
	hold := scheduler.DefaultHot.Hold
	t.Run("a node leading a hot shard hands it to a cooler replica after the hold", func(t *testing.T) {
		// Node 1 leads 1500 keys/s (shard 1 takes 600), node 2 only 100; mean 900.
		loads := map[uint64]float64{1: 600}
		for id := uint64(2); id <= 40; id += 4 {
			loads[id] = 10 // the shards node 2 leads
		}
		v := hotCluster(loads)
		if ops := runHot(v, 0); len(ops) != 0 {
			t.Fatalf("before the hold: %v", ops)
		}
		ops := runHot(v, 0, hold)
		if len(ops) == 0 {
			t.Fatal("nothing after the hold")
		}
		op := ops[0]
		if op.Kind != operator.Hot || op.Shard != 1 || op.Steps[0].Kind != operator.TransferPrimary || op.Steps[0].Node != 2 {
			t.Fatalf("got %v", op)
		}
		if !strings.Contains(op.Reason, "node 1 leads") {
			t.Fatalf("reason %q", op.Reason)
		}
	})
	t.Run("a shard too hot for any node is split by load", func(t *testing.T) {
		v := hotCluster(map[uint64]float64{1: 5000})
		ops := runHot(v, 0, hold)
		if len(ops) == 0 || ops[0].Shard != 1 || ops[0].Steps[0].Kind != operator.Split || !ops[0].Steps[0].ByLoad || ops[0].Steps[0].NewShard == 0 {
			t.Fatalf("got %v", ops)
		}
	})
	t.Run("a split that failed is not tried again; the shard is left where it is", func(t *testing.T) {
		v := hotCluster(map[uint64]float64{1: 5000})
		h := &scheduler.Hot{}
		for _, at := range []time.Duration{0, hold} {
			env := schedtest.Env(v)
			env.Now, env.NewShardID = at, func() uint64 { return 7 }
			env.SplitBlocked = func(id uint64) bool { return id == 1 }
			for _, op := range h.Schedule(env, 64) {
				if op.Shard == 1 {
					t.Fatalf("shard 1 scheduled again: %v", op)
				}
			}
		}
	})
	t.Run("uniform load: nothing", func(t *testing.T) {
		if ops := runHot(hotCluster(nil), 0, hold, 2*hold); len(ops) != 0 {
			t.Fatalf("got %v", ops)
		}
	})
	t.Run("below the noise floor: nothing", func(t *testing.T) {
		v := hotCluster(nil)
		for _, sh := range v.Shards {
			sh.Load = view.Load{Writes: 1}
		}
		v.Shards[0].Load = view.Load{Writes: 50}
		if ops := runHot(v, 0, hold); len(ops) != 0 {
			t.Fatalf("got %v", ops)
		}
	})
	t.Run("every replica on a hot node: the replica moves to a cool node", func(t *testing.T) {
		// Nodes 1-3 hold everything hot; node 4 and 5 are new and empty.
		v := schedtest.Cluster(5, 0, 3, "")
		for i := 0; i < 30; i++ {
			sh := schedtest.Shard(v, 64*mib, uint64(i%3+1), uint64((i+1)%3+1), uint64((i+2)%3+1))
			sh.Load = view.Load{Writes: 100}
		}
		ops := runHot(v, 0, hold)
		if len(ops) == 0 {
			t.Fatal("nothing")
		}
		for _, op := range ops {
			if op.To < 4 || op.Steps[len(op.Steps)-1].Kind != operator.RemoveReplica {
				t.Fatalf("want moves to nodes 4-5, got %v", op)
			}
		}
	})
}
