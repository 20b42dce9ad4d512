// Package checker holds the checkers: pure functions of one shard in one tick's view that
// return the operator that repairs it, if it needs one (one concept per file). The coordinator
// runs them on a batch of shards each tick (a patrol), before the schedulers.
package checker

import (
	"fmt"
	"slices"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Checker looks at one shard that has no operator.
type Checker interface {
	Name() string
	Check(env *scheduler.Env, sh *view.Shard) *operator.Operator
}

// All returns every checker, in the order the coordinator runs them.
func All() []Checker {
	return []Checker{Learner{}, Replica{}, Placement{}, GroupAlign{}, PrimaryPreference{}, Merge{}}
}

// Replica keeps a public table's shard at its replica count: a shard with too few replicas
// and learners gets a learner on the best node (promoted once in line); one with too many
// loses the worst (on an offline node first, then the most loaded; never the primary). Lost
// replicas leave the configuration by failover first; a shard whose primary is not up is
// failover's business and left alone.
type Replica struct{}

// Name implements Checker.
func (Replica) Name() string { return "replica" }

// Check implements Checker.
func (Replica) Check(env *scheduler.Env, sh *view.Shard) *operator.Operator {
	t := env.View.Tables[sh.Table]
	if t == nil || !t.Public || env.View.State(sh.Primary) != view.Up {
		return nil
	}
	have := len(sh.Replicas) + len(sh.Learners)
	switch {
	case have < t.Replicas && len(sh.Learners) == 0:
		to := scheduler.Target(env, sh, 0, nil)
		if a := env.Anchors[sh.ID]; a != nil {
			// A shard group's follower: to a node of its anchor's, if one is up.
			for _, n := range a.Replicas {
				if !sh.Holds(n) && env.View.State(n) == view.Up {
					to = n
					break
				}
			}
		}
		if to == 0 {
			return nil
		}
		env.Loads.Moved(sh, 0, to)
		return operator.New(operator.Repair, sh, fmt.Sprintf("repair: %d of %d replicas", have, t.Replicas),
			operator.Step{Kind: operator.AddLearner, Node: to}, operator.Step{Kind: operator.PromoteLearner, Node: to})
	case len(sh.Replicas) > t.Replicas:
		victim := worst(env, sh)
		if victim == 0 {
			return nil
		}
		env.Loads.Moved(sh, victim, 0)
		return operator.New(operator.Repair, sh, fmt.Sprintf("repair: %d replicas, the table asks for %d", len(sh.Replicas), t.Replicas),
			operator.Step{Kind: operator.RemoveReplica, Node: victim})
	}
	return nil
}

// worst is the replica to remove when a shard has one too many: one on a node that is not up,
// else one that breaks isolation, else the most loaded; never the primary.
func worst(env *scheduler.Env, sh *view.Shard) uint64 {
	t := env.View.Tables[sh.Table]
	var best uint64
	bestRank, bestScore := -1, 0.0
	for _, r := range sh.Replicas {
		if r == sh.Primary {
			continue
		}
		rank, score := 0, 0.0
		others := slices.DeleteFunc(slices.Clone(sh.Replicas), func(x uint64) bool { return x == r })
		switch {
		case env.View.State(r) != view.Up:
			rank = 3
		case !t.Allows(r):
			rank = 2
		case env.View.Isolated(t, others) && !env.View.Isolated(t, sh.Replicas):
			rank = 1
		}
		if ld := env.Loads.ByID[r]; ld != nil {
			score = env.Loads.Score(ld)
		}
		if rank > bestRank || (rank == bestRank && score > bestScore) {
			best, bestRank, bestScore = r, rank, score
		}
	}
	return best
}
