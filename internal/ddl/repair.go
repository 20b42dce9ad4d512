package ddl

import (
	"slices"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// Missing lists the replicas (and learners) of public tables' shards that an up node should
// hold but does not report — a learner an operator just added, a split PCS recorded before the
// node carried it out — by node: each is told to create them. Deciding which replicas a shard
// should have is the scheduler's business (internal/schedule); this only delivers the result.
func Missing(cat Catalog, live Live) map[uint64][]*pcspb.Shard {
	out := map[uint64][]*pcspb.Shard{}
	for _, t := range cat.Tables() {
		if t.State != pcspb.TableState_TABLE_STATE_PUBLIC {
			continue
		}
		for _, s := range cat.TableShards(t.Id) {
			for _, n := range slices.Concat(s.Replicas, s.Learners) {
				if live.State(n) == cluster.Up && !live.Holds(n, s.Id) {
					out[n] = append(out[n], s)
				}
			}
		}
	}
	return out
}
