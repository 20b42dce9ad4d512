package scheduler

import "github.com/postdb/pcs/internal/schedule/operator"

// Scheduler proposes operators from one tick's view. It changes nothing; the coordinator admits
// what it returns through the controller. A scheduler may keep state between ticks (a
// balancer's deadband), never anything the view does not show again on a new PCS primary.
type Scheduler interface {
	Name() string
	Kind() operator.Kind
	// Schedule returns at most max operators; it accounts for them in env.Loads.
	Schedule(env *Env, max int) []*operator.Operator
}

// All returns one of each scheduler, in the order the coordinator runs them.
func All() []Scheduler {
	return []Scheduler{&Drain{}, HighSpace{}, &Hot{}, &BalanceReplica{}, &BalancePrimary{}}
}

// deadband gives a balancer hysteresis: it becomes active once the cluster is outside the
// start band and stays active, proposing one operator at a time, until it is inside the stop
// band (so it neither starts on noise nor stops just past the edge).
type deadband struct{ active bool }

// run proposes up to max operators with one, while outside(band) says there is work.
func (d *deadband) run(env *Env, max int, outside func(band float64) bool, one func() *operator.Operator) []*operator.Operator {
	if d.active {
		d.active = outside(env.Bands.Stop)
	} else {
		d.active = outside(env.Bands.Start)
	}
	var out []*operator.Operator
	for d.active && len(out) < max {
		op := one()
		if op == nil {
			break
		}
		out = append(out, op)
		d.active = outside(env.Bands.Stop)
	}
	return out
}
