package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// HotConfig says when a node's load is hot and how much a pass sheds.
type HotConfig struct {
	// Ratio: a node leading more than the mean load × (1 + Ratio) is hot. Default 0.1.
	Ratio float64
	// Hold: it must stay hot this long (two stats windows) before it sheds. Default 20 s.
	Hold time.Duration
	// MinKeys: below this mean load per node (keys/s) nothing is hot: the differences are
	// noise. Default 100.
	MinKeys float64
	// PerPass bounds the operators one pass proposes. Default 4.
	PerPass int
}

// DefaultHot are the defaults.
var DefaultHot = HotConfig{Ratio: 0.1, Hold: 20 * time.Second, MinKeys: 100, PerPass: 4}

// pendingShare: a node with this share of its load already on its way off sheds no more.
const pendingShare = 0.1

// Hot sheds load from hot nodes. Load is what a node leads: the keys read and written per
// second of its primaries (the primary serves every read and coordinates every write). Hot is
// relative to the cluster: a node above the mean by more than the ratio, for the hold, whatever
// the absolute rates, so a cluster where everything is busy still evens out and one where
// nothing is never moves. A hot node sheds, in this order:
//  1. a primary, handed to an in-line replica on a cooler node that stays below the mean plus
//     half the ratio (no new hot node, and no ping-pong with the balancers, which respect the
//     same bound);
//  2. a split by load, when the shard would make even the coolest node hot (the primary picks
//     the key that halves the shard's recent load);
//  3. a replica with its primary role, moved to the coolest eligible node that stays below
//     the hot threshold.
//
// A pass proposes at most PerPass operators, and none for a node with pendingShare of its load
// already under way; operators draw on the balancing budget (kind Hot, ahead of Balance).
type Hot struct {
	since map[uint64]time.Duration // node -> since when it has been hot
}

// Name implements Scheduler.
func (*Hot) Name() string { return "hot" }

// Kind implements Scheduler.
func (*Hot) Kind() operator.Kind { return operator.Hot }

// Schedule implements Scheduler.
func (h *Hot) Schedule(env *Env, max int) []*operator.Operator {
	l := env.Loads
	mean := l.MeanKeys()
	if len(l.List) < 2 || mean < env.Hot.MinKeys {
		h.since = nil
		return nil
	}
	limit := mean * (1 + env.Hot.Ratio)
	since := map[uint64]time.Duration{}
	for _, ld := range l.List {
		if ld.Keys > limit {
			if t, ok := h.since[ld.Node.ID]; ok {
				since[ld.Node.ID] = t
			} else {
				since[ld.Node.ID] = env.Now
			}
		}
	}
	h.since = since
	order := slices.Clone(l.List)
	slices.SortStableFunc(order, func(a, b *Load) int { return cmp.Compare(b.Keys, a.Keys) })
	var out []*operator.Operator
	for _, src := range order {
		if src.Node.EvictPrimaries {
			continue // drain takes its primaries
		}
		for len(out) < min(max, env.Hot.PerPass) {
			t, hot := h.since[src.Node.ID]
			if !hot || env.Now-t < env.Hot.Hold || src.Keys <= limit || src.KeysNow-src.Keys >= pendingShare*src.KeysNow {
				break
			}
			op := h.shed(env, src, mean, limit)
			if op == nil {
				break
			}
			out = append(out, op)
		}
	}
	return out
}

// HotNodes returns the nodes hot at the last pass and since when.
func (h *Hot) HotNodes() map[uint64]time.Duration { return h.since }

// shed proposes one operator that takes load off src.
func (h *Hot) shed(env *Env, src *Load, mean, limit float64) *operator.Operator {
	l := env.Loads
	var led []*view.Shard
	for _, sh := range src.shards {
		if sh.Primary == src.Node.ID && sh.Load.Keys() > 0 && !env.Busy(sh.ID) && !env.Follows(sh) {
			if t := env.View.Tables[sh.Table]; t != nil && t.Public {
				led = append(led, sh)
			}
		}
	}
	if len(led) == 0 {
		return nil
	}
	slices.SortStableFunc(led, func(a, b *view.Shard) int {
		if c := cmp.Compare(b.Load.Keys(), a.Load.Keys()); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	coolest := math.Inf(1)
	for _, ld := range l.List {
		coolest = math.Min(coolest, ld.Keys)
	}
	excess := src.Keys - mean
	canReceive := func(id uint64) bool { return env.CanReceive == nil || env.CanReceive(operator.Hot, id) }
	// The hottest shards first: each is transferred, else split if no node could take it,
	// else moved; a shard shedding less than a tenth of the excess (or of the band above the
	// mean, when the excess is spread over many shards) is not worth an operator.
	for _, sh := range led {
		k := sh.Load.Keys()
		if math.Min(k, excess) < math.Min(excess, mean*env.Hot.Ratio)/10 {
			break
		}
		// A primary to an in-line replica on a cooler node.
		var to *Load
		for _, r := range sh.Replicas {
			dst := l.ByID[r]
			if dst != nil && r != src.Node.ID && sh.IsInLine(r) && l.TakesLoad(env, dst, sh) && !dst.Node.EvictPrimaries && primaryMayMove(env, sh, src.Node.ID, r) && (to == nil || dst.Keys < to.Keys) {
				to = dst
			}
		}
		if to != nil {
			env.Claim(sh.ID)
			reason := fmt.Sprintf("hot: node %d leads %.0f keys/s (mean %.0f): primary of shard %d (%.0f keys/s) to node %d (%.0f)",
				src.Node.ID, src.Keys, mean, sh.ID, k, to.Node.ID, to.Keys)
			env.Transferred(sh, src.Node.ID, to.Node.ID)
			return operator.New(operator.Hot, sh, reason, operator.Step{Kind: operator.TransferPrimary, Node: to.Node.ID})
		}
		// Too hot for any node (it would make even the coolest hot): split it by load.
		if coolest+k > limit {
			if env.NewShardID == nil || (env.SplitBlocked != nil && env.SplitBlocked(sh.ID)) {
				continue
			}
			id := env.NewShardID()
			if id == 0 {
				return nil
			}
			env.Claim(sh.ID)
			reason := fmt.Sprintf("hot: node %d leads %.0f keys/s (mean %.0f): shard %d takes %.0f, more than any node can take",
				src.Node.ID, src.Keys, mean, sh.ID, k)
			return operator.New(operator.Hot, sh, reason, operator.Step{Kind: operator.Split, Node: src.Node.ID, NewShard: id, Version: sh.Version, ByLoad: true})
		}
		// A replica, with its primary role, to the coolest eligible node.
		var dst *Load
		for _, ld := range l.List {
			if (dst == nil || ld.Keys < dst.Keys) && ld.Keys+k <= limit && !ld.Node.EvictPrimaries && primaryMayMove(env, sh, src.Node.ID, ld.Node.ID) && Eligible(env, sh, src.Node.ID, ld) &&
				canReceive(ld.Node.ID) && env.CanSnapshot(operator.Hot, src.Node.ID, ld.Node.ID) {
				dst = ld
			}
		}
		if dst == nil {
			continue
		}
		env.Claim(sh.ID)
		reason := fmt.Sprintf("hot: node %d leads %.0f keys/s (mean %.0f): shard %d (%.0f keys/s) moves to node %d (%.0f)",
			src.Node.ID, src.Keys, mean, sh.ID, k, dst.Node.ID, dst.Keys)
		op := operator.New(operator.Hot, sh, reason, operator.Move(sh, src.Node.ID, dst.Node.ID)...)
		env.Moved(sh, src.Node.ID, dst.Node.ID)
		return op
	}
	return nil
}
