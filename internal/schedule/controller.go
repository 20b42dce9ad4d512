package schedule

import (
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
)

// Controller admits operators against the limits: snapshot bytes per second per node in and
// out (token buckets), concurrent snapshots per node in and out, and operators in total. The
// kinds that keep data safe (repair, drain, admin) may use every budget; the others (balance,
// hot, merge) at most the share rebalance-speed allows, which is never more than half, so at
// least half of every budget is always kept for repair and drain. An operator over a limit
// waits in the coordinator's queue; it is not dropped.
type Controller struct {
	limits Limits
	// Per node: token buckets of snapshot bytes, all kinds and the unreserved share, out and in.
	buckets map[uint64]*nodeBuckets
	last    time.Duration
	// Running operators: snapshotting ones per node and direction, and all by class.
	running                 []*operator.Operator
	snapOut, snapIn         map[uint64]int
	snapOutUnres, snapInUnr map[uint64]int
	total, unreserved       int
	byKind                  [8]int
}

type nodeBuckets struct {
	out, in           float64 // all kinds
	outUnres, inUnres float64 // unreserved kinds
}

// NewController returns a controller with limits.
func NewController(l Limits) *Controller {
	return &Controller{limits: l, buckets: map[uint64]*nodeBuckets{}}
}

// SetLimits changes the limits (runtime config).
func (c *Controller) SetLimits(l Limits) { c.limits = l }

// Limits returns the limits in force.
func (c *Controller) Limits() Limits { return c.limits }

// refill adds the tokens earned since the last call, up to one second's worth (or one shard's
// size, whichever is larger, so a big shard is never refused for ever).
func (c *Controller) refill(now time.Duration) {
	dt := (now - c.last).Seconds()
	c.last = now
	if dt <= 0 {
		return
	}
	rate := float64(c.limits.SnapshotBytesPerSec)
	share := c.limits.Speed.Share()
	for _, b := range c.buckets {
		b.out = min(b.out+rate*dt, rate)
		b.in = min(b.in+rate*dt, rate)
		b.outUnres = min(b.outUnres+rate*share*dt, rate*share)
		b.inUnres = min(b.inUnres+rate*share*dt, rate*share)
	}
}

func (c *Controller) bucket(n uint64) *nodeBuckets {
	b := c.buckets[n]
	if b == nil {
		rate := float64(c.limits.SnapshotBytesPerSec)
		share := c.limits.Speed.Share()
		b = &nodeBuckets{out: rate, in: rate, outUnres: rate * share, inUnres: rate * share}
		c.buckets[n] = b
	}
	return b
}

// Begin starts a tick: refills the buckets and recounts the running operators.
func (c *Controller) Begin(now time.Duration, running []*operator.Operator) {
	c.refill(now)
	c.running = running
	c.snapOut, c.snapIn = map[uint64]int{}, map[uint64]int{}
	c.snapOutUnres, c.snapInUnr = map[uint64]int{}, map[uint64]int{}
	c.total, c.unreserved, c.byKind = 0, 0, [8]int{}
	for _, op := range running {
		c.count(op)
	}
}

func (c *Controller) count(op *operator.Operator) {
	c.total++
	c.byKind[op.Kind]++
	if !op.Kind.Reserved() {
		c.unreserved++
	}
	if op.Snapshotting() && op.Size >= operator.TinySnapshot {
		c.snapOut[op.SnapFrom]++
		c.snapIn[op.To]++
		if !op.Kind.Reserved() {
			c.snapOutUnres[op.SnapFrom]++
			c.snapInUnr[op.To]++
		}
	}
}

// unreservedCap is the share of a count limit the unreserved kinds may use.
func (c *Controller) unreservedCap(limit int) int {
	return int(float64(limit) * c.limits.Speed.Share())
}

// Room is how many more operators of kind may be admitted now, counting only the total limits.
func (c *Controller) Room(kind operator.Kind) int {
	if c.limits.Halt {
		return 0
	}
	room := c.limits.MaxOperators - c.total
	if !kind.Reserved() {
		room = min(room, c.unreservedCap(c.limits.MaxOperators)-c.unreserved)
	}
	return max(room, 0)
}

// CanSnapshot reports whether an operator of kind could send a snapshot from one node to
// another now.
func (c *Controller) CanSnapshot(kind operator.Kind, from, to uint64) bool {
	if c.Room(kind) == 0 {
		return false
	}
	bf, bt := c.bucket(from), c.bucket(to)
	per := c.limits.SnapshotsPerNode
	if kind.Reserved() {
		return bf.out > 0 && bt.in > 0 && c.snapOut[from] < per && c.snapIn[to] < per
	}
	up := max(c.unreservedCap(per), 1)
	if c.limits.Speed.Share() == 0 {
		return false
	}
	return bf.out > 0 && bt.in > 0 && bf.outUnres > 0 && bt.inUnres > 0 &&
		c.snapOut[from] < per && c.snapIn[to] < per && c.snapOutUnres[from] < up && c.snapInUnr[to] < up
}

// CanReceive reports whether node to could receive a snapshot of kind now, from any sender.
func (c *Controller) CanReceive(kind operator.Kind, to uint64) bool {
	if c.Room(kind) == 0 {
		return false
	}
	bt := c.bucket(to)
	per := c.limits.SnapshotsPerNode
	if kind.Reserved() {
		return bt.in > 0 && c.snapIn[to] < per
	}
	return c.limits.Speed.Share() > 0 && bt.in > 0 && bt.inUnres > 0 && c.snapIn[to] < per && c.snapInUnr[to] < max(c.unreservedCap(per), 1)
}

// Admit admits op if the limits allow it now, charging its snapshot (from the shard's primary
// from) against the budgets; it reports whether it did.
func (c *Controller) Admit(op *operator.Operator, primary uint64) bool {
	if c.Room(op.Kind) == 0 {
		return false
	}
	if op.AddsReplica() && !op.Charged {
		if op.Size >= operator.TinySnapshot && !c.CanSnapshot(op.Kind, primary, op.To) {
			return false
		}
		bf, bt := c.bucket(primary), c.bucket(op.To)
		size := float64(op.Size)
		bf.out -= size
		bt.in -= size
		if !op.Kind.Reserved() {
			bf.outUnres -= size
			bt.inUnres -= size
		}
		op.SnapFrom = primary
		op.Charged = true
	}
	op.State = operator.Running
	c.count(op)
	return true
}
