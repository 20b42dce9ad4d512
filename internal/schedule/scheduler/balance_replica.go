package scheduler

import (
	"fmt"
	"math"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// BalanceReplica moves replicas from the most to the least loaded up nodes. Its objective is
// explicit: every node's replica count and bytes within its share of the cluster's capacity
// (bytes only once the cluster holds MinBytesPerNode a node). It starts when a node is outside
// the start band and stops when every node is inside the stop band (or within one shard).
//
// A move is made only if it brings the two nodes closer in the sum of both deviations and
// overshoots neither beyond the stop band — so one big shard among empty ones never moves (it
// would only move the imbalance), and a move is never undone by the next one. Among the shards
// of the source it picks the one whose size best matches the source's excess bytes per excess
// replica (so counts and bytes converge together), preferring shards of tables the source
// holds more of than the target (so each table spreads too).
type BalanceReplica struct {
	band deadband
}

// Name implements Scheduler.
func (*BalanceReplica) Name() string { return "balance-replica" }

// Kind implements Scheduler.
func (*BalanceReplica) Kind() operator.Kind { return operator.Balance }

func (b *BalanceReplica) outside(l *Loads, band float64) bool {
	for _, ld := range l.List {
		if math.Abs(l.DevCount(ld)) > math.Max(band, l.OneShard(ld)) || math.Abs(l.DevBytes(ld)) > band {
			return true
		}
	}
	return false
}

// Schedule implements Scheduler.
func (b *BalanceReplica) Schedule(env *Env, max int) []*operator.Operator {
	l := env.Loads
	if len(l.List) < 2 || l.Count == 0 {
		b.band.active = false
		return nil
	}
	return b.band.run(env, max, func(band float64) bool { return b.outside(l, band) }, func() *operator.Operator { return b.one(env) })
}

// one finds the best single move, trying the most loaded sources against the least loaded
// targets.
func (b *BalanceReplica) one(env *Env) *operator.Operator {
	l := env.Loads
	order := l.ByScore()
	// Every source above the mean against every target below it, best pairs first (a pair
	// whose target cannot receive now costs nothing).
	for i := 0; i < len(order) && l.Score(order[i]) > 0; i++ {
		src := order[i]
		for j := len(order) - 1; j > i && l.Score(order[j]) < 0; j-- {
			if op := b.pair(env, src, order[j]); op != nil {
				return op
			}
		}
	}
	return nil
}

func (b *BalanceReplica) pair(env *Env, src, dst *Load) *operator.Operator {
	l := env.Loads
	// Gaps between the two nodes, in deviation units, and what one move of size s does to them.
	stepC := l.OneShard(src) + l.OneShard(dst)
	gapC := l.DevCount(src) - l.DevCount(dst)
	gapB := l.DevBytes(src) - l.DevBytes(dst)
	perByte := 0.0
	if l.UseBytes && l.Bytes > 0 {
		perByte = (1/src.Weight + 1/dst.Weight) / float64(l.Bytes)
	}
	if gapC+gapB <= 0 {
		return nil
	}
	// The size that brings both gaps down together.
	want := 0.0
	if perByte > 0 {
		want = math.Max(gapB/perByte, 0) / math.Max(gapC/stepC, 1)
	}
	stopC := math.Max(2*env.Bands.Stop, stepC)
	stopB := 2 * env.Bands.Stop
	if env.CanReceive != nil && !env.CanReceive(operator.Balance, dst.Node.ID) {
		return nil
	}
	var best *view.Shard
	bestCost := math.Inf(1)
	skew := map[uint64]float64{} // table -> how much more of it src holds than dst
	for _, sh := range src.shards {
		// Arithmetic first; lookups only for a shard that would be the best so far.
		newC := gapC - stepC
		newB := gapB - float64(sh.Size)*perByte
		if math.Abs(newC)+math.Abs(newB) >= math.Abs(gapC)+math.Abs(gapB)-1e-12 {
			continue // no better
		}
		if newC < -stopC || newB < -stopB || math.Abs(newC) > math.Max(math.Abs(gapC), stopC) || math.Abs(newB) > math.Max(math.Abs(gapB), stopB) {
			continue // overshoots or makes one objective worse
		}
		cost := 0.0
		if perByte > 0 {
			cost = math.Abs(float64(sh.Size)-want) / (want + 1)
		}
		sk, ok := skew[sh.Table]
		if !ok {
			sk = 0.01 * float64(src.TableCount(sh.Table)-dst.TableCount(sh.Table))
			skew[sh.Table] = sk
		}
		cost -= sk
		if cost > bestCost || (cost == bestCost && sh.ID > best.ID) {
			continue
		}
		if sh.Holds(dst.Node.ID) || sh.Primary == 0 || env.Busy(sh.ID) || env.Cooling(sh.ID, src.Node.ID) || env.Follows(sh) {
			continue
		}
		if sh.Primary == src.Node.ID && (!l.TakesLoad(env, dst, sh) || dst.Node.EvictPrimaries || !primaryMayMove(env, sh, src.Node.ID, dst.Node.ID)) {
			continue // the primary role would go with it and make dst hot
		}
		t := env.View.Tables[sh.Table]
		if t == nil || !t.Public || !t.Allows(dst.Node.ID) || !Isolated(env.View, t, sh, src.Node.ID, dst.Node.ID) {
			continue
		}
		if !env.CanSnapshot(operator.Balance, sh.Primary, dst.Node.ID) {
			continue
		}
		best, bestCost = sh, cost
	}
	if best == nil {
		return nil
	}
	reason := fmt.Sprintf("balance: node %d score %.3f (count %+.3f bytes %+.3f) -> node %d score %.3f (count %+.3f bytes %+.3f)",
		src.Node.ID, l.Score(src), l.DevCount(src), l.DevBytes(src), dst.Node.ID, l.Score(dst), l.DevCount(dst), l.DevBytes(dst))
	op := operator.New(operator.Balance, best, reason, operator.Move(best, src.Node.ID, dst.Node.ID)...)
	env.Moved(best, src.Node.ID, dst.Node.ID)
	src.shards = removeShard(src.shards, best)
	env.Claim(best.ID)
	return op
}

func removeShard(list []*view.Shard, sh *view.Shard) []*view.Shard {
	for i, x := range list {
		if x == sh {
			list[i] = list[len(list)-1]
			return list[:len(list)-1]
		}
	}
	return list
}
