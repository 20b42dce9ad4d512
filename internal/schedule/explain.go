package schedule

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/postdb/pcs/internal/schedule/checker"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// noShardID stands in for a new shard's id in a dry run (nothing is allocated).
const noShardID = math.MaxUint64

// dryEnv is the environment of a tick over v that allocates nothing.
func (c *Coordinator) dryEnv(now time.Duration, v *view.Cluster) *scheduler.Env {
	c.decorate(v)
	env := c.env(now, v)
	env.NewShardID = func() uint64 { return noShardID }
	return env
}

// why lists the reasons the coordinator decides nothing at all now (empty if it decides).
func (c *Coordinator) why(v *view.Cluster) []string {
	var out []string
	if c.cfg.Halt {
		out = append(out, "halt-scheduling is on: no new operator is admitted")
	}
	for _, n := range v.Nodes {
		if n.State != view.Down && n.State != view.Tombstone && !n.Heard {
			out = append(out, fmt.Sprintf("node %d has not heartbeated to this PCS primary yet: nothing is scheduled until every node has", n.ID))
		}
	}
	return out
}

// ExplainShard says what the coordinator sees of shard id and would do now: the operator it
// has, or a dry run of every checker; for each up node, whether it could receive a replica and
// which filter refuses it; the load and balance of the nodes holding it. It changes nothing.
func (c *Coordinator) ExplainShard(now time.Duration, v *view.Cluster, id uint64) ([]string, error) {
	sh := findShard(v.Shards, id)
	if sh == nil {
		return nil, fmt.Errorf("%w: shard %d is not in the catalog", ErrNotFound, id)
	}
	env := c.dryEnv(now, v)
	t := v.Tables[sh.Table]
	out := []string{fmt.Sprintf("shard %d: table %d, partition %q, version %d, conf_ver %d, term %d; primary %d, replicas %v, learners %v, in line %v; %d bytes; %.1f keys/s",
		sh.ID, sh.Table, sh.Partition, sh.Version, sh.ConfVer, sh.Term, sh.Primary, sh.Replicas, sh.Learners, sh.InLine, sh.Size, sh.Load.Keys())}
	out = append(out, c.why(v)...)
	if t != nil {
		out = append(out, fmt.Sprintf("table %d: %d replicas, isolation %q, primary policy %q, public %v", t.ID, t.Replicas, t.IsolationLabel, t.Primaries, t.Public))
	}
	if a := env.Anchors[sh.ID]; a != nil {
		out = append(out, fmt.Sprintf("shard group %s: follows anchor shard %d (primary %d, replicas %v); only the group checker moves it", t.Group, a.ID, a.Primary, a.Replicas))
	}
	if op := c.ops[sh.ID]; op != nil {
		out = append(out, fmt.Sprintf("under operator: %s", op), "checkers and schedulers leave a shard with an operator alone")
	} else {
		for _, ck := range checker.All() {
			if op := ck.Check(env, sh); op != nil {
				out = append(out, fmt.Sprintf("checker %s: would propose %s", ck.Name(), op))
				break
			}
			out = append(out, fmt.Sprintf("checker %s: nothing to do", ck.Name()))
		}
	}
	// Targets for a new replica, and why not.
	env = c.dryEnv(now, v)
	for _, ld := range env.Loads.List {
		n := ld.Node
		why := ""
		switch {
		case sh.Holds(n.ID):
			why = "holds a replica"
		case t != nil && !t.Allows(n.ID):
			why = "not among the table's nodes"
		case n.LowOnSpace(ld.Bytes, env.LowSpaceRatio):
			why = fmt.Sprintf("low on space: replicas use %.1f%% of its capacity (low-space-ratio %.0f%%)", 100*float64(ld.Bytes)/float64(n.Capacity), 100*env.LowSpaceRatio)
		case !scheduler.Isolated(v, t, sh, 0, n.ID):
			why = fmt.Sprintf("would put two replicas on %s=%q", t.IsolationLabel, v.Zone(n.ID, t.IsolationLabel))
		case !env.CanSnapshot(operator.Balance, sh.Primary, n.ID):
			why = "eligible, but no balancing snapshot budget to it from the primary now"
		default:
			why = "eligible"
		}
		out = append(out, fmt.Sprintf("node %d as a new replica: %s (score %+.3f: count %+.3f, bytes %+.3f; leads %.1f keys/s)",
			n.ID, why, env.Loads.Score(ld), env.Loads.DevCount(ld), env.Loads.DevBytes(ld), ld.Keys))
	}
	for _, r := range slices.Concat(sh.Replicas, sh.Learners) {
		if env.Cooling(sh.ID, r) {
			out = append(out, fmt.Sprintf("node %d's replica arrived by a move less than %s ago: balancing does not move it again yet", r, c.cfg.Cooldown))
		}
	}
	return out, nil
}

// ExplainNode says what the coordinator sees of node id: its state, space, replica count and
// bytes against its share and the balancers' bands, primaries and load against the mean and the
// hot threshold, and the operators that involve it. It changes nothing.
func (c *Coordinator) ExplainNode(now time.Duration, v *view.Cluster, id uint64) ([]string, error) {
	n := v.Node(id)
	if n == nil {
		return nil, fmt.Errorf("%w: node %d is not in the catalog", ErrNotFound, id)
	}
	env := c.dryEnv(now, v)
	out := []string{fmt.Sprintf("node %d: %s, labels %v, capacity %d bytes, heard %v, evicting primaries %v", n.ID, n.State, n.Labels, n.Capacity, n.Heard, n.EvictPrimaries)}
	out = append(out, c.why(v)...)
	l := env.Loads
	ld := l.ByID[id]
	if ld == nil {
		return append(out, "not up: no scheduler moves anything to it; drain and repair move its replicas away"), nil
	}
	if n.Capacity > 0 {
		used := float64(ld.Bytes) / float64(n.Capacity)
		state := "below low-space-ratio: takes new replicas"
		switch {
		case n.LowOnSpace(ld.Bytes, env.HighSpaceRatio):
			state = "above high-space-ratio: sheds replicas"
		case n.LowOnSpace(ld.Bytes, env.LowSpaceRatio):
			state = "above low-space-ratio: takes no new replica"
		}
		out = append(out, fmt.Sprintf("space: replicas use %.1f%% of its capacity; %s", 100*used, state))
	}
	band := func(dev float64) string {
		switch a := math.Abs(dev); {
		case a > c.cfg.Bands.Start:
			return fmt.Sprintf("outside the start band ±%.1f%%: balancing acts", 100*c.cfg.Bands.Start)
		case a > c.cfg.Bands.Stop:
			return fmt.Sprintf("inside the start band, outside the stop band ±%.1f%%: balancing goes on only if already active", 100*c.cfg.Bands.Stop)
		}
		return "inside the stop band"
	}
	out = append(out, fmt.Sprintf("replicas: %d, %+.1f%% from its share (weight %.3f): %s", ld.Count, 100*l.DevCount(ld), ld.Weight, band(l.DevCount(ld))))
	if l.UseBytes {
		out = append(out, fmt.Sprintf("bytes: %d, %+.1f%% from its share: %s", ld.Bytes, 100*l.DevBytes(ld), band(l.DevBytes(ld))))
	} else {
		out = append(out, fmt.Sprintf("bytes: %d; the cluster holds less than %d bytes a node, so only counts are balanced", ld.Bytes, scheduler.MinBytesPerNode))
	}
	meanP := float64(l.Primaries) / float64(len(l.List))
	out = append(out, fmt.Sprintf("primaries: %d (mean %.1f)", ld.Primaries, meanP))
	mean := l.MeanKeys()
	hot := ""
	if at, ok := c.HotSince()[id]; ok {
		hot = fmt.Sprintf("; hot for %s (sheds after hot-hold %s)", (now - at).Round(time.Second), c.cfg.Hot.Hold)
	}
	if mean < c.cfg.Hot.MinKeys {
		out = append(out, fmt.Sprintf("load: leads %.1f keys/s; the mean %.1f is below hot-min-keys %.0f: nothing is hot", ld.Keys, mean, c.cfg.Hot.MinKeys))
	} else {
		out = append(out, fmt.Sprintf("load: leads %.1f keys/s (%.1f before the operators under way), mean %.1f, hot above %.1f%s",
			ld.Keys, ld.KeysNow, mean, mean*(1+c.cfg.Hot.Ratio), hot))
	}
	for _, op := range c.Operators(false) {
		involves := op.From == id || op.To == id || op.SnapFrom == id
		for _, st := range op.Steps {
			involves = involves || st.Node == id
		}
		if involves {
			out = append(out, fmt.Sprintf("operator: %s", op))
		}
	}
	return out, nil
}
