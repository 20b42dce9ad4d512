package checker

import (
	"fmt"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// PrimaryPreference keeps the primaries of a table under the preferred policy on the best
// preference available: a shard whose primary ranks worse than one of its in-line replicas on
// a node that may lead hands the role over (to the one of the best rank leading the fewest
// shards). After a failover took a primary out of the preferred zone, it comes back once a
// replica there is in line again. Like a misplaced replica it is a rule, not a balance: kind
// Repair.
type PrimaryPreference struct{}

// Name implements Checker.
func (PrimaryPreference) Name() string { return "primary-preference" }

// Check implements Checker.
func (PrimaryPreference) Check(env *scheduler.Env, sh *view.Shard) *operator.Operator {
	t := env.View.Tables[sh.Table]
	if t == nil || !t.Public || t.Primaries.Mode != view.Preferred || env.View.State(sh.Primary) != view.Up || env.Follows(sh) {
		return nil
	}
	cur := t.Primaries.Rank(env.View.Node(sh.Primary))
	var best *scheduler.Load
	bestRank := cur
	for _, r := range sh.Replicas {
		ld := env.Loads.ByID[r]
		if r == sh.Primary || ld == nil || !sh.IsInLine(r) || !env.View.CanLead(r) {
			continue
		}
		rank := t.Primaries.Rank(ld.Node)
		if rank < bestRank || (rank == bestRank && best != nil && ld.Primaries < best.Primaries) {
			best, bestRank = ld, rank
		}
	}
	if best == nil {
		return nil
	}
	env.Loads.Transferred(sh, sh.Primary, best.Node.ID)
	reason := fmt.Sprintf("primary preference: node %d ranks %d under %q, node %d ranks %d", sh.Primary, cur, t.Primaries, best.Node.ID, bestRank)
	return operator.New(operator.Repair, sh, reason, operator.Step{Kind: operator.TransferPrimary, Node: best.Node.ID})
}
