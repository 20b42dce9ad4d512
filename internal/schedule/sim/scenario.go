package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postdb/pcs/internal/schedule"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// ErrScenario means a scenario file is malformed.
var ErrScenario = errors.New("bad scenario")

// ErrAssert means a scenario's assertion failed.
var ErrAssert = errors.New("assertion failed")

// Result is what a scenario run reports.
type Result struct {
	Hash      uint64
	Metrics   map[string]float64 // the values each assertion read, by "line N: metric"
	Simulated time.Duration
	Failures  []string
}

// Runner runs one scenario.
type Runner struct {
	Sim  *Sim
	seed uint64
	// State at the last mark.
	markAt             time.Duration
	markMoves, markRev int
	markTransfers      int
	markSplits         int
	markMerges         int
	peakLoad           float64 // the highest load max/mean since the mark, at whole seconds
	tstar, minMoves    float64
	primariesOffAt     time.Duration
	res                *Result
}

// Run parses and runs a scenario with seed. Per-minute metrics go to table and the operator
// trace to trace, if set. Assertion failures are collected in the result (and reported as
// ErrAssert); a malformed scenario stops the run.
func Run(r io.Reader, seed uint64, table, trace io.Writer) (*Result, error) {
	cfg := schedule.DefaultConfig()
	ru := &Runner{seed: seed, res: &Result{Metrics: map[string]float64{}}}
	ru.Sim = New(seed, Params{}, cfg)
	ru.Sim.Table = table
	if trace != nil {
		ru.Sim.SetTrace(trace)
	}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if i := strings.Index(text, "#"); i >= 0 {
			text = strings.TrimSpace(text[:i])
		}
		if text == "" {
			continue
		}
		if err := ru.do(line, strings.Fields(text)); err != nil {
			return ru.res, fmt.Errorf("line %d %q: %w", line, text, err)
		}
	}
	if err := sc.Err(); err != nil {
		return ru.res, err
	}
	ru.res.Hash = ru.Sim.TraceHash()
	ru.res.Simulated = ru.Sim.Now()
	if len(ru.res.Failures) > 0 {
		return ru.res, fmt.Errorf("%w: %s", ErrAssert, strings.Join(ru.res.Failures, "; "))
	}
	return ru.res, nil
}

func kv(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not key=value", ErrScenario, a)
		}
		out[k] = v
	}
	return out, nil
}

// ParseSize reads 64MiB, 1GiB, 512KiB or a byte count.
func ParseSize(s string) (uint64, error) {
	mult := 1.0
	for _, u := range []struct {
		suf string
		m   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: size %q", ErrScenario, s)
	}
	return uint64(v * mult), nil
}

func parseDur(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: duration %q", ErrScenario, s)
	}
	return d, nil
}

func (ru *Runner) do(line int, f []string) error {
	s := ru.Sim
	args, err := kv(f[1:])
	if f[0] == "config" || f[0] == "assert" || f[0] == "run" || f[0] == "kill-node" || f[0] == "drain-node" ||
		f[0] == "stop-node" || f[0] == "start-node" || f[0] == "evict-primaries" || f[0] == "admit-primaries" ||
		f[0] == "grow-sizes" || f[0] == "tstar" || f[0] == "run-until" {
		args, err = nil, nil
	}
	if err != nil {
		return err
	}
	switch f[0] {
	case "nodes", "add-nodes":
		n, err := strconv.Atoi(args["n"])
		if err != nil || n < 1 || n > 10000 {
			return fmt.Errorf("%w: n=%q", ErrScenario, args["n"])
		}
		var capacity uint64
		if c := args["capacity"]; c != "" {
			if capacity, err = ParseSize(c); err != nil {
				return err
			}
		}
		zones := strings.Split(args["zones"], ",")
		for i := 0; i < n; i++ {
			labels := map[string]string{}
			if z := zones[i%len(zones)]; z != "" {
				labels["zone"] = z
			}
			s.AddNode(labels, capacity)
		}
	case "table":
		n, err := strconv.Atoi(args["shards"])
		if err != nil || n < 1 || n > 10_000_000 {
			return fmt.Errorf("%w: shards=%q", ErrScenario, args["shards"])
		}
		reps, err := strconv.Atoi(args["replicas"])
		if err != nil || reps < 1 {
			return fmt.Errorf("%w: replicas=%q", ErrScenario, args["replicas"])
		}
		size, err := sizeDist(args["size"])
		if err != nil {
			return err
		}
		ranged := false
		switch args["partitions"] {
		case "", "each":
		case "one":
			ranged = true
		default:
			return fmt.Errorf("%w: partitions=%q (each: a partition per shard; one: one partition of neighbouring ranges)", ErrScenario, args["partitions"])
		}
		if err := s.AddTable(n, reps, args["isolation"], args["group"], ranged, size); err != nil {
			return fmt.Errorf("%w: %w", ErrScenario, err)
		}
	case "config":
		if len(f) < 3 {
			return fmt.Errorf("%w: config KEY VALUE", ErrScenario)
		}
		f = []string{f[0], f[1], strings.Join(f[2:], " ")}
		if f[1] == "down-timeout" || f[1] == "heartbeat" {
			d, err := parseDur(f[2])
			if err != nil {
				return err
			}
			if f[1] == "heartbeat" {
				s.P.Heartbeat = d
			} else {
				s.P.DownTimeout = d
			}
			return nil
		}
		if err := s.Cfg.Set(f[1], f[2]); err != nil {
			return fmt.Errorf("%w: %w", ErrScenario, err)
		}
		if s.coord != nil {
			s.coord.SetConfig(s.Cfg)
		}
	case "kill-node", "drain-node", "stop-node", "start-node", "evict-primaries", "admit-primaries":
		if len(f) != 2 {
			return fmt.Errorf("%w: %s ID", ErrScenario, f[0])
		}
		id, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || s.node(id) == nil {
			return fmt.Errorf("%w: node %q", ErrScenario, f[1])
		}
		switch f[0] {
		case "kill-node", "stop-node": // a stop is a kill the node comes back from
			s.Kill(id)
		case "start-node":
			s.Start(id)
		case "evict-primaries":
			s.SetEvict(id, true)
		case "admit-primaries":
			s.SetEvict(id, false)
		default:
			s.Drain(id)
			ru.primariesOffAt = -1
		}
	case "load":
		var v [4]float64
		for i, k := range []string{"keys", "hot", "zipf", "reads"} {
			if args[k] == "" {
				continue
			}
			x, err := strconv.ParseFloat(args[k], 64)
			if err != nil || x < 0 || math.IsInf(x, 0) || (i != 0 && i != 2 && x > 1) || (i == 2 && x > 5) {
				return fmt.Errorf("%w: %s=%q", ErrScenario, k, args[k])
			}
			v[i] = x
		}
		if v[0] <= 0 {
			return fmt.Errorf("%w: load needs keys=N (keys/s)", ErrScenario)
		}
		s.SetLoad(v[0], v[1], v[2], v[3])
	case "load-led":
		node, err := strconv.ParseUint(args["node"], 10, 64)
		if err != nil || s.node(node) == nil {
			return fmt.Errorf("%w: load-led node=%q", ErrScenario, args["node"])
		}
		count, err := strconv.Atoi(args["count"])
		if err != nil || count < 1 {
			return fmt.Errorf("%w: load-led count=%q", ErrScenario, args["count"])
		}
		keys, err := strconv.ParseFloat(args["keys"], 64)
		if err != nil || keys <= 0 || math.IsInf(keys, 0) {
			return fmt.Errorf("%w: load-led keys=%q", ErrScenario, args["keys"])
		}
		reads := false
		switch args["of"] {
		case "", "writes":
		case "reads":
			reads = true
		default:
			return fmt.Errorf("%w: load-led of=%q (reads or writes)", ErrScenario, args["of"])
		}
		s.LoadLed(node, count, keys, reads)
	case "split-shard":
		id, err := strconv.ParseUint(args["id"], 10, 64)
		if err != nil || s.SplitShard(id) != nil {
			return fmt.Errorf("%w: split-shard id=%q", ErrScenario, args["id"])
		}
	case "drop-rows":
		id, err := strconv.ParseUint(args["table"], 10, 64)
		if err != nil || s.tables[id] == nil {
			return fmt.Errorf("%w: drop-rows table=%q", ErrScenario, args["table"])
		}
		s.DropRows(id)
	case "kill-pcs-primary":
		s.KillPCSPrimary()
	case "grow-sizes":
		if len(f) != 2 {
			return fmt.Errorf("%w: grow-sizes FACTOR", ErrScenario)
		}
		x, err := strconv.ParseFloat(f[1], 64)
		if err != nil || x <= 0 {
			return fmt.Errorf("%w: factor %q", ErrScenario, f[1])
		}
		s.GrowSizes(x)
	case "mark":
		ru.markAt, ru.markMoves, ru.markRev = s.Now(), s.Moves, s.Reverted
		ru.markTransfers, ru.markSplits, ru.peakLoad, ru.markMerges = s.PrimaryTransfers, s.Splits, s.LoadMaxMean(), s.Merges
	case "tstar":
		if len(f) != 2 || (f[1] != "balance" && f[1] != "drain") {
			return fmt.Errorf("%w: tstar balance|drain", ErrScenario)
		}
		ru.tstar, ru.minMoves = ru.plan(f[1] == "balance")
	case "run":
		if len(f) != 2 {
			return fmt.Errorf("%w: run DURATION", ErrScenario)
		}
		d, err := parseDur(f[1])
		if err != nil {
			return err
		}
		ru.runFor(d, nil)
	case "run-until":
		if len(f) != 3 {
			return fmt.Errorf("%w: run-until COND MAX", ErrScenario)
		}
		d, err := parseDur(f[2])
		if err != nil {
			return err
		}
		cond, err := ru.cond(f[1])
		if err != nil {
			return err
		}
		if !ru.runFor(d, cond) {
			ru.res.Failures = append(ru.res.Failures, fmt.Sprintf("line %d: %s not reached within %s", line, f[1], d))
		}
	case "assert":
		if len(f) != 4 {
			return fmt.Errorf("%w: assert METRIC OP VALUE", ErrScenario)
		}
		got, err := ru.metric(f[1])
		if err != nil {
			return err
		}
		want, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			return fmt.Errorf("%w: value %q", ErrScenario, f[3])
		}
		ok := false
		switch f[2] {
		case "<=":
			ok = got <= want
		case ">=":
			ok = got >= want
		case "==":
			ok = got == want
		default:
			return fmt.Errorf("%w: operator %q (<=, >=, ==)", ErrScenario, f[2])
		}
		ru.res.Metrics[fmt.Sprintf("line %d: %s", line, f[1])] = got
		if !ok {
			ru.res.Failures = append(ru.res.Failures, fmt.Sprintf("line %d: %s = %.4g, want %s %s", line, f[1], got, f[2], f[3]))
		}
	default:
		return fmt.Errorf("%w: unknown command %q", ErrScenario, f[0])
	}
	return nil
}

func sizeDist(spec string) (func(*rand.Rand) uint64, error) {
	parts := strings.Split(spec, ":")
	switch {
	case parts[0] == "lognormal" && len(parts) == 3:
		median, err := ParseSize(parts[1])
		if err != nil {
			return nil, err
		}
		sigma, err := strconv.ParseFloat(parts[2], 64)
		if err != nil || sigma < 0 || sigma > 5 {
			return nil, fmt.Errorf("%w: sigma %q", ErrScenario, parts[2])
		}
		return func(r *rand.Rand) uint64 { return uint64(float64(median) * math.Exp(sigma*r.NormFloat64())) }, nil
	case parts[0] == "fixed" && len(parts) == 2:
		v, err := ParseSize(parts[1])
		if err != nil {
			return nil, err
		}
		return func(*rand.Rand) uint64 { return v }, nil
	case parts[0] == "one" && len(parts) == 2: // the first shard has this size, the rest are empty
		v, err := ParseSize(parts[1])
		if err != nil {
			return nil, err
		}
		first := true
		return func(*rand.Rand) uint64 {
			if first {
				first = false
				return v
			}
			return 0
		}, nil
	}
	return nil, fmt.Errorf("%w: size %q (lognormal:MEDIAN:SIGMA, fixed:SIZE, one:SIZE)", ErrScenario, spec)
}

func (ru *Runner) runFor(d time.Duration, cond func() bool) bool {
	s := ru.Sim
	end := s.Now() + d
	for s.Now() < end {
		next := min(end, (s.Now()/time.Minute+1)*time.Minute)
		if s.RunUntil(next-s.Now(), func() bool {
			ru.watch()
			return cond != nil && cond()
		}) && cond != nil {
			ru.row()
			return true
		}
		ru.row()
	}
	return cond == nil
}

func (ru *Runner) watch() {
	if ru.Sim.Now()%time.Second == 0 {
		ru.peakLoad = math.Max(ru.peakLoad, ru.Sim.LoadMaxMean())
	}
	if ru.primariesOffAt == -1 {
		for _, n := range ru.Sim.nodes {
			if n.State == view.Offline && ru.count(n.ID, true) == 0 {
				ru.primariesOffAt = ru.Sim.Now() - ru.markAt
			}
		}
	}
}

// row writes one line of the per-minute table.
func (ru *Runner) row() {
	s := ru.Sim
	if s.Table == nil {
		return
	}
	minC, maxC, minP, maxP := math.MaxInt, 0, math.MaxInt, 0
	tc, tp, _ := ru.tally()
	for _, n := range s.nodes {
		if n.State != view.Up {
			continue
		}
		c, p := tc[n.ID], tp[n.ID]
		minC, maxC, minP, maxP = min(minC, c), max(maxC, c), min(minP, p), max(maxP, p)
	}
	ops := 0
	if s.coord != nil {
		ops = len(s.coord.Operators(false))
	}
	fmt.Fprintf(s.Table, "%8.0f %6d %7d %8d %9d %6d %6d %6d %6d %8.3f %6d\n", s.Now().Seconds(), ops, len(s.transfers), s.Moves, s.Reverted, minC, maxC, minP, maxP,
		s.LoadMaxMean(), s.Splits)
}

// TableHeader names the per-minute table's columns.
const TableHeader = "  time_s    ops snapshots    moves  reverted  min_r  max_r  min_p  max_p load_max splits\n"

// tally counts, in one pass, each node's replicas, primaries and bytes.
func (ru *Runner) tally() (c, p map[uint64]int, b map[uint64]float64) {
	c, p, b = map[uint64]int{}, map[uint64]int{}, map[uint64]float64{}
	for _, sh := range ru.Sim.shards {
		for _, r := range sh.Replicas {
			c[r]++
			b[r] += float64(sh.Size)
		}
		for _, r := range sh.Learners {
			c[r]++
			b[r] += float64(sh.Size)
		}
		p[sh.Primary]++
	}
	return c, p, b
}

func (ru *Runner) count(id uint64, primaries bool) int {
	c := 0
	for _, sh := range ru.Sim.shards {
		if primaries {
			if sh.Primary == id {
				c++
			}
		} else if sh.Holds(id) {
			c++
		}
	}
	return c
}

func (ru *Runner) balanced() bool {
	return ru.spread("count") <= 0 && ru.spread("primary") <= 0 && ru.spread("util") <= 0
}

func (ru *Runner) cond(name string) (func() bool, error) {
	if m, limit, ok := strings.Cut(name, "<="); ok { // any metric: METRIC<=VALUE
		v, err := strconv.ParseFloat(limit, 64)
		if err != nil || math.IsNaN(v) {
			return nil, fmt.Errorf("%w: %q", ErrScenario, name)
		}
		if _, err := ru.metric(m); err != nil {
			return nil, err
		}
		return func() bool { got, _ := ru.metric(m); return got <= v }, nil
	}
	switch {
	case name == "balanced":
		return func() bool { return ru.Sim.Now()%time.Minute == 0 && ru.balanced() }, nil
	case name == "idle":
		return func() bool { return ru.Sim.coord != nil && len(ru.Sim.coord.Operators(false)) == 0 }, nil
	case strings.HasPrefix(name, "loaded-spread:"):
		// The shards with load: their primaries over the up nodes differ by at most N (PD's
		// hot-write and hot-read cases' checker, on leaders).
		limit, err := strconv.Atoi(strings.TrimPrefix(name, "loaded-spread:"))
		if err != nil || limit < 0 {
			return nil, fmt.Errorf("%w: %q", ErrScenario, name)
		}
		return func() bool {
			count := map[uint64]int{}
			for _, n := range ru.Sim.nodes {
				if n.State == view.Up {
					count[n.ID] = 0
				}
			}
			for _, sh := range ru.Sim.shards {
				if _, up := count[sh.Primary]; up && sh.Load.Keys() > 0 {
					count[sh.Primary]++
				}
			}
			lo, hi := math.MaxInt, 0
			for _, c := range count {
				lo, hi = min(lo, c), max(hi, c)
			}
			return hi-lo <= limit
		}, nil
	case strings.HasPrefix(name, "primaries-off:"):
		id, err := strconv.ParseUint(strings.TrimPrefix(name, "primaries-off:"), 10, 64)
		if err != nil || ru.Sim.node(id) == nil {
			return nil, fmt.Errorf("%w: %q", ErrScenario, name)
		}
		return func() bool { return ru.count(id, true) == 0 }, nil
	case strings.HasPrefix(name, "drained:"):
		id, err := strconv.ParseUint(strings.TrimPrefix(name, "drained:"), 10, 64)
		if err != nil || ru.Sim.node(id) == nil {
			return nil, fmt.Errorf("%w: %q", ErrScenario, name)
		}
		return func() bool { return ru.Sim.Now()%(10*time.Second) == 0 && ru.count(id, false) == 0 }, nil
	}
	return nil, fmt.Errorf("%w: condition %q (balanced, idle, drained:ID, primaries-off:ID)", ErrScenario, name)
}

// spread is how far the worst up node is outside ±5 % (or one shard) of its share, in that
// band's units: <= 0 means inside.
func (ru *Runner) spread(what string) float64 {
	s := ru.Sim
	type ld struct {
		c, p  float64
		b     float64
		w     float64
		share float64
	}
	var list []ld
	var capSum, totC, totP, totB float64
	for _, n := range s.nodes {
		if n.State != view.Up {
			continue
		}
		list = append(list, ld{w: float64(n.Capacity)})
		capSum += float64(n.Capacity)
	}
	if len(list) == 0 {
		return 0
	}
	i := 0
	tc, tp, tb := ru.tally()
	for _, n := range s.nodes {
		if n.State != view.Up {
			continue
		}
		list[i].c, list[i].p, list[i].b = float64(tc[n.ID]), float64(tp[n.ID]), tb[n.ID]
		totC += list[i].c
		totP += list[i].p
		totB += list[i].b
		i++
	}
	worst := math.Inf(-1)
	for _, l := range list {
		w := 1 / float64(len(list))
		if capSum > 0 {
			w = l.w / capSum
		}
		var v float64
		switch what {
		case "count":
			t := w * totC
			v = math.Abs(l.c-t) - math.Max(0.05*t, 1)
		case "primary":
			t := totP / float64(len(list))
			v = math.Abs(l.p-t) - math.Max(0.05*t, 1)
		case "util":
			if totB == 0 {
				return 0
			}
			v = math.Abs(l.b/(w*totB)-1) - 0.05
		case "util-raw":
			if totB == 0 {
				return 0
			}
			v = math.Abs(l.b/(w*totB) - 1)
		}
		worst = math.Max(worst, v)
	}
	return worst
}

// plan computes T* and the fewest moves for the balancing problem the cluster is in now: each
// up node's share of the replicas and bytes by capacity; a node below it must receive the
// difference, and the nodes above it (for a drain, the up nodes co-holding the drained node's
// shards: a snapshot comes from a holder) send it. T* is the
// largest per-node bytes to receive or send over the budget the operator kind may use.
func (ru *Runner) plan(balance bool) (tstar, moves float64) {
	s := ru.Sim
	rate := float64(s.Cfg.SnapshotBytesPerSec)
	if balance {
		rate *= s.Cfg.Speed.Share()
	}
	var capSum, totC, totB float64
	up := 0
	for _, n := range s.nodes {
		if n.State == view.Up {
			capSum += float64(n.Capacity)
			up++
		}
	}
	for _, sh := range s.shards {
		totC += float64(len(sh.Replicas))
		totB += float64(len(sh.Replicas)) * float64(sh.Size)
	}
	var recvMax, recvSum float64
	senders := 0
	for _, n := range s.nodes {
		if n.State != view.Up {
			continue
		}
		w := 1 / float64(up)
		if capSum > 0 {
			w = float64(n.Capacity) / capSum
		}
		var c, b float64
		for _, sh := range s.shards {
			if sh.Holds(n.ID) {
				c++
				b += float64(sh.Size)
			}
		}
		if d := w*totB - b; d > 0 {
			recvMax = math.Max(recvMax, d)
			recvSum += d
		} else {
			senders++
		}
		if d := w*totC - c; d > 0 {
			moves += math.Round(d)
		}
	}
	if !balance {
		// Drain: each leaving shard is sent by one of its other holders, so the send bound
		// spreads over the distinct up nodes that co-hold a shard of the drained node.
		co := map[uint64]bool{}
		for _, n := range s.nodes {
			if n.State != view.Offline {
				continue
			}
			for _, sh := range s.shards {
				if sh.Holds(n.ID) {
					for _, r := range sh.Replicas {
						if s.node(r).State == view.Up {
							co[r] = true
						}
					}
				}
			}
		}
		senders = len(co)
	}
	if rate == 0 || recvSum == 0 {
		return 0, moves
	}
	return math.Max(recvMax/rate, recvSum/float64(max(senders, 1))/rate), moves
}

func (ru *Runner) metric(name string) (float64, error) {
	s := ru.Sim
	elapsed := (s.Now() - ru.markAt).Seconds()
	switch name {
	case "elapsed":
		return elapsed, nil
	case "tstar":
		return ru.tstar, nil
	case "time/tstar":
		if ru.tstar == 0 {
			return 0, fmt.Errorf("%w: time/tstar without tstar", ErrScenario)
		}
		return elapsed / ru.tstar, nil
	case "moves":
		return float64(s.Moves - ru.markMoves), nil
	case "moves/min":
		if ru.minMoves == 0 {
			return 0, fmt.Errorf("%w: moves/min without a plan needing moves", ErrScenario)
		}
		return float64(s.Moves-ru.markMoves) / ru.minMoves, nil
	case "moved-fraction":
		return float64(s.Moves-ru.markMoves) / float64(len(s.shards)), nil
	case "reverted":
		return float64(s.Reverted - ru.markRev), nil
	case "isolation-violations":
		return float64(s.IsolationViolations), nil
	case "min-live":
		return float64(s.MinLive), nil
	case "duplicates":
		return float64(s.Duplicates), nil
	case "first-op-after-election":
		return s.FirstOpAfterElection.Seconds(), nil
	case "primaries-off":
		if ru.primariesOffAt < 0 {
			return math.Inf(1), nil
		}
		return ru.primariesOffAt.Seconds(), nil
	case "max-space-used":
		return s.MaxSpaceUsed(), nil
	case "max-primaryless":
		return float64(s.MaxPrimaryless), nil
	case "group-misaligned":
		return float64(ru.misaligned()), nil
	case "added-to-low-space":
		return float64(s.AddedLowSpace), nil
	case "load-max-mean":
		return s.LoadMaxMean(), nil
	case "load-max-mean-peak":
		return ru.peakLoad, nil
	case "primary-transfers":
		return float64(s.PrimaryTransfers - ru.markTransfers), nil
	case "merges":
		return float64(s.Merges - ru.markMerges), nil
	case "merges-in-cooldown":
		return float64(s.MergesInCooldown), nil
	case "hot-merges":
		return float64(s.HotMerges), nil
	case "load-splits":
		return float64(s.Splits - ru.markSplits), nil
	case "first-split":
		if s.FirstSplitAt < 0 || s.FirstSplitAt < ru.markAt {
			return math.Inf(1), nil
		}
		return (s.FirstSplitAt - ru.markAt).Seconds(), nil
	case "count-spread", "primary-spread", "util-spread":
		return ru.spread(strings.TrimSuffix(name, "-spread")), nil
	case "utilization-deviation":
		return ru.spread("util-raw"), nil
	}
	if t, ok := strings.CutPrefix(name, "shards-of:"); ok {
		id, err := strconv.ParseUint(t, 10, 64)
		if err != nil || s.tables[id] == nil {
			return 0, fmt.Errorf("%w: %q (shards-of:TABLE)", ErrScenario, name)
		}
		n := 0
		for _, sh := range s.shards {
			if sh.Table == id {
				n++
			}
		}
		return float64(n), nil
	}
	if label, ok := strings.CutPrefix(name, "primaries-in:"); ok {
		k, v, ok := strings.Cut(label, "=")
		if !ok {
			return 0, fmt.Errorf("%w: %q (primaries-in:LABEL=VALUE)", ErrScenario, name)
		}
		in := 0
		for _, sh := range s.shards {
			if n := s.node(sh.Primary); n != nil && n.Labels[k] == v {
				in++
			}
		}
		return float64(in) / float64(max(len(s.shards), 1)), nil
	}
	return 0, fmt.Errorf("%w: unknown metric %q", ErrScenario, name)
}

// misaligned counts the shards of shard groups not on their anchor's nodes, with its primary,
// and within its range (see checker.GroupAlign).
func (ru *Runner) misaligned() int {
	v := &view.Cluster{Tables: ru.Sim.tables, Shards: ru.Sim.shards}
	n := 0
	for id, a := range scheduler.GroupAnchors(v) {
		sh := ru.Sim.shard(id)
		same := len(sh.Replicas) == len(a.Replicas) && len(sh.Learners) == 0
		for _, r := range a.Replicas {
			same = same && slices.Contains(sh.Replicas, r)
		}
		if !same || sh.Primary != a.Primary || (a.End != "" && (sh.End == "" || sh.End > a.End)) {
			n++
		}
	}
	return n
}
