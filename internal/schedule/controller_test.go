package schedule

import (
	"testing"
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

const mib = 1 << 20

func move(kind operator.Kind, shard, from, to uint64, size uint64) *operator.Operator {
	sh := &view.Shard{ID: shard, Primary: from, Replicas: []uint64{from}, Size: size}
	return operator.New(kind, sh, "test", operator.Move(sh, from, to)...)
}

func TestControllerBytesPerSecond(t *testing.T) {
	c := NewController(Limits{SnapshotBytesPerSec: 100 * mib, SnapshotsPerNode: 100, MaxOperators: 100, Speed: SpeedMax})
	c.Begin(0, nil)
	// Repair may spend the whole second's budget (and one snapshot beyond, as debt).
	n := 0
	for i := uint64(1); i <= 10; i++ {
		if c.Admit(move(operator.Repair, i, 1, 2, 40*mib), 1) {
			n++
		}
	}
	if n != 3 { // 100 -> 60 -> 20 -> -20: the third is admitted, the fourth waits
		t.Fatalf("repair admitted %d snapshots of 40 MiB on a 100 MiB/s budget, want 3", n)
	}
	// Half a second later the out bucket of node 1 has 30 MiB: one more.
	c.Begin(500*time.Millisecond, nil)
	if !c.Admit(move(operator.Repair, 20, 1, 2, 40*mib), 1) || c.Admit(move(operator.Repair, 21, 1, 2, 40*mib), 1) {
		t.Fatal("refill: want exactly one more admission after 0.5 s")
	}
	// Another pair of nodes has its own budget.
	if !c.Admit(move(operator.Repair, 30, 3, 4, 40*mib), 3) {
		t.Fatal("nodes 3 -> 4 have their own budget")
	}
}

func TestControllerReservesHalfForRepair(t *testing.T) {
	for _, tc := range []struct {
		speed       Speed
		wantBalance int // 10 MiB balance snapshots admitted on a 100 MiB/s budget
	}{{SpeedOff, 0}, {SpeedLow, 2}, {SpeedNormal, 3}, {SpeedMax, 5}} {
		c := NewController(Limits{SnapshotBytesPerSec: 100 * mib, SnapshotsPerNode: 100, MaxOperators: 100, Speed: tc.speed})
		c.Begin(0, nil)
		n := 0
		for i := uint64(1); i <= 20; i++ {
			if c.Admit(move(operator.Balance, i, 1, 2, 10*mib), 1) {
				n++
			}
		}
		// The share is 0, 12.5, 25, 50 MiB: admitted while positive, so one past it.
		if n != tc.wantBalance {
			t.Errorf("%s: %d balance snapshots admitted, want %d", tc.speed, n, tc.wantBalance)
		}
		// Repair still has the rest of the budget.
		r := 0
		for i := uint64(100); i < 120; i++ {
			if c.Admit(move(operator.Repair, i, 1, 2, 10*mib), 1) {
				r++
			}
		}
		if r < 5 {
			t.Errorf("%s: repair admitted only %d after balancing", tc.speed, r)
		}
	}
}

func TestControllerConcurrencyAndTotal(t *testing.T) {
	c := NewController(Limits{SnapshotBytesPerSec: 1 << 40, SnapshotsPerNode: 4, MaxOperators: 6, Speed: SpeedMax})
	c.Begin(0, nil)
	var running []*operator.Operator
	for i := uint64(1); i <= 10; i++ {
		op := move(operator.Repair, i, 1, 2, mib)
		if c.Admit(op, 1) {
			running = append(running, op)
		}
	}
	if len(running) != 4 {
		t.Fatalf("%d concurrent snapshots 1 -> 2, want 4 (snapshots-per-node)", len(running))
	}
	// A snapshot of an (almost) empty shard does not count against snapshots-per-node, only
	// against the operator limit.
	tiny := move(operator.Repair, 20, 1, 2, 1000)
	if !c.Admit(tiny, 1) {
		t.Fatal("a tiny snapshot was refused for the concurrent snapshots of bigger ones")
	}
	running = append(running, tiny)
	if c.Room(operator.Repair) != 1 || c.Room(operator.Balance) != 1 {
		t.Fatalf("room repair %d balance %d; want 1 and 1 (balance: at most half of 6, none of its own running)", c.Room(operator.Repair), c.Room(operator.Balance))
	}
	// Recounted from the running operators each tick; halt stops everything.
	c.SetLimits(Limits{SnapshotBytesPerSec: 1 << 40, SnapshotsPerNode: 4, MaxOperators: 6, Speed: SpeedMax, Halt: true})
	c.Begin(time.Second, running)
	if c.Admit(move(operator.Repair, 50, 3, 4, mib), 3) {
		t.Fatal("admitted while halted")
	}
}

func TestConfigSet(t *testing.T) {
	cfg := DefaultConfig()
	for _, bad := range [][2]string{{"rebalance-speed", "warp"}, {"snapshot-bytes-per-sec", "0"}, {"snapshot-bytes-per-sec", "-1MiB"},
		{"max-operators", "0"}, {"halt-scheduling", "maybe"}, {"paused-schedulers", "nosuch"}, {"nosuch", "1"},
		{"high-space-ratio", "0.5"}, {"hot-ratio", "0"}, {"hot-hold", "-1s"}, {"evict-primaries", "1,x"}, {"evict-primaries", "0"},
		{"primary-policy:", "none"}, {"primary-policy:t", "preferred"}, {"primary-policy:t", "preferred zone"}, {"primary-policy:t", "preferred node=x"},
		{"primary-policy:t", "none zone=a"}, {"primary-policy:t", "sideways"}, {"merge-max-bytes", "lots"}, {"merge-max-bytes", "-1"},
		{"merge-max-keys", "-1"}, {"merge-max-keys", "NaN"}, {"merge-max-result-bytes", "0"}, {"split-merge-interval", "-1s"}, {"split-merge-interval", "1000h"},
		{"hot-ratio", "NaN"}, {"hot-min-keys", "NaN"}, {"low-space-ratio", "NaN"}, {"default-replicas", "0"}, {"default-replicas", "10"},
		{"default-replicas", "two"}} {
		before := cfg.Get()
		if err := cfg.Set(bad[0], bad[1]); err == nil {
			t.Errorf("%s=%s accepted", bad[0], bad[1])
		}
		if after := cfg.Get(); after[bad[0]] != before[bad[0]] {
			t.Errorf("%s changed by a refused value", bad[0])
		}
	}
	for _, good := range [][2]string{{"rebalance-speed", "max"}, {"snapshot-bytes-per-sec", "64MiB"}, {"halt-scheduling", "true"},
		{"paused-schedulers", "balance-replica,drain"}, {"evict-primaries", "3, 1"}, {"hot-hold", "5s"},
		{"primary-policy:orders", "preferred zone=z1, node=4"}, {"primary-policy:logs", "none"}, {"primary-policy:tmp", "none"},
		{"primary-policy:tmp", "balanced"}, {"merge-max-bytes", "0"}, {"merge-max-keys", "50"}, {"split-merge-interval", "30m"},
		{"merge-max-result-bytes", "100MiB"}, {"default-replicas", "5"}} {
		if err := cfg.Set(good[0], good[1]); err != nil {
			t.Fatalf("%s=%s: %v", good[0], good[1], err)
		}
	}
	got := cfg.Get()
	if got["snapshot-bytes-per-sec"] != "67108864" || got["paused-schedulers"] != "balance-replica,drain" || !cfg.Halt || cfg.Speed != SpeedMax ||
		got["evict-primaries"] != "1,3" || got["hot-hold"] != "5s" || got["primary-policy:orders"] != "preferred zone=z1,node=4" ||
		got["primary-policy:logs"] != "none" || got["primary-policy:tmp"] != "" || got["merge-max-bytes"] != "0" || cfg.Merge.MaxKeys != 50 ||
		got["split-merge-interval"] != "30m0s" || cfg.Merge.MaxResultBytes != 100<<20 || got["default-replicas"] != "5" {
		t.Fatalf("config after set: %v", got)
	}
}

func TestPrimaryPolicyRank(t *testing.T) {
	p, err := ParsePrimaryPolicy("preferred zone=a,node=7")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    *view.Node
		want int
	}{
		{&view.Node{ID: 1, Labels: map[string]string{"zone": "a"}}, 0},
		{&view.Node{ID: 7, Labels: map[string]string{"zone": "b"}}, 1},
		{&view.Node{ID: 2, Labels: map[string]string{"zone": "b"}}, 2},
	} {
		if got := p.Rank(tc.n); got != tc.want {
			t.Errorf("node %d: rank %d, want %d", tc.n.ID, got, tc.want)
		}
	}
	if none, _ := ParsePrimaryPolicy("none"); none.Moves() || none.Rank(&view.Node{ID: 1}) != 0 {
		t.Fatalf("none: %+v", none)
	}
}
