package ddl

import (
	"github.com/postdb/pcs/api/pcspb"
)

// Missing lists the replicas (and learners) of public tables' shards that an up node should
// hold but does not report — a learner an operator just added, a split PCS recorded before the
// node carried it out — by node: each is told to create them. Deciding which replicas a shard
// should have is the scheduler's business (internal/schedule); this only delivers the result.
//
// A node gets at most MaxNodeCommands of them, oldest tables first: a node that lost its disk,
// or a new cluster of empty nodes, may be owed millions, and the rest come once it reports the
// first ones made.
func Missing(cat Catalog, live Live) map[uint64][]*pcspb.Shard {
	out := map[uint64][]*pcspb.Shard{}
	up := map[uint64]bool{} // (one State call per node, not per replica)
	for _, n := range live.UpNodes() {
		up[n] = true
	}
	full := 0 // up nodes given MaxNodeCommands: once all are, the rest need not be read
	check := func(n uint64, s *pcspb.Shard) {
		if up[n] && len(out[n]) < MaxNodeCommands && !live.Holds(n, s.Id) {
			out[n] = append(out[n], s)
			if len(out[n]) == MaxNodeCommands {
				full++
			}
		}
	}
	for _, t := range cat.Tables() {
		if full == len(up) && full > 0 {
			break
		}
		if t.State != pcspb.TableState_TABLE_STATE_PUBLIC {
			continue
		}
		for _, s := range cat.TableShards(t.Id) {
			for _, n := range s.Replicas {
				check(n, s)
			}
			for _, n := range s.Learners {
				check(n, s)
			}
		}
	}
	return out
}
