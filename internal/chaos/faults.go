package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// A fault is begun, held for its duration, then healed.
type fault struct {
	name string
	// begin injects the fault and returns what heals it.
	begin func(ctx context.Context, cl *Cluster, rng *rand.Rand) (heal func(context.Context) error, err error)
}

// The faults by name. Those on "the primary" find it when they begin.
var faults = map[string]fault{
	"isolate-primary": {"isolate-primary", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		return healNet(cl), Partition(ctx, []*Host{p.Host}, otherHosts(cl, p.Host))
	}},
	"minority-majority": {"minority-majority", func(ctx context.Context, cl *Cluster, rng *rand.Rand) (func(context.Context) error, error) {
		// One PCS member (any, maybe the primary) and a data node on one side, the rest on the other.
		pcs := cl.PCS[rng.IntN(len(cl.PCS))]
		node := cl.Nodes[rng.IntN(len(cl.Nodes))]
		minority := []*Host{pcs.Host, node.Host}
		return healNet(cl), Partition(ctx, minority, otherHosts(cl, minority...))
	}},
	"bridge": {"bridge", func(ctx context.Context, cl *Cluster, rng *rand.Rand) (func(context.Context) error, error) {
		// Two halves that share one PCS member: it reaches everyone, the halves not each other.
		order := rng.Perm(len(cl.PCS))
		shared := cl.PCS[order[0]].Host
		var a, b []*Host
		for i, idx := range order[1:] {
			if i%2 == 0 {
				a = append(a, cl.PCS[idx].Host)
			} else {
				b = append(b, cl.PCS[idx].Host)
			}
		}
		for i, n := range cl.Nodes {
			if i%2 == 0 {
				a = append(a, n.Host)
			} else {
				b = append(b, n.Host)
			}
		}
		_ = shared // in neither list: no rule cuts it off
		return healNet(cl), Partition(ctx, a, b)
	}},
	"asymmetric": {"asymmetric", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		// The primary hears nobody; everyone still hears it.
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		return healNet(cl), p.Host.Drop(ctx, otherHosts(cl, p.Host)...)
	}},
	"loss": {"loss", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		for _, h := range cl.Net.Hosts {
			if err := h.Lose(ctx, 0.2, otherHosts(cl, h)...); err != nil {
				return healNet(cl), err
			}
		}
		return healNet(cl), nil
	}},
	"pause-primary": {"pause-primary", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		// SIGSTOP for the fault's duration: well past the lease.
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { return p.Resume() }, p.Pause()
	}},
	"kill-primary": {"kill-primary", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		p.Kill()
		return func(context.Context) error { return p.Start() }, nil
	}},
	"kill-node": {"kill-node", func(ctx context.Context, cl *Cluster, rng *rand.Rand) (func(context.Context) error, error) {
		n := cl.Nodes[rng.IntN(len(cl.Nodes))]
		n.Kill()
		return func(context.Context) error { return n.Start() }, nil
	}},
	"pause-node": {"pause-node", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		// The data node leading the most shards, SIGSTOPped for the fault's duration: its
		// shards move to new primaries, and when it wakes it must not serve from its old state.
		n, err := busiestNode(ctx, cl)
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { return n.Resume() }, n.Pause()
	}},
	"pause-node-in-warmup": {"pause-node-in-warmup", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		// The PCS primary SIGSTOPped, and as soon as another has taken office (in its warm-up)
		// the busiest data node too; both resume at the heal.
		n, err := busiestNode(ctx, cl)
		if err != nil {
			return nil, err
		}
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		if err := p.Pause(); err != nil {
			return nil, err
		}
		heal := func(context.Context) error { return errors.Join(n.Resume(), p.Resume()) }
		for ctx.Err() == nil {
			if q, err := primary(ctx, cl); err == nil && q != p {
				break
			}
		}
		return heal, n.Pause()
	}},
	"isolate-node": {"isolate-node", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		// The busiest data node cut off from every other host.
		n, err := busiestNode(ctx, cl)
		if err != nil {
			return nil, err
		}
		return healNet(cl), Partition(ctx, []*Host{n.Host}, otherHosts(cl, n.Host))
	}},
	"clock-forward": {"clock-forward", clockJump("10s")},
	"clock-back":    {"clock-back", clockJump("-10s")},
	"stall-raft-log": {"stall-raft-log", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		return noHeal, p.Hook(ctx, "stall", "point", "raft-log", "for", "2s")
	}},
	"stall-pebble": {"stall-pebble", func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		n, err := busiestNode(ctx, cl)
		if err != nil {
			return nil, err
		}
		return noHeal, n.Hook(ctx, "stall", "point", "pebble", "for", "2s")
	}},
}

// clockJump moves the primary's wall clock; the heal moves it back to the real time (a jump
// of its own the other way).
func clockJump(by string) func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
	return func(ctx context.Context, cl *Cluster, _ *rand.Rand) (func(context.Context) error, error) {
		p, err := primary(ctx, cl)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return p.Hook(ctx, "clock", "reset", "1") }, p.Hook(ctx, "clock", "jump", by)
	}
}

func noHeal(context.Context) error { return nil }

func healNet(cl *Cluster) func(context.Context) error {
	return func(ctx context.Context) error { return cl.Net.HealAll(ctx) }
}

func primary(ctx context.Context, cl *Cluster) (*Proc, error) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p := cl.Primary(pctx)
	if p == nil {
		return nil, fmt.Errorf("chaos: no PCS primary found")
	}
	return p, nil
}

func otherHosts(cl *Cluster, not ...*Host) []*Host {
	var out []*Host
	for _, h := range cl.Net.Hosts {
		if !slices.Contains(not, h) {
			out = append(out, h)
		}
	}
	return out
}

// busiestNode returns the data node leading the most shards.
func busiestNode(ctx context.Context, cl *Cluster) (*Proc, error) {
	resp, err := cl.C.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	lead := map[string]uint64{}
	for _, n := range resp.Nodes {
		lead[n.Node.GetAddress()] = n.Primaries
	}
	best := cl.Nodes[0]
	for _, n := range cl.Nodes {
		if lead[n.Addr] > lead[best.Addr] {
			best = n
		}
	}
	return best, nil
}

// Schedules are named lists of faults.
var Schedules = map[string][]string{
	// ci: every fault the issue asks of every push, the primary isolated five times.
	"ci": {"isolate-primary", "minority-majority", "isolate-primary", "bridge", "isolate-primary", "asymmetric",
		"isolate-primary", "pause-primary", "clock-forward", "clock-back", "isolate-primary", "stall-raft-log",
		"stall-pebble", "kill-primary"},
	// nodes: data-node faults ten times each, for the rows' unavailability table (run with
	// --hold 1s, 2.5s, 5s).
	"nodes": slices.Concat(slices.Repeat([]string{"pause-node"}, 10), slices.Repeat([]string{"pause-node-in-warmup"}, 10),
		slices.Repeat([]string{"isolate-node"}, 10), slices.Repeat([]string{"bridge"}, 10), slices.Repeat([]string{"minority-majority"}, 10)),
	// smoke: one partition and one process fault, for a quick look.
	"smoke": {"isolate-primary", "pause-primary"},
	// soak: every fault, drawn at random for the whole duration.
	"soak": nil,
}

// FaultNames lists every fault.
func FaultNames() []string {
	var out []string
	for n := range faults {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ScheduleNames lists the schedules.
func ScheduleNames() string {
	var out []string
	for n := range Schedules {
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
