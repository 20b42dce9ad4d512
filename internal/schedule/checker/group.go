package checker

import (
	"fmt"
	"slices"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// GroupAlign keeps a shard group together. Every shard of a group's tables follows its anchor,
// the anchor table's shard of the same partition whose range holds the shard's start
// (scheduler.GroupAnchors): a follower whose range runs past its anchor's end is split at that
// key (the group's tables split where the anchor table splits, and a table created after
// splits takes the same boundaries); one whose replicas differ from the anchor's moves a
// replica to an anchor node; one whose primary is elsewhere hands the role to the anchor's
// primary. The schedulers move and split anchors only, so a balance move, a repair, a failover,
// a hot split or a drain reaches the whole group one patrol later. As a rule of placement, its
// operators are of kind Repair.
type GroupAlign struct{}

// Name implements Checker.
func (GroupAlign) Name() string { return "group" }

// Check implements Checker.
func (GroupAlign) Check(env *scheduler.Env, sh *view.Shard) *operator.Operator {
	a := env.Anchors[sh.ID]
	t := env.View.Tables[sh.Table]
	if a == nil || t == nil || !t.Public || env.View.State(sh.Primary) != view.Up || len(sh.Learners) > 0 || env.HasOp(a.ID) {
		return nil // (an anchor with an operator is on its way elsewhere: followed once it is there)
	}
	// 1. The range: split at the anchor's end if it falls inside this shard.
	if a.End != "" && a.End > sh.Start && (sh.End == "" || sh.End > a.End) {
		if env.NewShardID == nil {
			return nil
		}
		id := env.NewShardID()
		if id == 0 {
			return nil
		}
		reason := fmt.Sprintf("shard group %s: shard %d runs past anchor shard %d's end", t.Group, sh.ID, a.ID)
		return operator.New(operator.Repair, sh, reason, operator.Step{Kind: operator.Split, Node: sh.Primary, Key: a.End, NewShard: id, Version: sh.Version})
	}
	// 2. The replicas: one anchor node at a time.
	for _, to := range a.Replicas {
		if sh.Holds(to) || env.View.State(to) != view.Up {
			continue
		}
		var from uint64
		for _, r := range sh.Replicas {
			if !slices.Contains(a.Replicas, r) && (from == 0 || from == sh.Primary) {
				from = r // a secondary if there is one (no hand-over needed)
			}
		}
		if from == 0 || !env.CanSnapshot(operator.Repair, sh.Primary, to) {
			return nil
		}
		env.Loads.Moved(sh, from, to)
		reason := fmt.Sprintf("shard group %s: shard %d's replica on node %d goes to node %d, with anchor shard %d", t.Group, sh.ID, from, to, a.ID)
		return operator.New(operator.Repair, sh, reason, operator.Move(sh, from, to)...)
	}
	// 3. The primary.
	if sh.Primary != a.Primary && slices.Contains(sh.Replicas, a.Primary) && sh.IsInLine(a.Primary) && env.View.CanLead(a.Primary) {
		env.Loads.Transferred(sh, sh.Primary, a.Primary)
		reason := fmt.Sprintf("shard group %s: primary of shard %d to node %d, with anchor shard %d", t.Group, sh.ID, a.Primary, a.ID)
		return operator.New(operator.Repair, sh, reason, operator.Step{Kind: operator.TransferPrimary, Node: a.Primary})
	}
	return nil
}
