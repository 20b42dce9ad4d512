// Package schedule is the one writer of shard changes, run on the PCS primary: a coordinator
// that patrols shards with the checkers, runs the schedulers, admits their operators through
// the controller's limits and hands out their steps. It is deterministic and does no I/O: each
// Tick takes the time and one view of the cluster and returns the changes to make and the
// operators to persist; the caller (the PCS primary, or the simulator) carries them out and
// reports back with Applied.
package schedule

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/checker"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Change is one configuration change an operator's current step asks for.
type Change struct {
	Op  *operator.Operator
	Cmd *pcspb.CmdChangeReplicas
}

// Actions is what a tick asks the caller to do.
type Actions struct {
	// Changes to apply, in order; report each with Applied.
	Changes []Change
	// Save: operators created or changed (persist them); Finished: operators that ended
	// (remove them from the persisted set).
	Save, Finished []*operator.Operator
	// StepsDone: the steps observed done in this tick and how long each took (for metrics).
	StepsDone []StepDone
	// Splits the shards' primaries are to carry out (every one under way, each tick).
	Splits []*pcspb.SplitShardCommand
	// Merges the shards' primaries are to carry out, likewise.
	Merges []*pcspb.MergeShardsCommand
	// Failovers are the configuration changes of shards with a replica on a lost node, to be
	// applied first and at once (checker.Failover): no budget, no queue, no operator.
	Failovers []*pcspb.CmdChangePrimary
}

// StepDone is one step seen done.
type StepDone struct {
	Kind operator.StepKind
	Took time.Duration
}

// Coordinator decides. Not safe for concurrent use: one loop owns it.
type Coordinator struct {
	cfg        Config
	ctrl       *Controller
	checkers   []checker.Checker
	schedulers []scheduler.Scheduler
	newID      func(kind string) uint64

	ops      map[uint64]*operator.Operator // by shard: queued or running
	byID     map[uint64]*operator.Operator
	cooling  map[uint64]arrival   // shard -> the replica its last move added, and when
	finished []*operator.Operator // most recent last, bounded
	patrol   int
	patrolAt time.Duration // the previous patrol's tick
	// splitFailed: shards whose split by load ended without splitting, and when (the node
	// found no key that divides the load: one hot key); not tried again within the cooldown.
	splitFailed map[uint64]time.Duration
	// splitAt: shards split (both halves), and when: a half is not split by load again within
	// hot-hold, until the node's stats of the halves are whole windows.
	splitAt map[uint64]time.Duration
	// merging: shards the merge checker is bringing together, and since when: the schedulers
	// leave them alone meanwhile (else balancing would move back the replicas a merge aligns).
	merging map[uint64]time.Duration
	// seen: the shard ids of the views so far (noteSplits).
	seen map[uint64]bool
}

// arrival is a replica a move added: it does not leave again within the cooldown (no A→B→A).
type arrival struct {
	node uint64
	at   time.Duration
}

// KeepFinished bounds the finished operators kept for `pcsctl operator list --finished`.
const KeepFinished = 1000

// ID kinds newID is asked for.
const (
	OperatorIDs = "operator"
	ShardIDs    = "shard"
)

// New returns a coordinator; newID allocates ids of a kind (OperatorIDs, ShardIDs) unique
// across PCS primaries, or returns 0 if it cannot now.
func New(cfg Config, newID func(kind string) uint64) *Coordinator {
	return &Coordinator{cfg: cfg, ctrl: NewController(cfg.Limits), checkers: checker.All(), schedulers: scheduler.All(),
		newID: newID, ops: map[uint64]*operator.Operator{}, byID: map[uint64]*operator.Operator{}, cooling: map[uint64]arrival{},
		splitFailed: map[uint64]time.Duration{}, splitAt: map[uint64]time.Duration{}, merging: map[uint64]time.Duration{}}
}

// SetConfig changes the runtime configuration.
func (c *Coordinator) SetConfig(cfg Config) {
	c.cfg = cfg
	c.ctrl.SetLimits(cfg.Limits)
}

// Config returns the configuration in force.
func (c *Coordinator) Config() Config { return c.cfg }

// Resume takes over operators persisted by a previous primary. Their step timers restart now.
func (c *Coordinator) Resume(ops []*operator.Operator, now time.Duration) {
	sort.Slice(ops, func(i, j int) bool { return ops[i].ID < ops[j].ID })
	for _, op := range ops {
		if op.State.Finished() || c.busy(op) != nil {
			continue
		}
		op.Created, op.StepStarted = now, now
		c.claim(op)
		c.byID[op.ID] = op
	}
}

// Operators returns the queued and running operators, by id; with finished, also the recently
// finished ones.
func (c *Coordinator) Operators(finished bool) []*operator.Operator {
	out := make([]*operator.Operator, 0, len(c.byID))
	for _, op := range c.byID {
		out = append(out, op)
	}
	if finished {
		out = append(out, c.finished...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// HotSince returns the nodes the hot scheduler found hot at its last pass, and since when (nil
// if it has not run, or no load is worth scheduling).
func (c *Coordinator) HotSince() map[uint64]time.Duration {
	for _, s := range c.schedulers {
		if h, ok := s.(*scheduler.Hot); ok {
			return maps.Clone(h.HotNodes())
		}
	}
	return nil
}

// Submit queues an operator asked for from outside (pcsctl, MoveShard); it is refused if the
// shard already has one.
func (c *Coordinator) Submit(op *operator.Operator, now time.Duration) error {
	if cur := c.busy(op); cur != nil {
		return fmt.Errorf("%w: shard %d already has operator %d (%s)", ErrBusy, op.Shard, cur.ID, cur.Kind)
	}
	c.add(op, now)
	return nil
}

// Cancel ends operator id; the shard stays as its steps left it (the checkers finish or undo
// a half-added replica).
func (c *Coordinator) Cancel(id uint64, now time.Duration) (*operator.Operator, error) {
	op := c.byID[id]
	if op == nil {
		return nil, fmt.Errorf("%w: operator %d", ErrNoOperator, id)
	}
	c.finish(op, operator.Cancelled, now)
	return op, nil
}

func (c *Coordinator) add(op *operator.Operator, now time.Duration) {
	op.ID = c.newID(OperatorIDs)
	op.Created, op.StepStarted = now, now
	op.State = operator.Queued
	c.claim(op)
	c.byID[op.ID] = op
}

// busy returns an operator that holds a shard op claims (nil: none).
func (c *Coordinator) busy(op *operator.Operator) *operator.Operator {
	for _, id := range op.Claims() {
		if cur := c.ops[id]; cur != nil {
			return cur
		}
	}
	return nil
}

func (c *Coordinator) claim(op *operator.Operator) {
	for _, id := range op.Claims() {
		c.ops[id] = op
	}
}

func (c *Coordinator) finish(op *operator.Operator, st operator.State, now time.Duration) {
	op.State, op.Finished = st, now
	for _, id := range op.Claims() {
		if c.ops[id] == op {
			delete(c.ops, id)
		}
	}
	delete(c.byID, op.ID)
	if op.To != 0 && st == operator.Done {
		c.cooling[op.Shard] = arrival{node: op.To, at: now}
	}
	for _, s := range op.Steps {
		switch {
		case s.Kind != operator.Split:
		case st == operator.Done:
			c.splitAt[op.Shard], c.splitAt[s.NewShard] = now, now
		case s.ByLoad:
			c.splitFailed[op.Shard] = now
		}
	}
	c.finished = append(c.finished, op)
	if len(c.finished) > KeepFinished {
		c.finished = slices.Delete(c.finished, 0, len(c.finished)-KeepFinished)
	}
}

// Errors.
var (
	// ErrBusy: the shard already has an operator (a shard has at most one at a time).
	ErrBusy = errors.New("shard busy")
	// ErrNoOperator: no queued or running operator has this id.
	ErrNoOperator = errors.New("no such operator")
	// ErrNotFound: Explain was asked about a shard or node the view does not hold.
	ErrNotFound = errors.New("not found")
)

// Applied reports the outcome of a Change: on success the operator expects the shard's new
// configuration; on failure it is cancelled (the shard moved on under it).
func (c *Coordinator) Applied(ch Change, err error, now time.Duration) {
	op := ch.Op
	if op.State.Finished() {
		return
	}
	if err != nil {
		c.finish(op, operator.Cancelled, now)
		op.Reason += "; cancelled: " + err.Error()
		return
	}
	op.ConfVer++
	if ch.Cmd.NewPrimary != 0 {
		op.Term++
	}
}

// adopt accepts a shard one change ahead of an operator when that change is the operator's
// own current step: a split its shard's primary carried out, or a configuration change its
// previous PCS primary applied before losing office and saving it.
func (c *Coordinator) adopt(op *operator.Operator, sh *view.Shard) bool {
	if sh == nil || op.Current >= len(op.Steps) {
		return false
	}
	st := op.Steps[op.Current]
	if st.Kind == operator.Split || st.Kind == operator.Absorb {
		if sh.Version != st.Versioned(op.Version) || sh.ConfVer != op.ConfVer || sh.Term != op.Term {
			return false
		}
		op.Version = sh.Version
		return true
	}
	if sh.Version != op.Version || sh.ConfVer != op.ConfVer+1 {
		return false
	}
	term := op.Term
	if st.Kind == operator.TransferPrimary {
		term++
	}
	if sh.Term != term || !st.Done(sh) {
		return false
	}
	op.ConfVer, op.Term = sh.ConfVer, sh.Term
	return true
}

func findShard(shards []*view.Shard, id uint64) *view.Shard {
	i := sort.Search(len(shards), func(i int) bool { return shards[i].ID >= id })
	if i < len(shards) && shards[i].ID == id {
		return shards[i]
	}
	return nil
}

// Tick decides once: first the failovers of shards on lost nodes (Actions.Failovers), then the
// operators. Scheduling starts only once every up node has heartbeated to this primary (a new
// primary decides nothing on a partial picture; it still drives the operators it resumed).
func (c *Coordinator) Tick(now time.Duration, v *view.Cluster) *Actions {
	act := &Actions{Failovers: checker.Failover(v, false)}
	failing := make(map[uint64]bool, len(act.Failovers))
	for _, f := range act.Failovers {
		failing[f.ShardId] = true // its configuration changes now: no operator step this tick
	}
	c.decorate(v)
	ready := true
	for _, n := range v.Nodes {
		if n.State != view.Down && n.State != view.Tombstone && !n.Heard {
			ready = false
		}
	}
	changed := map[*operator.Operator]bool{}
	// 1. Advance the operators under way.
	var running []*operator.Operator
	for _, op := range c.Operators(false) {
		sh := findShard(v.Shards, op.Shard)
		before, started := op.Current, op.StepStarted
		if op.Stale(sh) && !c.adopt(op, sh) {
			op.Reason += "; cancelled: the shard changed under it"
			c.finish(op, operator.Cancelled, now)
			act.Finished = append(act.Finished, op)
			continue
		}
		done := op.Advance(sh, now)
		for i := before; i < op.Current; i++ {
			took := time.Duration(0) // steps seen done together: the first one took the time
			if i == before && op.State == operator.Running {
				took = now - started
			}
			act.StepsDone = append(act.StepsDone, StepDone{Kind: op.Steps[i].Kind, Took: took})
		}
		switch {
		case done:
			c.finish(op, operator.Done, now)
			act.Finished = append(act.Finished, op)
			continue
		case op.State == operator.Running && now-op.StepStarted > op.Timeout(c.cfg.StepTimeout, c.cfg.MinRate):
			op.Reason += fmt.Sprintf("; step %s timed out", op.Steps[op.Current])
			c.finish(op, operator.TimedOut, now)
			act.Finished = append(act.Finished, op)
			continue
		}
		if op.Current != before {
			changed[op] = true
		}
		if op.State == operator.Running {
			running = append(running, op)
		}
	}
	c.ctrl.Begin(now, running)
	// 2. Admit queued operators, highest priority first.
	c.admitQueued(v, changed, now)
	c.noteSplits(now, v)
	env := c.env(now, v)
	if ready && !c.cfg.Halt {
		// 3. Checkers on a batch of shards.
		if n := len(v.Shards); n > 0 {
			// PatrolBatch a tick, or more when that would take longer than patrolRound to
			// cover every shard (a million shards at ten ticks a second: 10,000 a tick).
			batch := c.cfg.PatrolBatch
			if c.patrolAt > 0 && now > c.patrolAt {
				batch = max(batch, int((int64(n)*int64(now-c.patrolAt)+int64(patrolRound)-1)/int64(patrolRound)))
			}
			batch = min(batch, n)
			c.patrolAt = now
			for i := 0; i < batch; i++ {
				sh := v.Shards[(c.patrol+i)%n]
				if c.ops[sh.ID] != nil {
					continue
				}
				for _, ck := range c.checkers {
					if op := ck.Check(env, sh); op != nil {
						c.add(op, now)
						changed[op] = true
						break
					}
				}
			}
			c.patrol = (c.patrol + batch) % n
		}
		c.admitQueued(v, changed, now)
		// 4. Schedulers, within the room the controller has.
		for _, s := range c.schedulers {
			if c.cfg.Paused[s.Name()] {
				continue
			}
			room := c.ctrl.Room(s.Kind())
			if room == 0 {
				continue
			}
			for _, op := range s.Schedule(env, min(room, 64)) {
				c.add(op, now)
				changed[op] = true
				sh := findShard(v.Shards, op.Shard)
				c.ctrl.Admit(op, sh.Primary) // else it waits in the queue
			}
		}
	}
	// 5. Hand out the current step of every running operator that is ready.
	for _, op := range c.Operators(false) {
		if op.State == operator.Queued {
			continue
		}
		sh := findShard(v.Shards, op.Shard)
		if sh == nil || op.Current >= len(op.Steps) || failing[op.Shard] {
			continue
		}
		switch st := op.Steps[op.Current]; {
		case st.Kind == operator.Split:
			act.Splits = append(act.Splits, st.SplitCommand(sh)) // handed to the primary until done
		case st.Kind == operator.Absorb:
			act.Merges = append(act.Merges, st.MergeCommand(sh))
		case st.Ready(sh):
			act.Changes = append(act.Changes, Change{Op: op, Cmd: st.Command(sh)})
		}
	}
	for op := range changed {
		if !op.State.Finished() {
			act.Save = append(act.Save, op)
		}
	}
	sort.Slice(act.Save, func(i, j int) bool { return act.Save[i].ID < act.Save[j].ID })
	c.expireCooling(now)
	return act
}

// decorate marks v with the settings the view does not carry: evicting nodes, tables' primary
// policies.
func (c *Coordinator) decorate(v *view.Cluster) {
	for _, n := range v.Nodes {
		n.EvictPrimaries = c.cfg.EvictPrimaries[n.ID]
	}
	for _, t := range v.Tables {
		t.Primaries = c.cfg.PrimaryPolicies[t.Name]
	}
}

// env is the schedulers' and checkers' environment for one tick over v.
func (c *Coordinator) env(now time.Duration, v *view.Cluster) *scheduler.Env {
	loads := scheduler.Compute(v, c.ops)
	anchors := scheduler.GroupAnchors(v)
	return &scheduler.Env{View: v, Loads: loads, Bands: c.cfg.Bands, LowSpaceRatio: c.cfg.LowSpaceRatio, HighSpaceRatio: c.cfg.HighSpaceRatio,
		HasOp: func(id uint64) bool { return c.ops[id] != nil },
		Cooling: func(id, node uint64) bool {
			a, ok := c.cooling[id]
			return ok && a.node == node && now-a.at < c.cfg.Cooldown
		},
		CanSnapshot: c.ctrl.CanSnapshot,
		CanReceive:  c.ctrl.CanReceive,
		Hot:         c.cfg.Hot,
		Now:         now,
		NewShardID:  func() uint64 { return c.newID(ShardIDs) },
		Anchors:     anchors,
		Followers:   scheduler.GroupFollowers(anchors, v),
		Merge:       c.cfg.Merge,
		Merging: func(id uint64) bool {
			at, ok := c.merging[id]
			return ok && now-at < mergeIntentFor(c.cfg)
		},
		IntendMerge: func(l, r uint64) {
			if _, ok := c.merging[l]; !ok {
				c.merging[l] = now
			}
			if _, ok := c.merging[r]; !ok {
				c.merging[r] = now
			}
		},
		RightNeighbour: rightNeighbours(v, c.cfg.Merge),
		MergeBlocked: func(id uint64) bool {
			at, ok := c.splitAt[id]
			return ok && now-at < c.cfg.Merge.AfterSplit
		},
		SplitBlocked: func(id uint64) bool {
			if at, ok := c.splitAt[id]; ok && now-at < c.cfg.Hot.Hold {
				return true
			}
			at, ok := c.splitFailed[id]
			return ok && now-at < c.cfg.Cooldown
		},
	}
}

// WarmupFailover is the failover pass alone, for a new PCS primary's warm-up, when Tick does
// not run yet: only lost primaries are replaced (see checker.Failover).
func (c *Coordinator) WarmupFailover(v *view.Cluster) []*pcspb.CmdChangePrimary {
	return checker.Failover(v, true)
}

// noteSplits records in splitAt the splits the view shows that no operator of this
// coordinator made (a node's split by size, or one a previous PCS primary's operator made just
// before it lost office): a shard id not seen before at a range version past 1 is a split's new
// half, and the shard that ends where it starts its other half. On the first view, when
// this coordinator cannot tell when the shards were split, every shard split or merged since
// its table was created counts as split now: no merge inside a split cooldown, even across a
// change of PCS primary.
func (c *Coordinator) noteSplits(now time.Duration, v *view.Cluster) {
	first := c.seen == nil
	if first || len(c.seen) > 2*len(v.Shards)+1024 {
		c.seen = make(map[uint64]bool, len(v.Shards)) // let go of ids long gone
		for _, sh := range v.Shards {
			c.seen[sh.ID] = true
			if first && sh.Version > 1 {
				c.splitAt[sh.ID] = now
			}
		}
		if first {
			return
		}
	}
	var fresh []*view.Shard
	for _, sh := range v.Shards {
		if !c.seen[sh.ID] {
			c.seen[sh.ID] = true
			if sh.Version > 1 {
				fresh = append(fresh, sh)
			}
		}
	}
	if len(fresh) == 0 {
		return
	}
	type end struct {
		table     uint64
		partition string
		end       string
	}
	byEnd := make(map[end]uint64, len(v.Shards))
	for _, sh := range v.Shards {
		byEnd[end{sh.Table, sh.Partition, sh.End}] = sh.ID
	}
	for _, sh := range fresh {
		c.splitAt[sh.ID] = now
		if l, ok := byEnd[end{sh.Table, sh.Partition, sh.Start}]; ok {
			c.splitAt[l] = now
		}
	}
}

// patrolRound is the longest the checkers take to look at every shard once.
const patrolRound = 10 * time.Second

// mergeIntentFor is how long the schedulers leave alone two shards the merge checker started
// to bring together: long enough for a few moves, not so long that a merge that cannot finish
// pins them.
func mergeIntentFor(cfg Config) time.Duration { return 4 * cfg.StepTimeout }

// rightNeighbours returns a lookup of each shard's right neighbour in its table partition (the
// shard that starts where it ends), or nil when merges are off. A linked view answers from its
// shards' links; otherwise an index is built on the first lookup of a tick, in one pass over
// the shards (no sort): a tick whose patrol finds no candidate pays nothing.
func rightNeighbours(v *view.Cluster, cfg scheduler.MergeConfig) func(uint64) *view.Shard {
	if !v.CanMerge || cfg.MaxBytes == 0 {
		return nil
	}
	type start struct {
		table     uint64
		partition string
		start     string
	}
	var byStart map[start]*view.Shard
	return func(id uint64) *view.Shard {
		sh := findShard(v.Shards, id)
		if sh == nil || sh.End == "" {
			return nil
		}
		if v.Linked {
			return sh.Right
		}
		if byStart == nil {
			byStart = make(map[start]*view.Shard, len(v.Shards))
			for _, x := range v.Shards {
				byStart[start{x.Table, x.Partition, x.Start}] = x
			}
		}
		return byStart[start{sh.Table, sh.Partition, sh.End}]
	}
}

func (c *Coordinator) admitQueued(v *view.Cluster, changed map[*operator.Operator]bool, now time.Duration) {
	var queued []*operator.Operator
	for _, op := range c.byID {
		if op.State == operator.Queued {
			queued = append(queued, op)
		}
	}
	sort.Slice(queued, func(i, j int) bool {
		if queued[i].Kind != queued[j].Kind {
			return queued[i].Kind.Priority() < queued[j].Kind.Priority()
		}
		return queued[i].ID < queued[j].ID
	})
	for _, op := range queued {
		sh := findShard(v.Shards, op.Shard)
		if sh == nil {
			continue
		}
		if c.ctrl.Admit(op, sh.Primary) {
			op.StepStarted = now // its steps' timeouts start now, not when it was queued
			changed[op] = true
		}
	}
}

func (c *Coordinator) expireCooling(now time.Duration) {
	for id, at := range c.splitFailed {
		if now-at >= c.cfg.Cooldown {
			delete(c.splitFailed, id)
		}
	}
	for id, at := range c.splitAt {
		if now-at >= max(c.cfg.Hot.Hold, c.cfg.Merge.AfterSplit) {
			delete(c.splitAt, id)
		}
	}
	for id, at := range c.merging {
		if now-at >= mergeIntentFor(c.cfg) {
			delete(c.merging, id)
		}
	}
	if len(c.cooling) < 4096 {
		return
	}
	for id, a := range c.cooling {
		if now-a.at >= c.cfg.Cooldown {
			delete(c.cooling, id)
		}
	}
}
