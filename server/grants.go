package server

import (
	"slices"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// Primary grants (DESIGN §6). A data node serves shard S as primary at term T only while it
// holds a grant of (S, T), renewed by heartbeat answers for lease L from the node's t_send.
// The invariant PCS keeps: at no moment do two nodes hold live grants of one shard. PCS grants
// (S, T) only to the node its catalog names S's primary at T, so the one overlap to rule out is
// an earlier primary's grant, made before the catalog changed S's primary, still running when
// the new primary's first grant is made. fences holds the new primary's grants back until the
// old one's grant has run out — until (when the change was applied here) + L + margin, or
// sooner: from the old primary's last heartbeat if it has been silent, or as soon as it reports
// that it no longer leads S (it holds S at the new term, or not at all). Every member records
// fences as it applies changes, so a new PCS primary keeps its predecessor's; a member that
// restored a snapshot does not know what changed recently and grants nothing new for L +
// margin.
type fences struct {
	lease time.Duration // L + margin

	mu struct {
		sync.Mutex
		byShard     map[uint64][]fence             // shard -> fences (more than one only if it changed twice within L)
		byNode      map[uint64]map[uint64]struct{} // old primary -> shards it is fenced from
		restoredEnd time.Duration
	}
}

// sweepFencesAt is how many fenced shards make a new fence sweep the expired ones first.
const sweepFencesAt = 4096

type fence struct {
	old   uint64        // a primary that may still hold a grant
	term  uint64        // the term that replaced its own
	until time.Duration // when its grant has run out at the latest
}

func newFences(lease time.Duration) *fences {
	f := &fences{lease: lease}
	f.mu.byShard = map[uint64][]fence{}
	f.mu.byNode = map[uint64]map[uint64]struct{}{}
	return f
}

// changed records that shard's primary old was replaced at term; silent is how long old has
// been silent as far as this member knows (0 if it does not know).
func (f *fences) changed(shard, old, term uint64, now time.Duration, silent time.Duration) {
	until := now + f.lease - silent
	if until <= now {
		return // its lease ran out already
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.mu.byShard) >= sweepFencesAt {
		// Fences of shards nobody reports any more (dropped, or replayed from an old log)
		// are let go once they have run out.
		for id := range f.mu.byShard {
			f.fencedLocked(id, 0, now) // node 0 is no node: only expired fences go
		}
	}
	f.mu.byShard[shard] = append(f.mu.byShard[shard], fence{old: old, term: term, until: until})
	m := f.mu.byNode[old]
	if m == nil {
		m = map[uint64]struct{}{}
		f.mu.byNode[old] = m
	}
	m[shard] = struct{}{}
}

// liftLocked drops the shard's fences of node old (all of them if old is 0) and those expired.
func (f *fences) liftLocked(shard, old uint64, now time.Duration) {
	kept := f.mu.byShard[shard][:0]
	for _, fc := range f.mu.byShard[shard] {
		if (old == 0 || fc.old == old) || now >= fc.until {
			if m := f.mu.byNode[fc.old]; m != nil {
				delete(m, shard)
				if len(m) == 0 {
					delete(f.mu.byNode, fc.old)
				}
			}
			continue
		}
		kept = append(kept, fc)
	}
	if len(kept) == 0 {
		delete(f.mu.byShard, shard)
	} else {
		f.mu.byShard[shard] = kept
	}
}

// restored records that this member replaced its state with a snapshot at now.
func (f *fences) restored(now time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.restoredEnd = now + f.lease
}

// observe lifts the fences a node's heartbeat shows are no longer needed: the node, an old
// primary, holds the shard at the new term or no longer holds it.
func (f *fences) observe(hb *pcspb.NodeHeartbeat, now time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.mu.byNode[hb.NodeId]
	if len(m) == 0 {
		return
	}
	terms := make(map[uint64]uint64, len(m))
	for _, st := range hb.ShardStats {
		if _, ok := m[st.ShardId]; ok {
			terms[st.ShardId] = st.Term
		}
	}
	for shard := range m {
		term, reported := terms[shard]
		for _, fc := range f.mu.byShard[shard] {
			if fc.old == hb.NodeId && ((reported && term >= fc.term) || (!reported && !slices.Contains(hb.HeldShards, shard))) {
				f.liftLocked(shard, hb.NodeId, now)
				break
			}
		}
	}
}

// fencedLocked reports whether a node other than node may still hold a grant of shard.
func (f *fences) fencedLocked(shard, node uint64, now time.Duration) bool {
	fcs, ok := f.mu.byShard[shard]
	if !ok {
		return false
	}
	fenced := false
	for _, fc := range fcs {
		fenced = fenced || (fc.old != node && now < fc.until)
	}
	if !fenced {
		f.liftLocked(shard, 0, now)
	}
	return fenced
}

// filter withholds the grants a fence still holds back: denied gains the renewals of fenced
// shards, and fenced explicit grants are left out.
func (f *fences) filter(node uint64, stats []*pcspb.ShardStats, denied []uint64, grants []*pcspb.ShardGrant, now time.Duration) ([]uint64, []*pcspb.ShardGrant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now < f.mu.restoredEnd {
		// Nothing is known of what was granted lately: no grant at all.
		denied = denied[:0]
		for _, st := range stats {
			if st.Primary {
				denied = append(denied, st.ShardId)
			}
		}
		return denied, nil
	}
	if len(f.mu.byShard) == 0 {
		return denied, grants
	}
	for _, st := range stats {
		if st.Primary && f.fencedLocked(st.ShardId, node, now) && !slices.Contains(denied, st.ShardId) {
			denied = append(denied, st.ShardId)
		}
	}
	kept := grants[:0]
	for _, g := range grants {
		if !f.fencedLocked(g.ShardId, node, now) {
			kept = append(kept, g)
		}
	}
	return denied, kept
}

// primaryChanged fences a shard's old primary (meta.Options.OnPrimaryChange). On the primary
// PCS, an old primary silent for a while has had its grant run out that much sooner.
func (s *Server) primaryChanged(shard, old, term uint64) {
	var silent time.Duration
	if s.raft != nil && s.isPrimary() {
		silent = s.live.Silent(old)
	}
	s.fences.changed(shard, old, term, s.clk.Mono(), silent)
}

// grantsFor decides the grants of a heartbeat's answer.
func (s *Server) grantsFor(hb *pcspb.NodeHeartbeat) ([]uint64, []*pcspb.ShardGrant) {
	now := s.clk.Mono()
	s.fences.observe(hb, now)
	denied, grants := s.fsm.Grants(hb.NodeId, hb.ShardStats)
	return s.fences.filter(hb.NodeId, hb.ShardStats, denied, grants, now)
}

// len is the number of shards fenced (metrics, tests).
func (f *fences) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mu.byShard)
}
