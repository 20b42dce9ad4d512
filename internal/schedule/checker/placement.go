package checker

import (
	"fmt"
	"slices"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Placement moves a replica that breaks its table's placement rules — on a node the table
// does not allow, or sharing an isolation value (zone) with another replica — to a node that
// keeps them, if there is one.
type Placement struct{}

// Name implements Checker.
func (Placement) Name() string { return "placement" }

// Check implements Checker.
func (Placement) Check(env *scheduler.Env, sh *view.Shard) *operator.Operator {
	t := env.View.Tables[sh.Table]
	if t == nil || !t.Public || len(sh.Learners) > 0 || env.View.State(sh.Primary) != view.Up {
		return nil
	}
	// The primary last: moving another replica needs no hand-over.
	order := append(slices.DeleteFunc(slices.Clone(sh.Replicas), func(r uint64) bool { return r == sh.Primary }), sh.Primary)
	for _, r := range order {
		bad := ""
		switch {
		case !t.Allows(r):
			bad = "not among the table's nodes"
		case t.IsolationLabel != "" && shares(env.View, t, sh, r):
			bad = fmt.Sprintf("shares %s=%q with another replica", t.IsolationLabel, env.View.Zone(r, t.IsolationLabel))
		}
		if bad == "" {
			continue
		}
		to := scheduler.Target(env, sh, r, nil)
		if to == 0 {
			continue
		}
		env.Loads.Moved(sh, r, to)
		return operator.New(operator.Repair, sh, fmt.Sprintf("misplaced: node %d %s", r, bad), operator.Move(sh, r, to)...)
	}
	return nil
}

func shares(v *view.Cluster, t *view.Table, sh *view.Shard, r uint64) bool {
	z := v.Zone(r, t.IsolationLabel)
	for _, o := range sh.Replicas {
		if o != r && v.Zone(o, t.IsolationLabel) == z {
			return true
		}
	}
	return false
}
