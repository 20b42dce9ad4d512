package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/schedule/checker"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

func newCoord() *Coordinator {
	var id uint64
	return New(DefaultConfig(), func(string) uint64 { id++; return id })
}

// apply carries out a tick's changes on v as the catalog would.
func apply(t *testing.T, c *Coordinator, v *view.Cluster, act *Actions) {
	t.Helper()
	for _, ch := range act.Changes {
		for i, sh := range v.Shards {
			if sh.ID == ch.Cmd.ShardId {
				st := ch.Op.Steps[ch.Op.Current]
				v.Shards[i] = st.Apply(sh)
				v.Shards[i].InLine = append(v.Shards[i].Replicas[:len(v.Shards[i].Replicas):len(v.Shards[i].Replicas)], v.Shards[i].Learners...)
			}
		}
		c.Applied(ch, nil, 0)
	}
}

func TestCoordinatorRunsAMoveToTheEnd(t *testing.T) {
	v := schedtest.Cluster(4, 0, 3, "")
	sh := schedtest.Shard(v, mib, 1, 2, 3)
	c := newCoord()
	op := operator.New(operator.Admin, sh, "test", operator.Move(sh, 1, 4)...)
	if err := c.Submit(op, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Submit(operator.New(operator.Admin, sh, "again", operator.Step{Kind: operator.RemoveReplica, Node: 2}), 0); !errors.Is(err, ErrBusy) {
		t.Fatalf("second operator on a busy shard: %v", err)
	}
	var finished []*operator.Operator
	for tick := 0; tick < 10 && len(finished) == 0; tick++ {
		act := c.Tick(time.Duration(tick)*time.Second, v)
		finished = act.Finished
		apply(t, c, v, act)
	}
	got := v.Shards[0]
	if len(finished) != 1 || finished[0].State != operator.Done || got.Primary != 4 || got.Holds(1) || len(got.Replicas) != 3 {
		t.Fatalf("after the move: finished %v, shard %+v", finished, got)
	}
}

func TestCoordinatorCancelsWhenTheShardMovesOn(t *testing.T) {
	v := schedtest.Cluster(4, 0, 3, "")
	sh := schedtest.Shard(v, mib, 1, 2, 3)
	c := newCoord()
	if err := c.Submit(operator.New(operator.Admin, sh, "test", operator.Move(sh, 2, 4)...), 0); err != nil {
		t.Fatal(err)
	}
	moved := *sh
	moved.ConfVer, moved.Term = 5, 3 // someone else (failover) changed it
	v.Shards[0] = &moved
	act := c.Tick(0, v)
	if len(act.Finished) != 1 || act.Finished[0].State != operator.Cancelled || len(act.Changes) != 0 {
		t.Fatalf("stale operator: finished %v changes %v", act.Finished, act.Changes)
	}
}

func TestCoordinatorResumeAdoptsItsOwnLastChange(t *testing.T) {
	v := schedtest.Cluster(4, 0, 3, "")
	sh := schedtest.Shard(v, mib, 1, 2, 3)
	op := operator.New(operator.Balance, sh, "test", operator.Move(sh, 2, 4)...)
	op.ID, op.State = 7, operator.Running
	// The old primary applied add-learner and lost office before saving the operator.
	v.Shards[0] = op.Steps[0].Apply(sh)
	c := newCoord()
	c.Resume([]*operator.Operator{op}, 0)
	act := c.Tick(0, v)
	if len(act.Finished) != 0 || len(c.Operators(false)) != 1 {
		t.Fatalf("resumed operator one step ahead was cancelled: %v", act.Finished)
	}
}

func TestCoordinatorWaitsForEveryNode(t *testing.T) {
	v := schedtest.Cluster(6, 0, 3, "")
	for i := 0; i < 30; i++ {
		schedtest.Shard(v, mib, 1, 2, 3) // nodes 4..6 empty: balancing has work
	}
	v.Node(5).Heard = false
	c := newCoord()
	if act := c.Tick(0, v); len(act.Save) != 0 {
		t.Fatalf("scheduled before node 5 heartbeated: %d operators", len(act.Save))
	}
	v.Node(5).Heard = true
	if act := c.Tick(time.Second, v); len(act.Save) == 0 {
		t.Fatal("nothing scheduled once every node was heard")
	}
}

// TestCoordinatorQueuedOperatorTimesFromAdmission: an operator that waited in the queue longer
// than a step's timeout is not timed out the moment it is admitted.
func TestCoordinatorQueuedOperatorTimesFromAdmission(t *testing.T) {
	v := schedtest.Cluster(4, 0, 3, "")
	a := schedtest.Shard(v, mib, 1, 2, 3)
	b := schedtest.Shard(v, mib, 1, 2, 3)
	cfg := DefaultConfig()
	cfg.MaxOperators = 1
	cfg.Paused = map[string]bool{"balance-replica": true, "balance-primary": true}
	var id uint64
	c := New(cfg, func(string) uint64 { id++; return id })
	// The first waits on node 4 forever (never in line), holding the only slot.
	if err := c.Submit(operator.New(operator.Admin, a, "a", operator.Step{Kind: operator.TransferPrimary, Node: 4}), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Submit(operator.New(operator.Admin, b, "b", operator.Step{Kind: operator.TransferPrimary, Node: 2}), 0); err != nil {
		t.Fatal(err)
	}
	c.Tick(0, v)
	// Long after, the first times out; the second is admitted in the same tick.
	late := 10 * time.Minute
	act := c.Tick(late, v)
	if len(act.Finished) != 1 || act.Finished[0].State != operator.TimedOut {
		t.Fatalf("first operator: %v", act.Finished)
	}
	if act = c.Tick(late+time.Second, v); len(act.Finished) != 0 || len(act.Changes) != 1 {
		t.Fatalf("the admitted operator: finished %v, changes %v", act.Finished, act.Changes)
	}
}

// TestCoordinatorSplit: a split step is handed to the primary each tick until the catalog
// records the shard at the next version; then the operator is done. A configuration change
// meanwhile cancels it.
func TestCoordinatorSplit(t *testing.T) {
	v := schedtest.Cluster(3, 0, 3, "")
	sh := schedtest.Shard(v, mib, 1, 2, 3)
	c := newCoord()
	split := operator.Step{Kind: operator.Split, Node: 1, Key: "m", NewShard: 99, Version: sh.Version}
	if err := c.Submit(operator.New(operator.Admin, sh, "split", split), 0); err != nil {
		t.Fatal(err)
	}
	for tick := 0; tick < 2; tick++ {
		act := c.Tick(time.Duration(tick)*time.Second, v)
		if len(act.Splits) != 1 || act.Splits[0].NewShardId != 99 || string(act.Splits[0].SplitKey) != "m" || len(act.Changes) != 0 {
			t.Fatalf("tick %d: splits %v changes %v", tick, act.Splits, act.Changes)
		}
	}
	split1 := *sh
	split1.Version++
	v.Shards[0] = &split1
	act := c.Tick(2*time.Second, v)
	if len(act.Finished) != 1 || act.Finished[0].State != operator.Done || len(act.Splits) != 0 {
		t.Fatalf("after the split: finished %v splits %v", act.Finished, act.Splits)
	}
	// A split under way on a shard whose configuration changes is cancelled.
	sh2 := schedtest.Shard(v, mib, 1, 2, 3)
	if err := c.Submit(operator.New(operator.Admin, sh2, "split", operator.Step{Kind: operator.Split, Node: 1, NewShard: 100, Version: 1}), 0); err != nil {
		t.Fatal(err)
	}
	moved := *sh2
	moved.ConfVer++
	v.Shards[1] = &moved
	if act := c.Tick(3*time.Second, v); len(act.Finished) != 1 || act.Finished[0].State != operator.Cancelled {
		t.Fatalf("split on a changed shard: %v", act.Finished)
	}
}

// patrolRecorder is a checker that notes every shard it is shown and proposes nothing.
type patrolRecorder map[uint64]bool

func (patrolRecorder) Name() string { return "recorder" }
func (p patrolRecorder) Check(_ *scheduler.Env, sh *view.Shard) *operator.Operator {
	p[sh.ID] = true
	return nil
}

// TestPatrolRound: however many shards there are, the checkers see every one within
// patrolRound (ticks of 100 ms; 200,000 shards would take 20 s at the default batch of 1024).
func TestPatrolRound(t *testing.T) {
	for _, n := range []int{500, 200_000} {
		v := schedtest.Cluster(6, 0, 3, "")
		for i := 0; i < n; i++ {
			a := uint64(i%6 + 1)
			schedtest.Shard(v, 64*mib, a, a%6+1, (a+1)%6+1)
		}
		c := newCoord()
		seen := patrolRecorder{}
		c.checkers = []checker.Checker{seen}
		now := time.Duration(0)
		for now < patrolRound+time.Second { // (the first tick only sets the pace)
			now += 100 * time.Millisecond
			c.Tick(now, v)
		}
		if len(seen) != n {
			t.Fatalf("%d shards: %d seen by the checkers within %v", n, len(seen), patrolRound)
		}
	}
}
