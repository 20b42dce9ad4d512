// Package cluster keeps the primary PCS's live view of the data nodes, built from heartbeats
// and kept in memory only: when each node was last heard from, its stats, and which shard
// replicas it holds. A new primary starts empty and, for a warm-up period, declares no node
// down: a node it has not heard from yet is only disconnected.
//
// Times are monotonic readings of a clock.Clock, so the registry is deterministic under a
// manual clock.
package cluster

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
)

// State is a node's liveness.
type State string

// Liveness states. Offline and tombstone are registry decisions, reported by the caller.
const (
	Up           State = "up"
	Disconnected State = "disconnected"
	Down         State = "down"
)

// Config holds the liveness timeouts.
type Config struct {
	// DisconnectAfter: silence after which an up node is disconnected.
	DisconnectAfter time.Duration
	// DownAfter: silence after which a node is down (it wins over disconnected).
	DownAfter time.Duration
	// Warmup: after taking office, no node is declared down for this long.
	Warmup time.Duration
}

type live struct {
	lastSeen time.Duration
	stats    *pcspb.NodeStats
	held     []uint64 // sorted; 8 bytes a replica (a map would take ~30 per replica)
	shards   map[uint64]*pcspb.ShardStats
}

func (l *live) holds(shard uint64) bool {
	_, ok := slices.BinarySearch(l.held, shard)
	return ok
}

// Registry is the live view. It is safe for concurrent use.
type Registry struct {
	clk clock.Clock
	cfg Config

	mu struct {
		sync.Mutex
		since time.Duration // when this primary took office
		nodes map[uint64]*live
		loads map[uint64]*avgLoad // shard -> moving average of what its primary reports
		swept time.Duration
		// heldGen counts changes of any node's held set (and Resets), so a planner that
		// scans every replica can tell when nothing it reads has changed.
		heldGen uint64
	}
}

// Load is a shard's traffic per second: keys and bytes read and written.
type Load struct{ Reads, Writes, ReadBytes, WriteBytes float64 }

// LoadHalfLife is the half-life of a shard's moving average of load: a change of traffic shows
// half within it, and a burst shorter than the node's window hardly at all.
const LoadHalfLife = 10 * time.Second

type avgLoad struct {
	Load
	at      time.Duration // last update
	version uint64        // the range version it was last reported at
}

func (a *avgLoad) update(now time.Duration, x Load) {
	w := 1 - math.Exp2(-float64(now-a.at)/float64(LoadHalfLife))
	a.Reads += w * (x.Reads - a.Reads)
	a.Writes += w * (x.Writes - a.Writes)
	a.ReadBytes += w * (x.ReadBytes - a.ReadBytes)
	a.WriteBytes += w * (x.WriteBytes - a.WriteBytes)
	a.at = now
}

func (l Load) scaled(f float64) Load {
	return Load{l.Reads * f, l.Writes * f, l.ReadBytes * f, l.WriteBytes * f}
}

func (l Load) plus(o Load) Load {
	return Load{l.Reads + o.Reads, l.Writes + o.Writes, l.ReadBytes + o.ReadBytes, l.WriteBytes + o.WriteBytes}
}

// New returns an empty registry whose warm-up starts now.
func New(clk clock.Clock, cfg Config) *Registry {
	r := &Registry{clk: clk, cfg: cfg}
	r.Reset()
	return r
}

// Reset forgets everything and starts a new warm-up (a new primary term).
func (r *Registry) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.since = r.clk.Mono()
	r.mu.nodes = map[uint64]*live{}
	r.mu.loads = map[uint64]*avgLoad{}
	r.mu.swept = r.mu.since
	r.mu.heldGen++
}

// HeldGeneration changes whenever a node's held set changes (a replica created or dropped, a
// node heard first) or the registry is reset; equal values mean every Holds answer is unchanged.
func (r *Registry) HeldGeneration() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.heldGen
}

// sortedHeld returns a node's held list sorted and without duplicates: the list itself when it
// already is (data nodes send it so: no copy of a large list at every heartbeat).
func sortedHeld(ids []uint64) []uint64 {
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			held := slices.Clone(ids)
			slices.Sort(held)
			return slices.Compact(held)
		}
	}
	return ids
}

// Observe records a heartbeat. It reports whether the node's held set differs from its previous
// heartbeat's in this term (the first heartbeat differs).
func (r *Registry) Observe(hb *pcspb.NodeHeartbeat) (heldChanged bool) {
	held := sortedHeld(hb.HeldShards)
	r.mu.Lock()
	defer r.mu.Unlock()
	var shards map[uint64]*pcspb.ShardStats
	if len(hb.ShardStats) > 0 {
		shards = make(map[uint64]*pcspb.ShardStats, len(hb.ShardStats))
		for _, s := range hb.ShardStats {
			shards[s.ShardId] = s
		}
	}
	now := r.clk.Mono()
	if old := r.mu.nodes[hb.NodeId]; old == nil || !slices.Equal(old.held, held) {
		r.mu.heldGen++
		heldChanged = true
	} else {
		held = old.held // the same set: keep one copy
	}
	r.mu.nodes[hb.NodeId] = &live{lastSeen: now, stats: hb.Stats, held: held, shards: shards}
	for _, st := range hb.ShardStats {
		if st.Primary {
			r.observeLoad(now, st)
		}
	}
	if now-r.mu.swept >= time.Minute {
		r.mu.swept = now
		for id, a := range r.mu.loads {
			if now-a.at >= 5*time.Minute {
				delete(r.mu.loads, id) // the shard is gone, or its primary silent: start again
			}
		}
	}
	return heldChanged
}

// observeLoad folds a primary's report into its shard's moving average. A split halves the
// shard's average and gives the new half the other half (a split by load divides the traffic
// about evenly), so neither half looks idle or doubly hot while the averages catch up.
func (r *Registry) observeLoad(now time.Duration, st *pcspb.ShardStats) {
	x := Load{st.ReadPerSec, st.WritePerSec, st.ReadBytesPerSec, st.WriteBytesPerSec}
	a := r.mu.loads[st.ShardId]
	if a == nil {
		a = &avgLoad{Load: x, at: now, version: st.Version}
		if p := r.mu.loads[st.SplitFrom]; st.SplitFrom != 0 && p != nil {
			if p.version < st.Version { // the parent's own report of the split comes later
				p.Load, p.version = p.Load.scaled(0.5), st.Version
			}
			a.Load = p.Load
		}
		r.mu.loads[st.ShardId] = a
		return
	}
	if st.Version > a.version && st.Version > 0 {
		// This shard split, or absorbed its neighbour, since its last report (a split's new
		// half may not have been seen yet): it takes half its average, or the sum of both.
		switch m := r.mu.loads[st.MergedFrom]; {
		case st.MergedFrom != 0 && m != nil:
			a.Load = a.Load.plus(m.Load)
			delete(r.mu.loads, st.MergedFrom)
		case a.version != 0 && st.MergedFrom == 0:
			a.Load = a.Load.scaled(0.5)
		}
		a.version = st.Version
	}
	a.update(now, x)
}

// ShardLoad returns a shard's moving average of traffic, as its primaries reported it.
func (r *Registry) ShardLoad(shard uint64) Load {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Reader{r}.ShardLoad(shard)
}

// Reader answers lookups of the registry while Read holds it.
type Reader struct{ r *Registry }

// Read calls fn with the registry held: many shards' lookups (a scheduling view's) at the cost
// of one lock. fn must not keep the Reader or call the Registry's own methods.
func (r *Registry) Read(fn func(Reader)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(Reader{r})
}

// ShardLoad is Registry.ShardLoad.
func (q Reader) ShardLoad(shard uint64) Load {
	if a := q.r.mu.loads[shard]; a != nil {
		return a.Load
	}
	return Load{}
}

// ShardStats is Registry.ShardStats.
func (q Reader) ShardStats(node, shard uint64) *pcspb.ShardStats {
	if l := q.r.mu.nodes[node]; l != nil {
		return l.shards[shard]
	}
	return nil
}

// Holds is Registry.Holds.
func (q Reader) Holds(node, shard uint64) bool {
	l := q.r.mu.nodes[node]
	return l != nil && l.holds(shard)
}

// WarmedUp reports whether the warm-up has passed.
func (r *Registry) WarmedUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clk.Mono()-r.mu.since >= r.cfg.Warmup
}

// State returns a node's liveness.
func (r *Registry) State(node uint64) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clk.Mono()
	warm := now-r.mu.since >= r.cfg.Warmup
	l := r.mu.nodes[node]
	if l == nil {
		if warm {
			return Down
		}
		return Disconnected
	}
	switch silent := now - l.lastSeen; {
	case silent >= r.cfg.DownAfter && warm:
		return Down
	case silent >= r.cfg.DisconnectAfter:
		return Disconnected
	}
	return Up
}

// Heard reports whether the node has sent a heartbeat in this term.
func (r *Registry) Heard(node uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.nodes[node] != nil
}

// Holds reports whether the node's last heartbeat listed a replica of the shard.
func (r *Registry) Holds(node, shard uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Reader{r}.Holds(node, shard)
}

// Nodes returns the ids heard from in this term.
func (r *Registry) Nodes() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, 0, len(r.mu.nodes))
	for id := range r.mu.nodes {
		out = append(out, id)
	}
	return out
}

// LoadedVersion is the schema version of a table the node last reported loaded (0: none).
func (r *Registry) LoadedVersion(node, table uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.mu.nodes[node]; l != nil && l.stats != nil {
		return l.stats.SchemaVersions[table]
	}
	return 0
}

// UpNodes returns the nodes that are up.
func (r *Registry) UpNodes() []uint64 {
	var out []uint64
	for _, n := range r.Nodes() {
		if r.State(n) == Up {
			out = append(out, n)
		}
	}
	return out
}

// NodeStats returns the node's last reported stats, or nil if it has not been heard from in
// this term.
func (r *Registry) NodeStats(node uint64) *pcspb.NodeStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.mu.nodes[node]; l != nil {
		return l.stats
	}
	return nil
}

// NodeLoad returns the keys read and written per second over every replica the node last
// reported.
func (r *Registry) NodeLoad(node uint64) (reads, writes float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.mu.nodes[node]; l != nil {
		for _, s := range l.shards {
			reads += s.ReadPerSec
			writes += s.WritePerSec
		}
	}
	return reads, writes
}

// ShardStats returns the node's last reported stats of its replica of a shard, or nil.
func (r *Registry) ShardStats(node, shard uint64) *pcspb.ShardStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Reader{r}.ShardStats(node, shard)
}

// Silent returns how long the node has not been heard from in this term, and whether this
// primary's term has lasted at least that long (a node never heard counts as silent since the
// term began).
func (r *Registry) Silent(node uint64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clk.Mono()
	if l := r.mu.nodes[node]; l != nil {
		return now - l.lastSeen
	}
	return now - r.mu.since
}
