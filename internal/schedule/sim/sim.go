// Package sim is a discrete-event simulator on virtual time: it runs the real coordinator,
// checkers, schedulers and controller (package schedule) against simulated data nodes —
// heartbeats at a cadence, snapshots that take bytes / the bandwidth the link gives them,
// failures — and records what happened: a per-minute metric table, an operator trace and a
// hash of the trace (same seed and scenario, same hash). Nothing reads the wall clock.
package sim

import (
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
	"github.com/postdb/pcs/internal/schedule"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Params are the simulated cluster's timings.
type Params struct {
	Tick          time.Duration // coordinator tick (default 1 s)
	Step          time.Duration // transfer integration step (default 100 ms)
	Heartbeat     time.Duration // node heartbeat cadence (default 1 s)
	DownTimeout   time.Duration // silence before a node is down (default 30 s)
	Election      time.Duration // a new PCS primary after the old one dies (default 3 s)
	LinkBytesPerS uint64        // each node's network for snapshots, in and out (default = budget)
}

type node struct {
	view.Node
	alive    bool
	lastBeat time.Duration
	phase    time.Duration
}

type transfer struct {
	shard, from, to uint64
	left            float64
}

// Sim is one simulated cluster.
type Sim struct {
	P      Params
	Cfg    schedule.Config
	clk    *clock.Manual
	rng    *rand.Rand
	nodes  []*node
	shards []*view.Shard // the catalog, by id; replaced, never changed in place
	tables map[uint64]*view.Table
	// stats the primaries last reported: shard -> in-line set is kept in the shard itself
	transfers []*transfer
	dirty     map[uint64]bool // shards whose in-line set may change at their primary's next report
	coord     *schedule.Coordinator
	persisted map[uint64]*pcspb.Operator // the operators in the replicated state
	nextOp    uint64
	nextShard uint64        // the last shard id given out
	pcsUpAt   time.Duration // a new PCS primary takes office then (0: one is in office)
	electedAt time.Duration
	trace     hash.Hash64
	traceOut  io.Writer
	Table     io.Writer // per-minute metrics, if set

	splitReq []*pcspb.SplitShardCommand  // the splits the coordinator asks of primaries
	mergeReq []*pcspb.MergeShardsCommand // the merges, likewise
	splitAt  map[uint64]time.Duration    // when each shard was last split (both halves)

	// Records.
	Moves, Reverted, Transfers int
	// PrimaryTransfers counts primary changes operators made; Splits the splits carried out,
	// the first at FirstSplitAt (-1: none yet).
	PrimaryTransfers, Splits int
	FirstSplitAt             time.Duration
	// Merges counts the merges carried out; MergesInCooldown those of a shard split less than
	// split-merge-interval before, HotMerges those of shards serving more than merge-max-keys
	// together (both must stay 0).
	Merges, MergesInCooldown, HotMerges int
	// AddedLowSpace counts replicas added to a node whose replicas took more than the
	// low-space ratio of its capacity.
	AddedLowSpace int
	// MaxPrimaryless is the most shards seen at once whose primary's node is not running.
	MaxPrimaryless int
	added          map[[2]uint64]bool // (shard, node) added by a balance operator
	// FirstOpAfterElection: from a new PCS primary's election to its first decision carried
	// out (a new operator, or the next step of one it resumed).
	FirstOpAfterElection time.Duration
	Duplicates           int
	IsolationViolations  int
	MinLive              int
	startMoves           int
}

// New returns an empty cluster.
func New(seed uint64, p Params, cfg schedule.Config) *Sim {
	if p.Tick == 0 {
		p.Tick = time.Second
	}
	if p.Step == 0 {
		p.Step = 100 * time.Millisecond
	}
	if p.Heartbeat == 0 {
		p.Heartbeat = time.Second
	}
	if p.DownTimeout == 0 {
		p.DownTimeout = 30 * time.Second
	}
	if p.Election == 0 {
		p.Election = 3 * time.Second
	}
	s := &Sim{P: p, Cfg: cfg, clk: clock.NewManual(0), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		tables: map[uint64]*view.Table{}, persisted: map[uint64]*pcspb.Operator{}, trace: fnv.New64a(),
		added: map[[2]uint64]bool{}, dirty: map[uint64]bool{}, splitAt: map[uint64]time.Duration{}, MinLive: math.MaxInt, FirstOpAfterElection: -1, FirstSplitAt: -1}
	s.coord = s.newCoordinator()
	return s
}

func (s *Sim) newCoordinator() *schedule.Coordinator {
	return schedule.New(s.Cfg, func(kind string) uint64 {
		if kind == schedule.ShardIDs {
			s.nextShard++
			return s.nextShard
		}
		s.nextOp++
		return s.nextOp
	})
}

// Now is the virtual time.
func (s *Sim) Now() time.Duration { return s.clk.Mono() }

// TraceHash is the hash of every operator event so far.
func (s *Sim) TraceHash() uint64 { return s.trace.Sum64() }

// SetTrace makes the simulator write its operator trace to w.
func (s *Sim) SetTrace(w io.Writer) { s.traceOut = w }

func (s *Sim) event(format string, args ...any) {
	line := fmt.Sprintf("%9.1fs ", s.Now().Seconds()) + fmt.Sprintf(format, args...) + "\n"
	s.trace.Write([]byte(line))
	if s.traceOut != nil {
		io.WriteString(s.traceOut, line)
	}
}

// AddNode adds an up node.
func (s *Sim) AddNode(labels map[string]string, capacity uint64) uint64 {
	id := uint64(len(s.nodes) + 1)
	n := &node{Node: view.Node{ID: id, Labels: labels, Capacity: capacity, State: view.Up, Heard: true}, alive: true,
		lastBeat: s.Now(), phase: time.Duration(s.rng.Int64N(int64(s.P.Heartbeat)))}
	s.nodes = append(s.nodes, n)
	s.event("node %d added %v capacity %d", id, labels, capacity)
	return id
}

// AddTable creates a table of n shards (partitions p0..p<n-1>, one shard each) with sizes from
// size(), placed like create-time placement (least loaded, isolation kept); in a shard group,
// as the group's first table's shards are, partition by partition.
func (s *Sim) AddTable(n, replicas int, isolation, group string, ranged bool, size func(*rand.Rand) uint64) error {
	tid := uint64(len(s.tables) + 1)
	t := &view.Table{ID: tid, Name: fmt.Sprintf("t%d", tid), Replicas: replicas, IsolationLabel: isolation, Public: true, Group: group}
	var anchor *view.Table
	for _, o := range s.tables {
		if group != "" && o.Group == group && (anchor == nil || o.ID < anchor.ID) {
			anchor = o
		}
	}
	s.tables[tid] = t
	if anchor != nil {
		var add []*view.Shard
		for _, a := range s.shards {
			if a.Table != anchor.ID {
				continue
			}
			s.nextShard++
			sh := &view.Shard{ID: s.nextShard, Table: tid, Version: 1, ConfVer: 1, Term: 1, Size: size(s.rng), Partition: a.Partition,
				Start: a.Start, End: a.End, Primary: a.Primary, Replicas: slices.Clone(a.Replicas), InLine: slices.Clone(a.Replicas)}
			add = append(add, sh)
		}
		s.shards = append(s.shards, add...)
		s.event("table %d joins group %s: %d shards", tid, group, len(add))
		return nil
	}
	count := map[uint64]int{}
	prim := map[uint64]int{}
	for i := 0; i < n; i++ {
		s.nextShard++
		sh := &view.Shard{ID: s.nextShard, Table: tid, Version: 1, ConfVer: 1, Term: 1, Size: size(s.rng), Partition: fmt.Sprintf("p%d", i)}
		if ranged { // one partition of n neighbouring ranges
			sh.Partition = "p0"
			if i > 0 {
				sh.Start = rangeKey(i)
			}
			if i < n-1 {
				sh.End = rangeKey(i + 1)
			}
		}
		var cands []*node
		for _, nd := range s.nodes {
			if nd.State == view.Up {
				cands = append(cands, nd)
			}
		}
		sort.SliceStable(cands, func(a, b int) bool {
			if count[cands[a].ID] != count[cands[b].ID] {
				return count[cands[a].ID] < count[cands[b].ID]
			}
			return cands[a].ID < cands[b].ID
		})
		zones := map[string]bool{}
		for _, c := range cands {
			if len(sh.Replicas) == replicas {
				break
			}
			z := c.Labels[isolation]
			if isolation != "" && zones[z] {
				continue
			}
			zones[z] = true
			sh.Replicas = append(sh.Replicas, c.ID)
		}
		if len(sh.Replicas) < replicas {
			return fmt.Errorf("table: not enough nodes for %d replicas", replicas)
		}
		sh.Primary = sh.Replicas[0]
		for _, r := range sh.Replicas {
			count[r]++
			if prim[r] < prim[sh.Primary] {
				sh.Primary = r
			}
		}
		prim[sh.Primary]++
		sh.InLine = slices.Clone(sh.Replicas)
		s.shards = append(s.shards, sh)
	}
	return nil
}

// rangeKey is the start of a ranged table's i-th shard: fixed width, so keys sort as numbers.
func rangeKey(i int) string { return fmt.Sprintf("r%08d", i) }

// DropRows deletes every row of a table and its traffic, leaving its shards empty (as a drop
// in TiDB leaves its ranges until they merge).
func (s *Sim) DropRows(table uint64) int {
	n := 0
	for i, sh := range s.shards {
		if sh.Table == table {
			c := *sh
			c.Size, c.Load = 0, view.Load{}
			s.shards[i] = &c
			n++
		}
	}
	s.event("rows of table %d dropped: %d shards empty", table, n)
	return n
}

func (s *Sim) node(id uint64) *node {
	if id == 0 || int(id) > len(s.nodes) {
		return nil
	}
	return s.nodes[id-1]
}

// Kill stops a node: it sends no heartbeat and no snapshot; after DownTimeout it is down and
// its replicas leave their configurations (failover).
func (s *Sim) Kill(id uint64) {
	s.node(id).alive = false
	for _, sh := range s.shards {
		if sh.Holds(id) {
			s.dirty[sh.ID] = true
		}
	}
	s.event("node %d killed", id)
}

// Start brings a stopped node back with its data (a restart): it heartbeats again; if it was
// declared down meanwhile, its replicas have left their configurations and it is up, empty.
func (s *Sim) Start(id uint64) {
	n := s.node(id)
	n.alive, n.lastBeat = true, s.Now()
	if n.State == view.Down {
		n.State = view.Up
	}
	for _, sh := range s.shards {
		if sh.Holds(id) {
			s.dirty[sh.ID] = true
		}
	}
	s.event("node %d started", id)
}

// SetEvict sets whether node id is to lead no shard (the evict-primaries setting).
func (s *Sim) SetEvict(id uint64, evict bool) {
	if s.Cfg.EvictPrimaries == nil {
		s.Cfg.EvictPrimaries = map[uint64]bool{}
	} else {
		s.Cfg.EvictPrimaries = maps.Clone(s.Cfg.EvictPrimaries)
	}
	if evict {
		s.Cfg.EvictPrimaries[id] = true
	} else {
		delete(s.Cfg.EvictPrimaries, id)
	}
	if s.coord != nil {
		s.coord.SetConfig(s.Cfg)
	}
	s.event("node %d evict-primaries %v", id, evict)
}

// Drain marks a node offline.
func (s *Sim) Drain(id uint64) {
	s.node(id).State = view.Offline
	s.event("node %d offline (drain)", id)
}

// KillPCSPrimary throws the coordinator away; a new one takes office after the election and
// resumes the persisted operators.
func (s *Sim) KillPCSPrimary() {
	s.coord = nil
	s.splitReq, s.mergeReq = nil, nil
	s.pcsUpAt = s.Now() + s.P.Election
	s.event("pcs primary killed")
}

// SetLoad spreads keys/s of traffic over every shard: one shard, picked at random, takes the
// hot share; the rest follow Zipf(s) in a random order (s 0: uniform). A read share of the
// traffic is reads, the rest writes; values are taken as 1 KiB.
func (s *Sim) SetLoad(keys, hot, zipf, reads float64) {
	n := len(s.shards)
	if n == 0 {
		return
	}
	order := s.rng.Perm(n)
	rest := keys
	if hot > 0 {
		rest = keys * (1 - hot)
	}
	var h float64
	for k := 1; k < n; k++ {
		h += math.Pow(float64(k), -zipf)
	}
	if hot <= 0 {
		h += math.Pow(float64(n), -zipf)
	}
	for rank, i := range order {
		var x float64
		switch {
		case hot > 0 && rank == 0:
			x = keys * hot
		case hot > 0:
			x = rest * math.Pow(float64(rank), -zipf) / h
		default:
			x = rest * math.Pow(float64(rank+1), -zipf) / h
		}
		n := *s.shards[i]
		n.Load = view.Load{Reads: x * reads, Writes: x * (1 - reads), ReadBytes: x * reads * 1024, WriteBytes: x * (1 - reads) * 1024}
		s.shards[i] = &n
	}
	s.event("load %.0f keys/s, hot %.2f, zipf %.2f, reads %.2f", keys, hot, zipf, reads)
}

// LoadLed gives count shards led by node (the lowest ids) keys/s of writes each (1 KiB values),
// as PD's simulator's hot-write case does to regions led by one store.
func (s *Sim) LoadLed(node uint64, count int, keys float64, reads bool) {
	n := 0
	for i, sh := range s.shards {
		if sh.Primary != node || n >= count {
			continue
		}
		c := *sh
		c.Load = view.Load{Writes: keys, WriteBytes: keys * 1024}
		if reads {
			c.Load = view.Load{Reads: keys, ReadBytes: keys * 1024}
		}
		s.shards[i] = &c
		n++
	}
	s.event("load %.0f keys/s on %d shards led by node %d", keys, n, node)
}

// split carries out a split the coordinator asked of the shard's primary: the new half takes
// half the size and, the split key halving the load (by load) or the data (uniform traffic
// assumed), half the load.
func (s *Sim) split(c *pcspb.SplitShardCommand) {
	sh := s.shard(c.ShardId)
	if sh == nil || sh.Version != c.Version || s.shard(c.NewShardId) != nil || c.NewShardId <= s.shards[len(s.shards)-1].ID {
		return
	}
	key := string(c.SplitKey)
	if key == "" {
		key = middle(sh.Start, sh.End)
	}
	if key <= sh.Start || (sh.End != "" && key >= sh.End) {
		return
	}
	left, right := *sh, *sh
	left.End, right.Start = key, key
	left.Version++
	left.Size /= 2
	left.Load = sh.Load.Scaled(0.5)
	right.ID, right.Version, right.Size, right.Load = c.NewShardId, sh.Version+1, sh.Size-left.Size, sh.Load.Scaled(0.5)
	right.Replicas, right.Learners, right.InLine = slices.Clone(sh.Replicas), slices.Clone(sh.Learners), slices.Clone(sh.InLine)
	s.setShard(&left)
	s.shards = append(s.shards, &right)
	s.splitAt[left.ID], s.splitAt[right.ID] = s.Now(), s.Now()
	s.Splits++
	if s.FirstSplitAt < 0 {
		s.FirstSplitAt = s.Now()
	}
	how := "at its middle"
	if c.ByLoad {
		how = "by load"
	}
	s.event("shard %d split %s into %d", sh.ID, how, right.ID)
}

// middle is a key strictly between start and end ("" end: unbounded): start's bytes with one
// byte appended halfway between the byte after start and end's, as the simulator's stand-in for
// a node's middle key.
func middle(start, end string) string {
	hi := 256
	if end != "" && len(end) > len(start) && end[:len(start)] == start {
		hi = int(end[len(start)])
	}
	if hi <= 1 {
		return start + "\x00" // end is start + "\x00" or "\x01": the least key after start
	}
	return start + string([]byte{byte(hi / 2)})
}

// SplitShard has shard id's primary split it at its middle (as pcsctl shard split does).
func (s *Sim) SplitShard(id uint64) error {
	sh := s.shard(id)
	if sh == nil {
		return fmt.Errorf("no shard %d", id)
	}
	s.nextShard++
	s.split(&pcspb.SplitShardCommand{ShardId: id, Version: sh.Version, NewShardId: s.nextShard})
	return nil
}

// NodeLoads returns each up node's load: the keys/s of the shards it leads.
func (s *Sim) NodeLoads() map[uint64]float64 {
	out := map[uint64]float64{}
	for _, n := range s.nodes {
		if n.State == view.Up {
			out[n.ID] = 0
		}
	}
	for _, sh := range s.shards {
		if _, ok := out[sh.Primary]; ok {
			out[sh.Primary] += sh.Load.Keys()
		}
	}
	return out
}

// Used is the bytes of the replicas and learners node id holds.
func (s *Sim) Used(id uint64) uint64 {
	var b uint64
	for _, sh := range s.shards {
		if sh.Holds(id) {
			b += sh.Size
		}
	}
	return b
}

// MaxSpaceUsed is the highest share of its capacity an up node's replicas take (0 if no node
// has a capacity).
func (s *Sim) MaxSpaceUsed() float64 {
	var mx float64
	for _, n := range s.nodes {
		if n.State == view.Up && n.Capacity > 0 {
			mx = math.Max(mx, float64(s.Used(n.ID))/float64(n.Capacity))
		}
	}
	return mx
}

// LoadMaxMean is the most loaded up node's load over the mean (1 without load).
func (s *Sim) LoadMaxMean() float64 {
	var sum, mx float64
	loads := s.NodeLoads()
	for _, l := range loads {
		sum += l
		mx = math.Max(mx, l)
	}
	if sum == 0 {
		return 1
	}
	return mx / (sum / float64(len(loads)))
}

// GrowSizes multiplies every shard's size.
func (s *Sim) GrowSizes(f float64) {
	for i, sh := range s.shards {
		n := *sh
		n.Size = uint64(float64(sh.Size) * f)
		s.shards[i] = &n
	}
	s.event("sizes x%.2f", f)
}

// Run advances virtual time by d.
func (s *Sim) Run(d time.Duration) { s.RunUntil(d, nil) }

// RunUntil advances until cond holds (checked every tick) or d has passed; it reports whether
// cond held.
func (s *Sim) RunUntil(d time.Duration, cond func() bool) bool {
	end := s.Now() + d
	nextTick := s.Now()
	for s.Now() < end {
		if s.Now() >= nextTick {
			s.tick()
			nextTick += s.P.Tick
			if cond != nil && cond() {
				return true
			}
		}
		s.step()
	}
	return cond == nil
}

// step moves the transfers and the heartbeats forward by one integration step.
func (s *Sim) step() {
	dt := s.P.Step
	link := float64(s.P.LinkBytesPerS)
	if link == 0 {
		link = float64(s.Cfg.SnapshotBytesPerSec)
	}
	outN, inN := map[uint64]int{}, map[uint64]int{}
	for _, t := range s.transfers {
		if s.node(t.from).alive && s.node(t.to).alive {
			outN[t.from]++
			inN[t.to]++
		}
	}
	live := s.transfers[:0]
	for _, t := range s.transfers {
		sh := s.shard(t.shard)
		if sh == nil || !slices.Contains(sh.Learners, t.to) || sh.Primary != t.from {
			continue // the learner or the sender went away: the transfer ends
		}
		if s.node(t.from).alive && s.node(t.to).alive {
			rate := math.Min(link/float64(outN[t.from]), link/float64(inN[t.to]))
			t.left -= rate * dt.Seconds()
		}
		if t.left > 0 {
			live = append(live, t)
		}
	}
	s.transfers = live
	s.clk.Advance(dt)
	now := s.Now()
	for _, n := range s.nodes {
		if !n.alive {
			continue
		}
		// Heartbeats on a fixed cadence per node: the primary reports who is in line.
		if (now-n.phase)/s.P.Heartbeat != (now-dt-n.phase)/s.P.Heartbeat {
			n.lastBeat = now
			if s.coord != nil && s.pcsUpAt == 0 {
				n.Heard = true
			}
			s.report(n.ID)
		}
	}
}

// report refreshes the in-line sets of the shards node id leads: a replica or learner with no
// snapshot under way is in line.
func (s *Sim) report(id uint64) {
	busy := map[[2]uint64]bool{}
	for _, t := range s.transfers {
		busy[[2]uint64{t.shard, t.to}] = true
	}
	for sid := range s.dirty {
		sh := s.shard(sid)
		if sh == nil || sh.Primary != id {
			continue
		}
		var in []uint64
		for _, r := range slices.Concat(sh.Replicas, sh.Learners) {
			if s.node(r).alive && !busy[[2]uint64{sh.ID, r}] {
				in = append(in, r)
			}
		}
		if !slices.Equal(in, sh.InLine) {
			n := *sh
			n.InLine = in
			s.setShard(&n)
		}
		if len(in) == len(sh.Replicas)+len(sh.Learners) {
			delete(s.dirty, sid)
		}
	}
	for _, c := range s.splitReq {
		if sh := s.shard(c.ShardId); sh != nil && sh.Primary == id {
			s.split(c)
		}
	}
	for _, c := range s.mergeReq {
		if sh := s.shard(c.ShardId); sh != nil && sh.Primary == id {
			s.merge(c)
		}
	}
}

// merge carries out a merge the coordinator asked of the shard's primary, under the data
// node's rules (kvnode.MergeShards): both shards led by this node at the versions asked, right
// neighbours of one partition, the same replicas, no learners, every replica in line.
func (s *Sim) merge(c *pcspb.MergeShardsCommand) {
	l, r := s.shard(c.ShardId), s.shard(c.SourceId)
	if l == nil || r == nil || l.Version != c.Version || r.Version != c.SourceVersion || l.Primary != r.Primary ||
		l.Table != r.Table || l.Partition != r.Partition || l.End == "" || l.End != r.Start ||
		len(l.Learners) > 0 || len(r.Learners) > 0 || len(l.Replicas) != len(r.Replicas) {
		return
	}
	for _, x := range l.Replicas {
		if !slices.Contains(r.Replicas, x) || !r.IsInLine(x) {
			return
		}
	}
	now := s.Now()
	for _, id := range []uint64{l.ID, r.ID} {
		if at, ok := s.splitAt[id]; ok && now-at < s.Cfg.Merge.AfterSplit {
			s.MergesInCooldown++
		}
	}
	if l.Load.Keys()+r.Load.Keys() > s.Cfg.Merge.MaxKeys {
		s.HotMerges++
	}
	n := *l
	n.End, n.Version, n.Size = r.End, max(l.Version, r.Version)+1, l.Size+r.Size
	n.Load = l.Load.Plus(r.Load)
	s.setShard(&n)
	i := sort.Search(len(s.shards), func(i int) bool { return s.shards[i].ID >= r.ID })
	s.shards = slices.Delete(s.shards, i, i+1)
	delete(s.dirty, r.ID)
	delete(s.splitAt, r.ID)
	s.Merges++
	s.event("shard %d absorbed %d", l.ID, r.ID)
}

func (s *Sim) shard(id uint64) *view.Shard {
	i := sort.Search(len(s.shards), func(i int) bool { return s.shards[i].ID >= id })
	if i < len(s.shards) && s.shards[i].ID == id {
		return s.shards[i]
	}
	return nil
}

func (s *Sim) setShard(sh *view.Shard) {
	i := sort.Search(len(s.shards), func(i int) bool { return s.shards[i].ID >= sh.ID })
	s.shards[i] = sh
}

// tick runs failure detection, failover and one coordinator tick.
func (s *Sim) tick() {
	now := s.Now()
	for _, n := range s.nodes {
		if !n.alive && n.State != view.Down && n.State != view.Tombstone && now-n.lastBeat >= s.P.DownTimeout {
			n.State = view.Down
			s.event("node %d down", n.ID) // the coordinator's failover pass takes it from here
		}
	}
	if s.coord == nil {
		if now < s.pcsUpAt {
			return
		}
		s.coord = s.newCoordinator()
		var ops []*operator.Operator
		for _, p := range s.persisted {
			op, err := operator.FromProto(p)
			if err != nil {
				panic(err)
			}
			ops = append(ops, op)
		}
		s.coord.Resume(ops, now)
		for _, n := range s.nodes {
			n.Heard = false
		}
		s.pcsUpAt, s.electedAt = 0, now
		s.event("pcs primary elected, %d operators resumed", len(ops))
	}
	v := &view.Cluster{Tables: s.tables, Shards: s.shards, CanMerge: true}
	for _, n := range s.nodes {
		nv := n.Node
		v.Nodes = append(v.Nodes, &nv)
	}
	v.Shards = s.withPositions(v)
	act := s.coord.Tick(now, v)
	for _, c := range act.Failovers {
		if err := s.changePrimary(c); err != nil {
			s.event("failover of shard %d refused: %v", c.ShardId, err)
		}
	}
	for _, op := range act.Save {
		if _, ok := s.persisted[op.ID]; !ok {
			s.event("%s", op)
			if s.electedAt > 0 && s.FirstOpAfterElection < 0 {
				s.FirstOpAfterElection = now - s.electedAt
			}
		}
		s.persisted[op.ID] = op.ToProto()
	}
	for _, op := range act.Finished {
		delete(s.persisted, op.ID)
		s.event("op %d %s", op.ID, op.State)
	}
	s.splitReq, s.mergeReq = act.Splits, act.Merges
	if len(act.Changes) > 0 && s.electedAt > 0 && s.FirstOpAfterElection < 0 {
		s.FirstOpAfterElection = now - s.electedAt // a resumed operator's step
	}
	seen := map[uint64]bool{}
	for _, ch := range act.Changes {
		if seen[ch.Cmd.ShardId] {
			s.Duplicates++
		}
		seen[ch.Cmd.ShardId] = true
		err := s.apply(ch.Cmd, ch.Op)
		s.coord.Applied(ch, err, now)
		if err != nil {
			s.event("op %d change refused: %v", ch.Op.ID, err)
		}
	}
	s.checkInvariants()
}

// apply is the catalog's configuration change (the same rules as internal/meta).
func (s *Sim) apply(c *pcspb.CmdChangeReplicas, op *operator.Operator) error {
	sh := s.shard(c.ShardId)
	if sh == nil || sh.Term != c.Term || sh.ConfVer != c.ConfVer {
		return fmt.Errorf("stale epoch")
	}
	var st operator.Step
	switch {
	case c.AddLearner != 0:
		if n := s.node(c.AddLearner); n == nil || n.State == view.Offline || n.State == view.Tombstone || sh.Holds(c.AddLearner) {
			return fmt.Errorf("add learner %d refused", c.AddLearner)
		}
		st = operator.Step{Kind: operator.AddLearner, Node: c.AddLearner}
		if n := s.node(c.AddLearner); n.Capacity > 0 && float64(s.Used(n.ID)) > s.Cfg.LowSpaceRatio*float64(n.Capacity) {
			s.AddedLowSpace++
		}
		s.transfers = append(s.transfers, &transfer{shard: sh.ID, from: sh.Primary, to: c.AddLearner, left: float64(sh.Size)})
		s.Transfers++
		s.dirty[sh.ID] = true
		if op.Kind == operator.Balance {
			s.Moves++
			s.added[[2]uint64{sh.ID, c.AddLearner}] = true
		} else if op.Kind != operator.Repair {
			s.Moves++
		}
	case c.PromoteLearner != 0:
		st = operator.Step{Kind: operator.PromoteLearner, Node: c.PromoteLearner}
	case c.NewPrimary != 0:
		if !slices.Contains(sh.Replicas, c.NewPrimary) {
			return fmt.Errorf("not a replica")
		}
		st = operator.Step{Kind: operator.TransferPrimary, Node: c.NewPrimary}
		s.PrimaryTransfers++
	default:
		if c.RemoveNode == sh.Primary || !sh.Holds(c.RemoveNode) {
			return fmt.Errorf("remove %d refused", c.RemoveNode)
		}
		st = operator.Step{Kind: operator.RemoveReplica, Node: c.RemoveNode}
		if s.added[[2]uint64{sh.ID, c.RemoveNode}] {
			s.Reverted++
		}
	}
	s.setShard(st.Apply(sh))
	return nil
}

// withPositions returns the shards of v, those whose primary is down with the positions their
// running replicas report (as heartbeats carry them): the replicas the primary last reported in
// line are furthest ahead.
func (s *Sim) withPositions(v *view.Cluster) []*view.Shard {
	out := v.Shards
	copied := false
	for i, sh := range v.Shards {
		if v.State(sh.Primary) != view.Down {
			continue
		}
		if !copied {
			out, copied = slices.Clone(v.Shards), true
		}
		c := *sh
		c.Positions = map[uint64]uint64{}
		for _, r := range sh.Replicas {
			if s.node(r).alive {
				c.Positions[r] = 0
				if sh.IsInLine(r) {
					c.Positions[r] = 1
				}
			}
		}
		out[i] = &c
	}
	return out
}

// changePrimary is the catalog's failover change (the same rules as internal/meta): the lost
// node leaves the configuration, the new primary first; a new primary bumps the term.
func (s *Sim) changePrimary(c *pcspb.CmdChangePrimary) error {
	sh := s.shard(c.ShardId)
	switch {
	case sh == nil || sh.Term != c.Term || sh.ConfVer != c.ConfVer:
		return fmt.Errorf("stale epoch")
	case !slices.Contains(sh.Replicas, c.NewPrimary) || c.NewPrimary == c.RemoveNode || !slices.Contains(sh.Replicas, c.RemoveNode):
		return fmt.Errorf("invalid change %v", c)
	}
	n := *sh
	if c.NewPrimary != sh.Primary {
		n.Term++
	}
	n.Primary = c.NewPrimary
	n.ConfVer++
	n.Replicas = []uint64{c.NewPrimary}
	for _, r := range sh.Replicas {
		if r != c.NewPrimary && r != c.RemoveNode {
			n.Replicas = append(n.Replicas, r)
		}
	}
	n.InLine = slices.DeleteFunc(slices.Clone(sh.InLine), func(x uint64) bool { return x == c.RemoveNode })
	s.setShard(&n)
	s.dirty[n.ID] = true
	s.event("shard %d failover: primary %d, node %d out", n.ID, n.Primary, c.RemoveNode)
	return nil
}

func (s *Sim) checkInvariants() {
	primaryless := 0
	defer func() { s.MaxPrimaryless = max(s.MaxPrimaryless, primaryless) }()
	for _, sh := range s.shards {
		if n := s.node(sh.Primary); n == nil || !n.alive {
			primaryless++
		}
		live := 0
		for _, r := range sh.Replicas {
			if s.node(r).alive {
				live++
			}
		}
		if live < s.MinLive {
			s.MinLive = live
		}
		// Isolation holds while the replicas span as many zones as the table asks replicas (a
		// move within a zone briefly holds two there, and still spans every zone).
		if t := s.tables[sh.Table]; t.IsolationLabel != "" {
			zones := map[string]bool{}
			for _, r := range sh.Replicas {
				zones[s.node(r).Labels[t.IsolationLabel]] = true
			}
			if len(zones) < min(len(sh.Replicas), t.Replicas) {
				s.IsolationViolations++
			}
		}
	}
}
