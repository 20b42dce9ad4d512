package checker

import (
	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Failover plans the configuration changes for shards with a replica on a lost node (a node
// the view marks Down: silent for at least its lease plus a safety margin, so that an old
// primary there has stopped serving before another is made primary). It is the coordinator's
// first pass and its changes go straight to the catalog: a shard on a lost node must not wait
// for the controller's budget, a patrol or an operator (its writes stop until its
// configuration changes), and the decision depends on leases, not on load.
//
// A lost replica is removed (conf_ver + 1) so that the primary's writes go on. A lost primary
// is replaced by the replica with the highest log position it reported itself
// (view.Shard.Positions: replicas heartbeating now) among those not lost, the lowest id on a
// tie; the lost node leaves the configuration. A shard with no such replica is left alone. One
// change per shard per round: the next is planned on the new configuration.
//
// With primariesOnly, only lost primaries are replaced (a new PCS primary does that once lease
// plus margin has passed since it took office; removing lost replicas waits for its warm-up).
func Failover(v *view.Cluster, primariesOnly bool) []*pcspb.CmdChangePrimary {
	lost := func(n uint64) bool { return v.State(n) == view.Down }
	var out []*pcspb.CmdChangePrimary
	for _, s := range v.Shards {
		if !lost(s.Primary) {
			if primariesOnly {
				continue
			}
			for _, r := range s.Replicas {
				if lost(r) && r != s.Primary {
					out = append(out, &pcspb.CmdChangePrimary{ShardId: s.ID, Term: s.Term, ConfVer: s.ConfVer, NewPrimary: s.Primary, RemoveNode: r})
					break
				}
			}
			continue
		}
		var best, bestPos uint64
		found := false
		for _, r := range s.Replicas {
			pos, reported := s.Positions[r]
			if r == s.Primary || lost(r) || !reported {
				continue
			}
			if !found || pos > bestPos || (pos == bestPos && r < best) {
				best, bestPos, found = r, pos, true
			}
		}
		if found {
			out = append(out, &pcspb.CmdChangePrimary{ShardId: s.ID, Term: s.Term, ConfVer: s.ConfVer, NewPrimary: best, RemoveNode: s.Primary})
		}
	}
	return out
}
