package scheduler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// HighSpace moves replicas off a node whose replicas take more than high-space-ratio of the
// capacity it offers (PD's high-space-ratio), until they take less, to nodes that are not low
// on space themselves. It runs whatever the balancers do (paused or inside their band): a disk
// filling up is a risk to the node, not an imbalance. Its operators are of kind Drain, on the
// budget reserved for keeping data safe. Secondaries go first (a primary's move also hands
// its role over), the largest first (the fewest moves).
type HighSpace struct{}

// Name implements Scheduler.
func (HighSpace) Name() string { return "high-space" }

// Kind implements Scheduler.
func (HighSpace) Kind() operator.Kind { return operator.Drain }

// Schedule implements Scheduler.
func (HighSpace) Schedule(env *Env, max int) []*operator.Operator {
	if env.HighSpaceRatio <= 0 {
		return nil
	}
	var out []*operator.Operator
	for _, src := range env.Loads.List {
		if !src.Node.LowOnSpace(src.Bytes, env.HighSpaceRatio) {
			continue
		}
		cands := slices.Clone(src.shards)
		slices.SortStableFunc(cands, func(a, b *view.Shard) int {
			if pa, pb := a.Primary == src.Node.ID, b.Primary == src.Node.ID; pa != pb {
				if pa {
					return 1
				}
				return -1
			}
			if c := cmp.Compare(b.Size, a.Size); c != 0 {
				return c
			}
			return cmp.Compare(a.ID, b.ID)
		})
		for _, sh := range cands {
			if len(out) >= max || !src.Node.LowOnSpace(src.Bytes, env.HighSpaceRatio) {
				break
			}
			t := env.View.Tables[sh.Table]
			if env.Busy(sh.ID) || env.Follows(sh) || sh.Size == 0 || t == nil || !t.Public || !containsReplica(sh, src.Node.ID) || sh.Primary == 0 {
				continue
			}
			to := Target(env, sh, src.Node.ID, func(ld *Load) bool {
				return env.CanSnapshot(operator.Drain, sh.Primary, ld.Node.ID) && (sh.Primary != src.Node.ID || !ld.Node.EvictPrimaries)
			})
			if to == 0 {
				continue
			}
			env.Claim(sh.ID)
			reason := fmt.Sprintf("high space: node %d's replicas take %.1f%% of its capacity (high-space-ratio %.0f%%): shard %d to node %d",
				src.Node.ID, 100*float64(src.Bytes)/float64(src.Node.Capacity), 100*env.HighSpaceRatio, sh.ID, to)
			out = append(out, operator.New(operator.Drain, sh, reason, operator.Move(sh, src.Node.ID, to)...))
			env.Moved(sh, src.Node.ID, to)
		}
	}
	return out
}
