package checker

import (
	"fmt"
	"slices"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Merge merges small, cool neighbours: a shard and the next one of its table's partition, when
// one holds at most merge-max-bytes, together at most merge-max-result-bytes, they serve at most
// merge-max-keys per second together, and neither was split within split-merge-interval. The right one is brought to the left one's
// shape first, one operator at a time: a replica moved to a node of the left one, then the
// primary handed to the left one's primary. Once both have the same replicas and primary, the
// left one's primary absorbs the right one (a merge entry in its log); the operator holds both
// shards meanwhile. In a shard group the anchor table's shards merge so; a follower table's
// shards merge once they share an anchor (after their anchors merged), as they stand.
// Merges are of kind Merge, the lowest priority, within the balancing budget.
type Merge struct{}

// Name implements Checker.
func (Merge) Name() string { return "merge" }

// Check implements Checker.
func (Merge) Check(env *scheduler.Env, l *view.Shard) *operator.Operator {
	cfg := env.Merge
	if !env.View.CanMerge || cfg.MaxBytes == 0 || env.RightNeighbour == nil {
		return nil
	}
	t := env.View.Tables[l.Table]
	r := env.RightNeighbour(l.ID)
	if t == nil || !t.Public || r == nil || env.HasOp(r.ID) || !settled(env, t, l) || !settled(env, t, r) ||
		!cfg.Fits(l.Size, r.Size, l.Load.Keys()+r.Load.Keys()) ||
		env.MergeBlocked != nil && (env.MergeBlocked(l.ID) || env.MergeBlocked(r.ID)) {
		return nil
	}
	if a := env.Anchors[l.ID]; a != nil || env.Anchors[r.ID] != nil {
		// Followers of a shard group merge only within one anchor's range (after their
		// anchors merged), and only as they are: GroupAlign keeps them on the anchor's nodes.
		if a == nil || env.Anchors[r.ID] != a || l.Primary != r.Primary || !sameReplicas(l, r) {
			return nil
		}
		intend(env, l, r)
		return absorb(l, r)
	}
	intend(env, l, r)
	// 1. The right one's replicas, one node of the left one's at a time.
	for _, to := range l.Replicas {
		if r.Holds(to) {
			continue
		}
		var from uint64
		for _, x := range r.Replicas {
			if !slices.Contains(l.Replicas, x) && (from == 0 || from == r.Primary) {
				from = x // a secondary if there is one (no hand-over needed)
			}
		}
		tiny := r.Size < operator.TinySnapshot
		if from == 0 || env.View.State(to) != view.Up || !tiny && !env.CanSnapshot(operator.Merge, r.Primary, to) {
			return nil
		}
		env.Moved(r, from, to)
		reason := fmt.Sprintf("merge: shard %d's replica on node %d goes to node %d, with shard %d (%d bytes, %.0f keys/s together)",
			r.ID, from, to, l.ID, l.Size+r.Size, l.Load.Keys()+r.Load.Keys())
		return operator.New(operator.Merge, r, reason, operator.Move(r, from, to)...)
	}
	// 2. The right one's primary.
	if r.Primary != l.Primary {
		if !r.IsInLine(l.Primary) {
			return nil
		}
		env.Transferred(r, r.Primary, l.Primary)
		reason := fmt.Sprintf("merge: primary of shard %d to node %d, with shard %d", r.ID, l.Primary, l.ID)
		return operator.New(operator.Merge, r, reason, operator.Step{Kind: operator.TransferPrimary, Node: l.Primary})
	}
	// 3. The merge.
	return absorb(l, r)
}

func intend(env *scheduler.Env, l, r *view.Shard) {
	if env.IntendMerge != nil {
		env.IntendMerge(l.ID, r.ID)
	}
}

// absorb is the operator that has l's primary absorb r, both on the same nodes.
func absorb(l, r *view.Shard) *operator.Operator {
	reason := fmt.Sprintf("merge: shard %d absorbs shard %d (%d bytes, %.0f keys/s together)", l.ID, r.ID, l.Size+r.Size, l.Load.Keys()+r.Load.Keys())
	return operator.New(operator.Merge, l, reason,
		operator.Step{Kind: operator.Absorb, Node: l.Primary, Source: r.ID, Version: l.Version, SourceVersion: r.Version})
}

func sameReplicas(a, b *view.Shard) bool {
	if len(a.Replicas) != len(b.Replicas) {
		return false
	}
	for _, x := range a.Replicas {
		if !slices.Contains(b.Replicas, x) {
			return false
		}
	}
	return true
}

// settled reports whether sh is whole and quiet enough to merge: its primary up, no learner,
// the table's replica count, every replica in line.
func settled(env *scheduler.Env, t *view.Table, sh *view.Shard) bool {
	if env.View.State(sh.Primary) != view.Up || len(sh.Learners) > 0 || len(sh.Replicas) != t.Replicas {
		return false
	}
	for _, x := range sh.Replicas {
		if !sh.IsInLine(x) {
			return false
		}
	}
	return true
}
