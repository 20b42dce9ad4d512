package scheduler

import (
	"fmt"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Drain empties offline nodes: first it hands every primary they hold to another replica in
// line (cheap, fast, and writes stop depending on the node), then it moves their replicas to
// the least loaded nodes the tables allow. A node is empty — and may become a tombstone —
// once it holds nothing. A node evicting primaries (before a restart) only loses its
// primaries.
type Drain struct{}

// Name implements Scheduler.
func (*Drain) Name() string { return "drain" }

// Kind implements Scheduler.
func (*Drain) Kind() operator.Kind { return operator.Drain }

// Schedule implements Scheduler.
func (*Drain) Schedule(env *Env, max int) []*operator.Operator {
	var out []*operator.Operator
	for _, n := range env.View.Nodes {
		if n.State != view.Offline && !(n.EvictPrimaries && n.State == view.Up) {
			continue
		}
		leads := false
		for _, sh := range env.View.Shards {
			if len(out) >= max {
				return out
			}
			if sh.Primary != n.ID {
				continue
			}
			leads = true
			if env.Busy(sh.ID) {
				continue
			}
			// The in-line up replica leading the fewest shards.
			var to *Load
			for _, r := range sh.Replicas {
				if ld := env.Loads.ByID[r]; ld != nil && r != n.ID && sh.IsInLine(r) && env.View.CanLead(r) && (to == nil || ld.Primaries < to.Primaries) {
					to = ld
				}
			}
			if to == nil {
				continue
			}
			why := "drain"
			if n.State != view.Offline {
				why = "evict primaries from"
			}
			out = append(out, operator.New(operator.Drain, sh, fmt.Sprintf("%s node %d: primary to node %d", why, n.ID, to.Node.ID),
				operator.Step{Kind: operator.TransferPrimary, Node: to.Node.ID}))
			env.Transferred(sh, n.ID, to.Node.ID)
			env.Claim(sh.ID)
		}
		if leads || n.State != view.Offline {
			continue // replicas leave once the node leads nothing (and only a drained node's)
		}
		for _, sh := range env.View.Shards {
			if len(out) >= max {
				return out
			}
			if !sh.Holds(n.ID) || env.Busy(sh.ID) || env.Follows(sh) {
				continue // a shard group's follower goes where its anchor goes (GroupAlign)
			}
			env.Claim(sh.ID)
			if !containsReplica(sh, n.ID) { // a learner: just drop it
				out = append(out, operator.New(operator.Drain, sh, fmt.Sprintf("drain node %d: learner dropped", n.ID),
					operator.Step{Kind: operator.RemoveReplica, Node: n.ID}))
				continue
			}
			to := Target(env, sh, n.ID, func(ld *Load) bool { return env.CanSnapshot(operator.Drain, sh.Primary, ld.Node.ID) })
			if to == 0 {
				continue
			}
			out = append(out, operator.New(operator.Drain, sh, fmt.Sprintf("drain node %d: replica to node %d", n.ID, to), operator.Move(sh, n.ID, to)...))
			env.Moved(sh, n.ID, to)
		}
	}
	return out
}
