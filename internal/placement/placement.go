// Package placement chooses the data nodes of new shards: how many replicas, which nodes, and
// which replica is primary. It is pure: it takes a view of the nodes and a policy and returns a
// plan, changing nothing, and is deterministic (ties broken by node id).
//
// Rules, in order: only eligible nodes (state up, not draining); explicit nodes if the policy
// names them; replicas of a shard on distinct values of the isolation label (e.g. zone), so one
// zone's loss leaves a quorum; then the least loaded node (the balancer's score if given, then
// shard count including this plan, then bytes used, then most disk free, then lowest id); the primary is the replica that currently
// leads the fewest shards. Shards of one shard group get the same nodes and primary.
package placement

import (
	"errors"
	"fmt"
	"sort"
)

// ErrNotEnoughNodes means the policy cannot be met with the eligible nodes; nothing is placed.
var ErrNotEnoughNodes = errors.New("not enough suitable nodes")

// ErrInvalidPolicy means the policy itself is malformed.
var ErrInvalidPolicy = errors.New("invalid placement policy")

// Node is what placement knows of a data node.
type Node struct {
	ID       uint64
	Labels   map[string]string
	Eligible bool // up and accepting new replicas
	// Load.
	// Score is the balancer's objective for the node (internal/schedule/scheduler: deviation
	// of its replicas and bytes from its capacity share; lower is emptier) and ScoreStep what
	// one more replica adds to it. When set, nodes are ordered by it first, so a new table
	// lands where the balancer would put it and is not moved right after.
	Score, ScoreStep float64
	Shards           int
	Primaries        int
	BytesUsed        uint64
	DiskFree         uint64
}

// Policy says how to place a table's shards.
type Policy struct {
	// Replicas per shard, ≥ 1.
	Replicas int
	// IsolationLabel, if set, is a label key whose values must differ among a shard's replicas.
	IsolationLabel string
	// Nodes, if set, restricts placement to these node ids.
	Nodes []uint64
}

// Shard is one shard to place; shards with the same non-empty Group are co-located.
type Shard struct {
	Group string
}

// Replicas is the plan for one shard: node ids, the primary first.
type Replicas []uint64

// Place plans replicas for every shard, in order. Either every shard is placed or an error is
// returned.
func Place(nodes []Node, policy Policy, shards []Shard) ([]Replicas, error) {
	if policy.Replicas < 1 {
		return nil, fmt.Errorf("%w: replica count %d must be at least 1", ErrInvalidPolicy, policy.Replicas)
	}
	cands, err := candidates(nodes, policy)
	if err != nil {
		return nil, err
	}
	groups := map[string]Replicas{}
	out := make([]Replicas, len(shards))
	for i, sh := range shards {
		if sh.Group != "" {
			if r, ok := groups[sh.Group]; ok {
				out[i] = r
				account(cands, r)
				continue
			}
		}
		r, err := placeOne(cands, policy)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		account(cands, r)
		out[i] = r
		if sh.Group != "" {
			groups[sh.Group] = r
		}
	}
	return out, nil
}

type cand struct {
	Node
	zone string
}

func candidates(nodes []Node, policy Policy) ([]*cand, error) {
	allowed := map[uint64]bool{}
	for _, id := range policy.Nodes {
		allowed[id] = true
	}
	known := map[uint64]bool{}
	var out []*cand
	for _, n := range nodes {
		known[n.ID] = true
		if !n.Eligible || (len(allowed) > 0 && !allowed[n.ID]) {
			continue
		}
		c := &cand{Node: n}
		if policy.IsolationLabel != "" {
			c.zone = n.Labels[policy.IsolationLabel]
		}
		out = append(out, c)
	}
	for _, id := range policy.Nodes {
		if !known[id] {
			return nil, fmt.Errorf("%w: node %d is not registered", ErrNotEnoughNodes, id)
		}
	}
	if len(out) < policy.Replicas {
		return nil, fmt.Errorf("%w: %d replicas asked, %d eligible nodes", ErrNotEnoughNodes, policy.Replicas, len(out))
	}
	if policy.IsolationLabel != "" {
		zones := map[string]bool{}
		for _, c := range out {
			zones[c.zone] = true
		}
		if len(zones) < policy.Replicas {
			return nil, fmt.Errorf("%w: %d replicas must be in distinct %q values, only %d among eligible nodes",
				ErrNotEnoughNodes, policy.Replicas, policy.IsolationLabel, len(zones))
		}
	}
	return out, nil
}

func less(a, b *cand) bool {
	switch {
	case a.Score != b.Score:
		return a.Score < b.Score
	case a.Shards != b.Shards:
		return a.Shards < b.Shards
	case a.BytesUsed != b.BytesUsed:
		return a.BytesUsed < b.BytesUsed
	case a.DiskFree != b.DiskFree:
		return a.DiskFree > b.DiskFree
	}
	return a.ID < b.ID
}

func placeOne(cands []*cand, policy Policy) (Replicas, error) {
	sorted := append([]*cand(nil), cands...)
	sort.Slice(sorted, func(i, j int) bool { return less(sorted[i], sorted[j]) })
	usedZone := map[string]bool{}
	var chosen []*cand
	for _, c := range sorted {
		if len(chosen) == policy.Replicas {
			break
		}
		if policy.IsolationLabel != "" && usedZone[c.zone] {
			continue
		}
		usedZone[c.zone] = true
		chosen = append(chosen, c)
	}
	if len(chosen) < policy.Replicas {
		return nil, fmt.Errorf("%w: found %d of %d replicas", ErrNotEnoughNodes, len(chosen), policy.Replicas)
	}
	// Primary: the replica leading the fewest shards (then the id).
	sort.SliceStable(chosen, func(i, j int) bool {
		if chosen[i].Primaries != chosen[j].Primaries {
			return chosen[i].Primaries < chosen[j].Primaries
		}
		return chosen[i].ID < chosen[j].ID
	})
	r := make(Replicas, len(chosen))
	for i, c := range chosen {
		r[i] = c.ID
	}
	return r, nil
}

func account(cands []*cand, r Replicas) {
	for i, id := range r {
		for _, c := range cands {
			if c.ID == id {
				c.Add(i == 0)
			}
		}
	}
}

// Add counts one more replica on n (its shard's primary if primary), as placement scores it.
func (n *Node) Add(primary bool) {
	n.Shards++
	n.Score += n.ScoreStep
	if primary {
		n.Primaries++
	}
}

// AddOne picks a node for one more replica of a shard whose replicas (and learners) are on
// have: an eligible node not in have, allowed by the policy, on an isolation-label value none of
// have uses, least loaded first.
func AddOne(nodes []Node, policy Policy, have []uint64) (uint64, error) {
	allowed := map[uint64]bool{}
	for _, id := range policy.Nodes {
		allowed[id] = true
	}
	held, usedZone := map[uint64]bool{}, map[string]bool{}
	for _, id := range have {
		held[id] = true
	}
	for _, n := range nodes {
		if held[n.ID] && policy.IsolationLabel != "" {
			usedZone[n.Labels[policy.IsolationLabel]] = true
		}
	}
	var best *cand
	for _, n := range nodes {
		if !n.Eligible || held[n.ID] || (len(allowed) > 0 && !allowed[n.ID]) {
			continue
		}
		c := &cand{Node: n}
		if policy.IsolationLabel != "" {
			if c.zone = n.Labels[policy.IsolationLabel]; usedZone[c.zone] {
				continue
			}
		}
		if best == nil || less(c, best) {
			best = c
		}
	}
	if best == nil {
		return 0, fmt.Errorf("%w: no eligible node for another replica (have %v)", ErrNotEnoughNodes, have)
	}
	return best.ID, nil
}
