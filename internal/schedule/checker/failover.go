package checker

import (
	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// Catalog is what Failover reads of the metadata.
type Catalog interface {
	Tables() []*pcspb.Table
	TableShards(tableID uint64) []*pcspb.Shard
}

// Positions is what Failover reads of the nodes: their state and the log positions they report.
type Positions interface {
	State(node uint64) cluster.State
	ShardStats(node, shard uint64) *pcspb.ShardStats
}

// Failover is the one checker that acts on the catalog directly, not through an operator: a
// shard on a lost node must not wait for the controller's budget or a patrol (its writes stop
// until the configuration changes), and its decision depends on leases, not on load.
//
// Failover plans configuration changes for shards with a replica on a lost node. A lost
// replica is removed (conf_ver + 1) so that the primary's writes go on. A lost primary is
// replaced: for shards whose primary is on a lost node — one silent for at
// least its lease plus a safety margin, so that the old primary has stopped serving before
// another is made primary (the caller decides which nodes are lost). The replica with the
// highest reported log position among the up ones is promoted (lowest id on a tie); the lost
// node leaves the configuration. A shard with no up replica is left alone.
//
// With primariesOnly, only lost primaries are replaced (a new PCS primary does that once lease
// plus margin has passed since it took office; removing lost replicas waits for its warm-up).
func Failover(cat Catalog, live Positions, lost map[uint64]bool, primariesOnly bool) []*pcspb.CmdChangePrimary {
	if len(lost) == 0 {
		return nil
	}
	var out []*pcspb.CmdChangePrimary
	for _, t := range cat.Tables() {
		for _, s := range cat.TableShards(t.Id) {
			if !lost[s.Primary] {
				if primariesOnly {
					continue
				}
				// A lost replica: drop it from the configuration so the primary's writes go on.
				for _, r := range s.Replicas {
					if lost[r] && r != s.Primary {
						out = append(out, &pcspb.CmdChangePrimary{ShardId: s.Id, Term: s.Term, ConfVer: s.Epoch.GetConfVer(),
							NewPrimary: s.Primary, RemoveNode: r})
						break // one change per shard per round: the next is planned on the new conf_ver
					}
				}
				continue
			}
			var best, bestPos uint64
			found := false
			for _, r := range s.Replicas {
				if r == s.Primary || lost[r] || live.State(r) != cluster.Up {
					continue
				}
				st := live.ShardStats(r, s.Id)
				if st == nil {
					continue // no report of its position yet
				}
				pos := st.ReplicaPositions[r]
				if !found || pos > bestPos || (pos == bestPos && r < best) {
					best, bestPos, found = r, pos, true
				}
			}
			if found {
				out = append(out, &pcspb.CmdChangePrimary{ShardId: s.Id, Term: s.Term, ConfVer: s.Epoch.GetConfVer(),
					NewPrimary: best, RemoveNode: s.Primary})
			}
		}
	}
	return out
}
