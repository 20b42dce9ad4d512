package checker

import (
	"fmt"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Learner finishes learners no operator owns (left by an operator that timed out, or by a
// primary PCS that lost office between two steps): a learner the primary reports in line is
// promoted if the shard needs it, a learner on a node that is not up or that the shard does
// not need is removed.
type Learner struct{}

// Name implements Checker.
func (Learner) Name() string { return "learner" }

// Check implements Checker.
func (Learner) Check(env *scheduler.Env, sh *view.Shard) *operator.Operator {
	t := env.View.Tables[sh.Table]
	if t == nil || !t.Public || len(sh.Learners) == 0 || env.View.State(sh.Primary) != view.Up {
		return nil
	}
	for _, l := range sh.Learners {
		switch {
		case env.View.State(l) != view.Up || len(sh.Replicas) >= t.Replicas:
			return operator.New(operator.Repair, sh, fmt.Sprintf("learner on node %d is not needed (node %s, %d replicas)", l, env.View.State(l), len(sh.Replicas)),
				operator.Step{Kind: operator.RemoveReplica, Node: l})
		case sh.IsInLine(l):
			return operator.New(operator.Repair, sh, fmt.Sprintf("learner on node %d is in line", l),
				operator.Step{Kind: operator.PromoteLearner, Node: l})
		}
	}
	return nil
}
