// Package scheduler holds the schedulers: pure functions of one tick's view that return
// operators (balance replicas by count and bytes, balance primaries, drain offline nodes), one
// per file, and the load model they and placement share.
package scheduler

import (
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Load is one up node's load, projected to the end of the operators under way (so a move's
// effect counts from the moment it is decided: no A→B→A while stats catch up).
type Load struct {
	Node      *view.Node
	Count     int    // replicas and learners held
	Bytes     uint64 // their sizes
	Primaries int
	// Keys is the load (keys read and written per second) of the shards the node leads, with
	// the operators under way projected; KeysNow without them. Their difference is the load
	// already on its way off (or onto) the node.
	Keys, KeysNow float64
	// Weight is the node's share of the cluster's capacity (1/n when capacities are unknown).
	Weight float64
	shards []*view.Shard
	tables map[uint64]int // table -> replicas held; counted when first asked
}

// TableCount is how many replicas of table the node holds.
func (ld *Load) TableCount(table uint64) int {
	if ld.tables == nil {
		ld.tables = map[uint64]int{}
		for _, sh := range ld.shards {
			ld.tables[sh.Table]++
		}
	}
	return ld.tables[table]
}

func (ld *Load) tableAdd(table uint64, d int) {
	if ld.tables != nil {
		ld.tables[table] += d
	}
}

// Loads is the load of every up node, and the totals the objectives are relative to.
type Loads struct {
	List  []*Load // up nodes, by id
	ByID  map[uint64]*Load
	dense []*Load // by id, when ids are small: the hot path of Compute
	Count int
	Bytes uint64
	// Primaries counts the shards led by up nodes; Keys is their load.
	Primaries int
	Keys      float64
	// UseBytes: the cluster holds enough data (MinBytesPerNode a node on average) for bytes to
	// be an objective; below it, sizes are noise and only counts are balanced.
	UseBytes bool
}

// MinBytesPerNode is the average data a node must hold before bytes are balanced: one
// default-size shard.
const MinBytesPerNode = 64 << 20

// Compute builds the loads of v's up nodes, with the shards under operators projected to the
// end of their steps.
func Compute(v *view.Cluster, ops map[uint64]*operator.Operator) *Loads {
	l := &Loads{ByID: map[uint64]*Load{}}
	var capSum uint64
	known := true
	for _, n := range v.Nodes {
		if n.State != view.Up {
			continue
		}
		ld := &Load{Node: n}
		l.List = append(l.List, ld)
		l.ByID[n.ID] = ld
		capSum += n.Capacity
		if n.Capacity == 0 {
			known = false
		}
	}
	maxID := uint64(0)
	for _, ld := range l.List {
		maxID = max(maxID, ld.Node.ID)
	}
	if maxID < 1<<16 {
		l.dense = make([]*Load, maxID+1)
		for _, ld := range l.List {
			l.dense[ld.Node.ID] = ld
		}
	}
	per := 0
	if len(l.List) > 0 {
		per = len(v.Shards) * 3 / len(l.List)
	}
	for _, ld := range l.List {
		ld.shards = make([]*view.Shard, 0, per)
		if known && capSum > 0 {
			ld.Weight = float64(ld.Node.Capacity) / float64(capSum)
		} else {
			ld.Weight = 1 / float64(len(l.List))
		}
	}
	for _, sh := range v.Shards {
		if ld := l.get(sh.Primary); ld != nil {
			ld.KeysNow += sh.Load.Keys()
		}
		if op := ops[sh.ID]; op != nil && !op.State.Finished() {
			sh = Project(sh, op)
		}
		l.add(sh)
	}
	l.UseBytes = len(l.List) > 0 && l.Bytes/uint64(len(l.List)) >= MinBytesPerNode
	return l
}

// Project returns sh as it will be once op's remaining steps are done.
func Project(sh *view.Shard, op *operator.Operator) *view.Shard {
	for i := op.Current; i < len(op.Steps); i++ {
		if !op.Steps[i].Done(sh) {
			sh = op.Steps[i].Apply(sh)
		}
	}
	return sh
}

func (l *Loads) get(id uint64) *Load {
	if l.dense != nil {
		if id < uint64(len(l.dense)) {
			return l.dense[id]
		}
		return nil
	}
	return l.ByID[id]
}

func (l *Loads) hold(sh *view.Shard, n uint64) {
	ld := l.get(n)
	if ld == nil {
		return
	}
	ld.Count++
	ld.Bytes += sh.Size
	ld.shards = append(ld.shards, sh)
	l.Count++
	l.Bytes += sh.Size
}

func (l *Loads) add(sh *view.Shard) {
	for _, n := range sh.Replicas {
		l.hold(sh, n)
	}
	for _, n := range sh.Learners {
		l.hold(sh, n)
	}
	if ld := l.get(sh.Primary); ld != nil {
		ld.Primaries++
		ld.Keys += sh.Load.Keys()
		l.Primaries++
		l.Keys += sh.Load.Keys()
	}
}

// Moved accounts for a replica of sh moving from one node to another (either may be 0: an
// added or a removed replica), and the primary role with it if from led the shard.
func (l *Loads) Moved(sh *view.Shard, from, to uint64) {
	if ld := l.ByID[from]; ld != nil {
		ld.Count--
		ld.Bytes -= sh.Size
		ld.tableAdd(sh.Table, -1)
		if sh.Primary == from {
			ld.Primaries--
			ld.Keys -= sh.Load.Keys()
		}
	}
	if ld := l.ByID[to]; ld != nil {
		ld.Count++
		ld.Bytes += sh.Size
		ld.tableAdd(sh.Table, 1)
		if sh.Primary == from && from != 0 {
			ld.Primaries++
			ld.Keys += sh.Load.Keys()
		}
	}
}

// Transferred accounts for sh's primary role moving.
func (l *Loads) Transferred(sh *view.Shard, from, to uint64) {
	if ld := l.ByID[from]; ld != nil {
		ld.Primaries--
		ld.Keys -= sh.Load.Keys()
	}
	if ld := l.ByID[to]; ld != nil {
		ld.Primaries++
		ld.Keys += sh.Load.Keys()
	}
}

// MeanKeys is the mean load of an up node.
func (l *Loads) MeanKeys() float64 {
	if len(l.List) == 0 {
		return 0
	}
	return l.Keys / float64(len(l.List))
}

// TakesLoad reports whether node ld can lead sh as well without its load going past the
// mean by more than half the hot ratio (so a balancer never makes a node hot, and hot
// scheduling never undoes a balancer's move). Without load worth scheduling, any node can.
func (l *Loads) TakesLoad(env *Env, ld *Load, sh *view.Shard) bool {
	mean := l.MeanKeys()
	if mean < env.Hot.MinKeys || sh.Load.Keys() == 0 {
		return true
	}
	return ld.Keys+sh.Load.Keys() <= mean*(1+env.Hot.Ratio/2)
}

// DevCount is how far node's replica count is from its capacity share (0.1 = 10 % above).
func (l *Loads) DevCount(ld *Load) float64 {
	if l.Count == 0 {
		return 0
	}
	return float64(ld.Count)/(ld.Weight*float64(l.Count)) - 1
}

// DevBytes is how far node's bytes are from its capacity share (0 when bytes are not used).
func (l *Loads) DevBytes(ld *Load) float64 {
	if !l.UseBytes || l.Bytes == 0 {
		return 0
	}
	return float64(ld.Bytes)/(ld.Weight*float64(l.Bytes)) - 1
}

// Score is the balance objective of one node: the mean of its count and bytes deviations
// (count alone when bytes are not used). Placement and the balancer both use it.
func (l *Loads) Score(ld *Load) float64 {
	if !l.UseBytes {
		return l.DevCount(ld)
	}
	return (l.DevCount(ld) + l.DevBytes(ld)) / 2
}

// OneShard is the count deviation one replica makes on node ld.
func (l *Loads) OneShard(ld *Load) float64 {
	if l.Count == 0 {
		return 1
	}
	return 1 / (ld.Weight * float64(l.Count))
}

// ByScore returns the loads sorted by score, highest first (ties: lower id first).
func (l *Loads) ByScore() []*Load {
	out := slices.Clone(l.List)
	sc := make(map[uint64]float64, len(out))
	for _, ld := range out {
		sc[ld.Node.ID] = l.Score(ld)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := sc[out[i].Node.ID], sc[out[j].Node.ID]
		if a != b {
			return a > b
		}
		return out[i].Node.ID < out[j].Node.ID
	})
	return out
}

// Env is what a scheduler reads in one tick.
type Env struct {
	View  *view.Cluster
	Loads *Loads
	// HasOp reports whether a shard has an operator queued or running.
	HasOp func(shard uint64) bool
	// Cooling reports whether node's replica of shard arrived by a move too recently to leave.
	Cooling func(shard, node uint64) bool
	// CanSnapshot reports whether the controller has budget now for an operator of kind
	// sending a snapshot from one node to another.
	CanSnapshot func(kind operator.Kind, from, to uint64) bool
	// CanReceive reports whether node to could receive a snapshot of kind now (nil: yes).
	CanReceive func(kind operator.Kind, to uint64) bool
	Bands      Bands
	// LowSpaceRatio: nodes using more of their capacity get no new replica (0: no limit);
	// HighSpaceRatio: nodes using more shed replicas (0: never).
	LowSpaceRatio, HighSpaceRatio float64
	// Hot says when a node's load is hot.
	Hot HotConfig
	// Now is the coordinator's clock.
	Now time.Duration
	// NewShardID reserves an id for the new half of a split (nil: no splits).
	NewShardID func() uint64
	// SplitBlocked reports whether a split by load of shard failed recently (nil: none).
	SplitBlocked func(shard uint64) bool
	// Anchors maps each shard of a shard group's other tables to its anchor: the shard of the
	// group's anchor table it follows (GroupAnchors). Schedulers leave followers alone.
	Anchors map[uint64]*view.Shard
	// Followers is the inverse of Anchors: an anchor's followers (they follow its moves one
	// patrol later; a scheduler accounts for them with the anchor).
	Followers map[uint64][]*view.Shard
	// Merge says which neighbours merge; RightNeighbour returns the next shard of a shard's
	// table partition (nil: none; a nil func: no merges); MergeBlocked whether a shard split
	// too recently to merge (nil: none did).
	Merge          MergeConfig
	RightNeighbour func(shard uint64) *view.Shard
	MergeBlocked   func(shard uint64) bool
	// Merging reports whether the merge checker is bringing a shard together with a neighbour
	// (the schedulers leave it alone); IntendMerge records that it started to (nil: no record).
	Merging     func(shard uint64) bool
	IntendMerge func(left, right uint64)

	claimed map[uint64]bool
}

// Transferred accounts for sh's primary role moving, and its followers' that will follow.
func (e *Env) Transferred(sh *view.Shard, from, to uint64) {
	e.Loads.Transferred(sh, from, to)
	for _, f := range e.Followers[sh.ID] {
		if f.Primary == from && f.Holds(to) {
			e.Loads.Transferred(f, from, to)
		}
	}
}

// groupMoves is how many primaries hand over with sh's from one node to another: its own and
// its followers' that follow (see Transferred).
// A group whose followers are not with their anchor yet (or busy getting there) does not move
// at all (a large count): the anchor would run from followers chasing it.
func (e *Env) groupMoves(sh *view.Shard, from, to uint64) int {
	n := 1
	for _, f := range e.Followers[sh.ID] {
		if f.Primary != sh.Primary || e.Busy(f.ID) {
			return math.MaxInt32
		}
		if f.Holds(to) {
			n++
		}
	}
	return n
}

// Moved accounts for a replica of sh moving, and its followers' that will follow.
func (e *Env) Moved(sh *view.Shard, from, to uint64) {
	e.Loads.Moved(sh, from, to)
	for _, f := range e.Followers[sh.ID] {
		if f.Holds(from) && !f.Holds(to) {
			e.Loads.Moved(f, from, to)
		}
	}
}

// Follows reports whether sh follows a shard group's anchor (and so is moved by alignment,
// not by the schedulers).
func (e *Env) Follows(sh *view.Shard) bool { return e.Anchors[sh.ID] != nil }

// GroupFollowers inverts GroupAnchors.
func GroupFollowers(anchors map[uint64]*view.Shard, v *view.Cluster) map[uint64][]*view.Shard {
	if anchors == nil {
		return nil
	}
	out := map[uint64][]*view.Shard{}
	for _, sh := range v.Shards {
		if a := anchors[sh.ID]; a != nil {
			out[a.ID] = append(out[a.ID], sh)
		}
	}
	return out
}

// GroupAnchors maps every shard of a shard group's tables but the anchor table's (the public
// member of lowest id) to the anchor table's shard of the same partition whose range holds the
// shard's start key. Nil if no public table is in a group.
func GroupAnchors(v *view.Cluster) map[uint64]*view.Shard {
	anchor := map[string]uint64{} // group -> anchor table
	for _, t := range v.Tables {
		if t.Group != "" && t.Public && (anchor[t.Group] == 0 || t.ID < anchor[t.Group]) {
			anchor[t.Group] = t.ID
		}
	}
	if len(anchor) == 0 {
		return nil
	}
	type part struct {
		table uint64
		name  string
	}
	ranges := map[part][]*view.Shard{}
	for _, sh := range v.Shards {
		if t := v.Tables[sh.Table]; t != nil && t.Group != "" && anchor[t.Group] == sh.Table {
			ranges[part{sh.Table, sh.Partition}] = append(ranges[part{sh.Table, sh.Partition}], sh)
		}
	}
	for _, list := range ranges {
		slices.SortFunc(list, func(a, b *view.Shard) int { return strings.Compare(a.Start, b.Start) })
	}
	out := map[uint64]*view.Shard{}
	for _, sh := range v.Shards {
		t := v.Tables[sh.Table]
		if t == nil || t.Group == "" || anchor[t.Group] == sh.Table {
			continue
		}
		list := ranges[part{anchor[t.Group], sh.Partition}]
		i := sort.Search(len(list), func(i int) bool { return list[i].Start > sh.Start }) - 1
		if i >= 0 {
			out[sh.ID] = list[i]
		}
	}
	return out
}

// Busy reports whether a shard has an operator, or one proposed earlier in this tick, or is
// being brought together with a neighbour to merge.
func (e *Env) Busy(id uint64) bool {
	return e.claimed[id] || (e.HasOp != nil && e.HasOp(id)) || (e.Merging != nil && e.Merging(id))
}

// Claim marks a shard as having an operator proposed in this tick.
func (e *Env) Claim(id uint64) {
	if e.claimed == nil {
		e.claimed = map[uint64]bool{}
	}
	e.claimed[id] = true
}

// Bands are the deadband of the balancers, as deviations from a node's share.
type Bands struct {
	// Start: a balancer starts once a node is outside ±Start (and one shard).
	Start float64
	// Stop: it stops once every node is inside ±Stop (or one shard).
	Stop float64
}

// DefaultBands: start outside ±5 %, stop inside ±2.5 %.
var DefaultBands = Bands{Start: 0.05, Stop: 0.025}

// Target picks the node for a new replica of sh (replacing from, 0 if none): an up node that
// holds no replica of it, that its table allows, keeping its replicas on distinct isolation
// values, with the lowest score; 0 if none. ok filters further (nil: any).
func Target(env *Env, sh *view.Shard, from uint64, ok func(*Load) bool) uint64 {
	var best *Load
	bestScore := math.Inf(1)
	for _, ld := range env.Loads.List {
		if !Eligible(env, sh, from, ld) || (ok != nil && !ok(ld)) {
			continue
		}
		if s := env.Loads.Score(ld); s < bestScore {
			best, bestScore = ld, s
		}
	}
	if best == nil {
		return 0
	}
	return best.Node.ID
}

// Eligible reports whether up node ld may receive a new replica of sh (replacing from, 0 if
// none): it holds none, the table allows it, the replicas stay on distinct isolation values,
// and it is not low on space. Every choice of a node for a new replica goes through it.
func Eligible(env *Env, sh *view.Shard, from uint64, ld *Load) bool {
	id := ld.Node.ID
	t := env.View.Tables[sh.Table]
	if sh.Holds(id) || (t != nil && !t.Allows(id)) || ld.Node.LowOnSpace(ld.Bytes, env.LowSpaceRatio) {
		return false
	}
	return Isolated(env.View, t, sh, from, id)
}

// Isolated reports whether sh's replicas, with from replaced by to, keep the table's
// isolation rule.
func Isolated(v *view.Cluster, t *view.Table, sh *view.Shard, from, to uint64) bool {
	if t == nil || t.IsolationLabel == "" {
		return true
	}
	nodes := make([]uint64, 0, len(sh.Replicas)+1)
	for _, r := range sh.Replicas {
		if r != from {
			nodes = append(nodes, r)
		}
	}
	return v.Isolated(t, append(nodes, to))
}
