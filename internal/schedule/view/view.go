// Package view is what the scheduler sees of the cluster: one consistent, read-only picture of
// nodes, tables and shards built by the caller (the PCS primary from its catalog and heartbeats,
// the simulator from its simulated nodes) for each tick. Checkers, schedulers and operators read
// it and change nothing.
package view

import (
	"slices"
	"strconv"
	"strings"
)

// NodeState is a data node's state as the scheduler sees it.
type NodeState uint8

const (
	// Up: heartbeating, takes new replicas.
	Up NodeState = iota
	// Down: silent past its lease; its replicas are being replaced.
	Down
	// Offline: being drained by an operator's request; loses its primaries, then its replicas.
	Offline
	// Tombstone: removed for good.
	Tombstone
)

func (s NodeState) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	case Offline:
		return "offline"
	case Tombstone:
		return "tombstone"
	}
	return "unknown"
}

// Node is one data node.
type Node struct {
	ID     uint64
	Labels map[string]string
	// Capacity in bytes; 0 when unknown (every node then weighs the same).
	Capacity uint64
	State    NodeState
	// Heard: the node has heartbeated to this PCS primary since it took office.
	Heard bool
	// EvictPrimaries: the node is to lead no shard (before a restart): its primaries leave
	// and none arrive; its replicas stay.
	EvictPrimaries bool
}

// CanLead reports whether node id may be given the primary role: up and not evicting.
func (c *Cluster) CanLead(id uint64) bool {
	n := c.Node(id)
	return n != nil && n.State == Up && !n.EvictPrimaries
}

// LowOnSpace reports whether the node's replicas, of used bytes, take more than ratio of the
// capacity it offers (a node of unknown capacity, or ratio 0, is never low). The capacity is
// what the node offers PCS (pcsnode --capacity, by default its disk's size), so the check does
// not depend on what else shares the disk.
func (n *Node) LowOnSpace(used uint64, ratio float64) bool {
	if n.Capacity == 0 || ratio <= 0 {
		return false
	}
	return float64(used)/float64(n.Capacity) > ratio
}

// Table is what placement asks of a table's shards.
type Table struct {
	ID       uint64
	Name     string
	Replicas int
	// IsolationLabel, if set, is a label key whose values must differ among a shard's replicas.
	IsolationLabel string
	// Nodes, if set, restricts the table's replicas to these nodes.
	Nodes []uint64
	// Public: the table exists on its nodes (not being created or dropped).
	Public bool
	// Group is the table's shard group ("" none): its shards are kept on the nodes, with the
	// primaries, of the group's anchor table's shards, and split where they split.
	Group string
	// Primaries is where the table's primaries go (the zero value: balanced).
	Primaries PrimaryPolicy
}

// Primary policy modes.
const (
	// Balanced: primaries are spread evenly (by count, and by load when hot).
	Balanced = "balanced"
	// Preferred: primaries go to the first preference that has an in-line replica (then
	// balanced among the replicas of that rank), as YugabyteDB's leader affinity or
	// CockroachDB's lease preferences.
	Preferred = "preferred"
	// None: PCS moves a primary only to keep the shard available (failover, drain, eviction).
	None = "none"
)

// PrimaryPolicy says where a table's primaries go.
type PrimaryPolicy struct {
	Mode string // Balanced ("" too), Preferred or None
	// Preferred: label constraints key=value (node=ID names a node), best first.
	Preferred []string
}

// Rank is node n's rank under the policy: the index of the first preference it matches, or
// the number of preferences if none (every node ranks 0 unless the mode is Preferred).
func (p PrimaryPolicy) Rank(n *Node) int {
	if p.Mode != Preferred || n == nil {
		return 0
	}
	for i, c := range p.Preferred {
		k, v, _ := strings.Cut(c, "=")
		if (k == "node" && strconv.FormatUint(n.ID, 10) == v) || (k != "node" && n.Labels[k] == v) {
			return i
		}
	}
	return len(p.Preferred)
}

// Moves reports whether schedulers other than failover, drain and eviction move the table's
// primaries (not under None).
func (p PrimaryPolicy) Moves() bool { return p.Mode != None }

// String is the policy as the setting writes it: "balanced", "none", "preferred zone=a,zone=b".
func (p PrimaryPolicy) String() string {
	if p.Mode == Preferred {
		return Preferred + " " + strings.Join(p.Preferred, ",")
	}
	if p.Mode == "" {
		return Balanced
	}
	return p.Mode
}

// Allows reports whether the table may place a replica on node id.
func (t *Table) Allows(id uint64) bool { return len(t.Nodes) == 0 || slices.Contains(t.Nodes, id) }

// Shard is one shard with its configuration and last reported size.
type Shard struct {
	ID      uint64
	Table   uint64
	Version uint64 // range version: bumps on split and merge
	ConfVer uint64
	Term    uint64
	Primary uint64
	// Replicas are in the configuration (the primary among them); learners receive writes but
	// are not in the configuration yet.
	Replicas []uint64
	Learners []uint64
	// Size in bytes, as last reported by the primary.
	Size uint64
	// InLine lists the replicas and learners the primary reports holding every position it has,
	// in the current term and configuration (the primary itself included).
	InLine []uint64
	// MinInSync is how many replicas must persist a write before it is acknowledged.
	MinInSync int
	// Partition is the table's leaf partition the shard is in; Start and End its range of
	// routing keys within the table (End "" is unbounded).
	Partition  string
	Start, End string
	// Load is the shard's recent traffic, as its primary reports it (moving averages).
	Load Load
	// Positions, for a shard whose primary is on a lost node: the log position each replica
	// heartbeating now reports it holds (failover promotes the furthest ahead).
	Positions map[uint64]uint64
	// Right is the shard of the same table and partition that starts where this one ends, when
	// the view's builder linked them (Cluster.Linked).
	Right *Shard
}

// Load is a shard's traffic: keys and bytes read and written per second, moving averages of
// what its primary reports.
type Load struct {
	Reads, Writes, ReadBytes, WriteBytes float64
}

// Keys is the keys read and written per second: the measure hot scheduling balances (the
// primary serves every read and coordinates every write).
func (l Load) Keys() float64 { return l.Reads + l.Writes }

// Plus returns the sum of two loads (a merge's survivor takes both).
func (l Load) Plus(o Load) Load {
	return Load{l.Reads + o.Reads, l.Writes + o.Writes, l.ReadBytes + o.ReadBytes, l.WriteBytes + o.WriteBytes}
}

// Scaled returns the load times f (a split's halves each take about half).
func (l Load) Scaled(f float64) Load {
	return Load{l.Reads * f, l.Writes * f, l.ReadBytes * f, l.WriteBytes * f}
}

// Holds reports whether node id holds the shard, as a replica or a learner.
func (s *Shard) Holds(id uint64) bool {
	return slices.Contains(s.Replicas, id) || slices.Contains(s.Learners, id)
}

// IsInLine reports whether the primary reports node id in line with it.
func (s *Shard) IsInLine(id uint64) bool { return slices.Contains(s.InLine, id) }

// Cluster is one tick's picture.
type Cluster struct {
	// Nodes sorted by id (tombstones may be left out).
	Nodes []*Node
	// Tables by id.
	Tables map[uint64]*Table
	// Shards sorted by id.
	Shards []*Shard
	// CanMerge: every PCS member can record a merge (the cluster version allows it).
	CanMerge bool
	// Linked: every shard's Right is set (nil: no right neighbour), so finding neighbours
	// needs no index of all shards' starts.
	Linked bool

	nodeIdx map[uint64]*Node
}

// Node returns node id, or nil.
func (c *Cluster) Node(id uint64) *Node {
	if c.nodeIdx == nil {
		c.nodeIdx = make(map[uint64]*Node, len(c.Nodes))
		for _, n := range c.Nodes {
			c.nodeIdx[n.ID] = n
		}
	}
	return c.nodeIdx[id]
}

// SameRank reports whether node to ranks as well as node from under sh's table's primary
// policy (a hand-over between them keeps the preference).
func (c *Cluster) SameRank(sh *Shard, from, to uint64) bool {
	t := c.Tables[sh.Table]
	if t == nil {
		return true
	}
	return t.Primaries.Rank(c.Node(to)) <= t.Primaries.Rank(c.Node(from))
}

// State returns node id's state (Tombstone for an unknown node).
func (c *Cluster) State(id uint64) NodeState {
	if n := c.Node(id); n != nil {
		return n.State
	}
	return Tombstone
}

// Zone returns the value of label key on node id ("" if unset or unknown).
func (c *Cluster) Zone(id uint64, key string) string {
	if n := c.Node(id); n != nil && key != "" {
		return n.Labels[key]
	}
	return ""
}

// Isolated reports whether nodes hold distinct values of the table's isolation label.
func (c *Cluster) Isolated(t *Table, nodes []uint64) bool {
	if t == nil || t.IsolationLabel == "" {
		return true
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		z := c.Zone(n, t.IsolationLabel)
		if seen[z] {
			return false
		}
		seen[z] = true
	}
	return true
}
