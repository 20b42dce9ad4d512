package server

import (
	"maps"
	"sync"
	"time"

	"github.com/postdb/pcs/internal/placement"
)

// placeLoads caches each data node's load for placing new shards (CreateTable, ADD and
// TRUNCATE PARTITION). Computing it reads every shard (the scheduling view): at millions of
// shards that is seconds of the primary's CPU, which every CREATE TABLE paid. The cache is kept
// for ten times what computing it took (at least a second) and counts the replicas placed
// since, as placement itself counts them within one table; what else changed meanwhile (a
// balance move) the balancer sees on its next tick, as PD's placement works from its stores'
// last heartbeats.
type placeLoads struct {
	mu    sync.Mutex
	at    time.Time
	keep  time.Duration
	nodes map[uint64]placement.Node // load fields only: Score, ScoreStep, Shards, Primaries, BytesUsed; Eligible: not low on space
}

const placeLoadsMinAge = time.Second

// get returns a copy of the cached loads, computing them first when they are stale.
func (p *placeLoads) get(now time.Time, compute func() map[uint64]placement.Node) map[uint64]placement.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nodes == nil || now.Sub(p.at) >= p.keep || now.Before(p.at) {
		start := time.Now()
		p.nodes = compute()
		p.at, p.keep = now, max(placeLoadsMinAge, 10*time.Since(start))
	}
	return maps.Clone(p.nodes)
}

// placed counts a placement's replicas (the first of each the primary) in the cached loads.
func (p *placeLoads) placed(plan []placement.Replicas) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range plan {
		for i, id := range r {
			if n, ok := p.nodes[id]; ok {
				n.Add(i == 0)
				p.nodes[id] = n
			}
		}
	}
}

// reset drops the cache (a new primary term).
func (p *placeLoads) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes = nil
}

// placementLoads computes the load fields of placement.Node for every up node from the
// scheduler's loads.
func (s *Server) placementLoads() map[uint64]placement.Node {
	loads := s.nodeLoads()
	lowSpace := s.scheduleConfig().LowSpaceRatio
	out := make(map[uint64]placement.Node, len(loads.List))
	for _, ld := range loads.List {
		pn := placement.Node{ID: ld.Node.ID, Eligible: !ld.Node.LowOnSpace(ld.Bytes, lowSpace), // full nodes take no new table
			Score: loads.Score(ld), Shards: ld.Count, Primaries: ld.Primaries, BytesUsed: ld.Bytes}
		pn.ScoreStep = loads.OneShard(ld) // a new shard is empty: count only
		if loads.UseBytes {
			pn.ScoreStep /= 2
		}
		out[pn.ID] = pn
	}
	return out
}
