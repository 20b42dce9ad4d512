package scheduler

import (
	"fmt"
	"math"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// BalancePrimary evens out the shards each up node leads (policy "balanced": primaries carry
// the writes and are spread evenly, whatever the capacity). It hands the primary role from the
// node leading the most to a replica, in line with it, on the node leading the fewest; it
// starts outside the start band and stops inside the stop band (or within one primary).
type BalancePrimary struct {
	band deadband
}

// Name implements Scheduler.
func (*BalancePrimary) Name() string { return "balance-primary" }

// Kind implements Scheduler.
func (*BalancePrimary) Kind() operator.Kind { return operator.Balance }

func (b *BalancePrimary) outside(l *Loads, band float64) bool {
	if l.Primaries == 0 {
		return false
	}
	mean := float64(l.Primaries) / float64(len(l.List))
	for _, ld := range l.List {
		if math.Abs(float64(ld.Primaries)-mean) > math.Max(band*mean, 1) {
			return true
		}
	}
	return false
}

// Schedule implements Scheduler.
func (b *BalancePrimary) Schedule(env *Env, max int) []*operator.Operator {
	l := env.Loads
	if len(l.List) < 2 {
		return nil
	}
	return b.band.run(env, max, func(band float64) bool { return b.outside(l, band) }, func() *operator.Operator { return b.one(env) })
}

func (b *BalancePrimary) one(env *Env) *operator.Operator {
	l := env.Loads
	var src *Load
	for _, ld := range l.List {
		if ld.Node.EvictPrimaries {
			continue // drain takes its primaries
		}
		if src == nil || ld.Primaries > src.Primaries {
			src = ld
		}
	}
	// Targets, fewest primaries first.
	for _, dst := range byPrimaries(l) {
		if src.Primaries-dst.Primaries < 2 {
			return nil
		}
		for _, sh := range src.shards {
			if sh.Primary != src.Node.ID || env.Busy(sh.ID) || env.Follows(sh) || !sh.IsInLine(dst.Node.ID) || !containsReplica(sh, dst.Node.ID) || !l.TakesLoad(env, dst, sh) || dst.Node.EvictPrimaries ||
				!primaryMayMove(env, sh, src.Node.ID, dst.Node.ID) || env.groupMoves(sh, src.Node.ID, dst.Node.ID) >= src.Primaries-dst.Primaries {
				continue // (a shard group's anchor takes its followers along: the move must still narrow the gap)
			}
			reason := fmt.Sprintf("balance primaries: node %d leads %d, node %d leads %d (mean %.1f)",
				src.Node.ID, src.Primaries, dst.Node.ID, dst.Primaries, float64(l.Primaries)/float64(len(l.List)))
			op := operator.New(operator.Balance, sh, reason, operator.Step{Kind: operator.TransferPrimary, Node: dst.Node.ID})
			env.Transferred(sh, src.Node.ID, dst.Node.ID)
			src.shards = removeShard(src.shards, sh)
			env.Claim(sh.ID)
			return op
		}
	}
	return nil
}

func byPrimaries(l *Loads) []*Load {
	out := make([]*Load, len(l.List))
	copy(out, l.List)
	for i := 1; i < len(out); i++ { // insertion sort: few nodes, stable by id
		for j := i; j > 0 && out[j].Primaries < out[j-1].Primaries; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func containsReplica(sh *view.Shard, id uint64) bool {
	for _, r := range sh.Replicas {
		if r == id {
			return true
		}
	}
	return false
}

// primaryMayMove reports whether a scheduler may hand sh's primary role from one node to
// another under its table's primary policy: never under none, and under preferred only to a
// node ranking at least as well.
func primaryMayMove(env *Env, sh *view.Shard, from, to uint64) bool {
	t := env.View.Tables[sh.Table]
	return t == nil || (t.Primaries.Moves() && env.View.SameRank(sh, from, to))
}
