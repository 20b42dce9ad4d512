package ddl

import (
	"slices"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// RepairStep is the repair planner's decision for one round.
type RepairStep struct {
	// Changes are configuration changes to make, at most one per shard.
	Changes []*pcspb.CmdChangeReplicas
	// Create are replicas (or learners) a node should hold but does not report: node -> shards.
	Create map[uint64][]*pcspb.Shard
}

// Repair plans what keeps public tables' shards at their replica count:
//   - a node in a shard's configuration (or a learner) that is up but does not report the
//     replica is told to create it (a learner just added, a split PCS recorded before the node
//     carried it out);
//   - a learner on a lost node leaves;
//   - a learner that has caught up — its primary reports it holds every position the primary
//     has, in the current configuration — is promoted;
//   - a shard with fewer replicas and learners than its table asks, and none catching up, gets
//     a learner on the node pick chooses (skipped if pick finds none).
//
// Lost replicas are Failover's business; a shard with a lost primary is left to it.
func Repair(cat Catalog, live Positions, lost map[uint64]bool, pick func(t *pcspb.Table, have []uint64) (uint64, bool)) RepairStep {
	st := RepairStep{Create: map[uint64][]*pcspb.Shard{}}
	for _, t := range cat.Tables() {
		if t.State != pcspb.TableState_TABLE_STATE_PUBLIC {
			continue
		}
		for _, s := range cat.TableShards(t.Id) {
			holders := slices.Concat(s.Replicas, s.Learners)
			for _, n := range holders {
				if live.State(n) == cluster.Up && !live.Holds(n, s.Id) {
					st.Create[n] = append(st.Create[n], s)
				}
			}
			if lost[s.Primary] || live.State(s.Primary) != cluster.Up {
				continue
			}
			change := &pcspb.CmdChangeReplicas{ShardId: s.Id, Term: s.Term, ConfVer: s.Epoch.GetConfVer()}
			if change.RemoveNode = lostLearner(s, lost); change.RemoveNode == 0 {
				change.PromoteLearner = caughtUp(s, live)
			}
			switch {
			case change.RemoveNode != 0 || change.PromoteLearner != 0:
			case len(s.Learners) == 0 && len(s.Replicas) < int(t.Replicas):
				n, ok := pick(t, holders)
				if !ok {
					continue
				}
				change.AddLearner = n
			default:
				continue
			}
			st.Changes = append(st.Changes, change)
		}
	}
	return st
}

func lostLearner(s *pcspb.Shard, lost map[uint64]bool) uint64 {
	for _, l := range s.Learners {
		if lost[l] {
			return l
		}
	}
	return 0
}

// caughtUp returns a learner of s that the primary reports in line with it, in s's current
// term and configuration.
func caughtUp(s *pcspb.Shard, live Positions) uint64 {
	if len(s.Learners) == 0 {
		return 0
	}
	st := live.ShardStats(s.Primary, s.Id)
	if st == nil || st.Term != s.Term || st.ConfVer != s.Epoch.GetConfVer() {
		return 0
	}
	own, ok := st.ReplicaPositions[s.Primary]
	if !ok {
		return 0
	}
	for _, l := range s.Learners {
		if pos, ok := st.ReplicaPositions[l]; ok && pos == own && live.Holds(l, s.Id) {
			return l
		}
	}
	return 0
}
