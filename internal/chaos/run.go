package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
)

// Config is one chaos run.
type Config struct {
	Schedule string        // a name of Schedules
	Faults   []string      // instead of Schedule: these faults in this order
	Duration time.Duration // the longest the faults go on (soak: how long); 0: the schedule's length
	Seed     uint64
	Bin      Binaries
	Out      string        // data dirs, logs, and histories on failure
	Hold     time.Duration // how long each fault lasts; default 4s
	Quiet    time.Duration // between faults; default 3s
	Log      io.Writer     // progress; nil: none
}

// window is one fault's time in the run.
type window struct {
	fault         string
	begin, healed time.Duration // since the workloads started
	err           error
}

// Report is a run's outcome.
type Report struct {
	Windows    []window
	Workloads  []string
	Ops        map[string]int
	Errors     map[string]map[string]int
	Violations []string // empty: the run passed
	Unknown    []string // checks that could not decide (porcupine timed out)
	// Unavail is the longest gap between successes of each workload during each window
	// (from its begin to the first success after its heal).
	Unavail map[string][]time.Duration // workload -> one per window, in order
	Elapsed time.Duration
}

// Passed reports whether every check passed and decided.
func (r *Report) Passed() bool { return len(r.Violations) == 0 && len(r.Unknown) == 0 }

type workload interface {
	name() string
	history() *recorder
	run(ctx context.Context, seed uint64)
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// Run builds the hosts, starts the cluster, runs the workloads through the faults and checks
// what they saw.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Hold <= 0 {
		cfg.Hold = 4 * time.Second
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 3 * time.Second
	}
	plan := cfg.Faults
	if len(plan) == 0 {
		var ok bool
		if plan, ok = Schedules[cfg.Schedule]; !ok {
			return nil, fmt.Errorf("chaos: no schedule %q (have %s)", cfg.Schedule, ScheduleNames())
		}
	}
	for _, f := range plan {
		if _, ok := faults[f]; !ok {
			return nil, fmt.Errorf("chaos: no fault %q (have %s)", f, strings.Join(FaultNames(), ", "))
		}
	}
	if len(plan) == 0 && cfg.Duration <= 0 {
		return nil, errors.New("chaos: a random schedule needs a duration")
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	cl, err := StartCluster(ctx, ClusterConfig{PCS: 3, Nodes: 3, Bin: cfg.Bin, Dir: cfg.Out})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := setup(ctx, cl, &cfg); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tails(cl))
	}

	t0 := time.Now()
	rec := func() *recorder { return newRecorder(t0) }
	kv := &kvWorkload{c: cl.C, keys: 5, workers: 4, rec: rec(), acked: map[string]bool{}, writes: map[string][]uint64{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go kv.watch(watchCtx)
	tso := &tsoWorkload{c: cl.C, workers: 2, rec: rec()}
	ids := &idWorkload{c: cl.C, rec: rec()}
	rows := &rowWorkload{c: cl.C, keys: 12, workers: 4, rec: rec()}
	ddl := &ddlWorkload{c: cl.C, rec: rec()}
	member := &memberWorkload{cl: cl, p: cl.Joiner, rec: rec()}
	loads := []workload{kv, tso, ids, rows, ddl, member}
	recs := map[string]*recorder{}
	for _, w := range loads {
		recs[w.name()] = w.history()
	}
	wctx, stopLoads := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range loads {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(wctx, cfg.Seed) }()
	}

	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6368616f73))
	var windows []window
	deadline := time.Now().Add(cfg.Duration)
	names := FaultNames()
	for i := 0; ctx.Err() == nil; i++ {
		if cfg.Duration > 0 && time.Now().After(deadline) {
			break
		}
		var name string
		if len(plan) == 0 {
			name = names[rng.IntN(len(names))]
		} else if i < len(plan) {
			name = plan[i]
		} else {
			break
		}
		if !pace(ctx, cfg.Quiet) {
			break
		}
		w := window{fault: name, begin: time.Since(t0)}
		cfg.logf("fault %d: %s", i+1, name)
		heal, err := faults[name].begin(ctx, cl, rng)
		if err == nil {
			pace(ctx, cfg.Hold)
		}
		if heal != nil {
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if herr := heal(hctx); herr != nil && err == nil {
				err = fmt.Errorf("healing: %w", herr)
			}
			cancel()
		}
		w.healed, w.err = time.Since(t0), err
		if err != nil {
			cfg.logf("fault %s: %v", name, err)
		}
		windows = append(windows, w)
		// The next fault waits for every workload to succeed again (at most 30 s).
		waitRecovered(ctx, recs, w.healed, 30*time.Second)
	}
	pace(ctx, cfg.Quiet)
	stopLoads()
	wg.Wait()
	cfg.logf("faults done; checking")

	rep := &Report{Windows: windows, Ops: map[string]int{}, Errors: map[string]map[string]int{}, Unavail: map[string][]time.Duration{}}
	for _, w := range loads {
		r := recs[w.name()]
		rep.Workloads = append(rep.Workloads, w.name())
		rep.Ops[w.name()] = len(r.okAt)
		rep.Errors[w.name()] = r.errs
		for _, win := range windows {
			rep.Unavail[w.name()] = append(rep.Unavail[w.name()], longestGap(r.okAt, win.begin, win.healed))
		}
	}
	for _, win := range windows {
		if win.err != nil {
			rep.Violations = append(rep.Violations, fmt.Sprintf("fault %s could not be run: %v", win.fault, win.err))
		}
	}
	check(ctx, cl, &cfg, rep, kv, tso, ids, rows, ddl)
	rep.Elapsed = time.Since(t0)
	if !rep.Passed() {
		os.WriteFile(filepath.Join(cfg.Out, "logs-tail.txt"), []byte(tails(cl)), 0o644)
	}
	return rep, nil
}

func tails(cl *Cluster) string {
	var b strings.Builder
	for _, p := range cl.all() {
		fmt.Fprintf(&b, "---- %s (%s) ----\n%s\n", p.Name, p.Host.IP, p.LogTail(30))
	}
	return b.String()
}

// setup waits for a primary, the cluster version that exactly-once writes need, three data
// nodes up, and creates the rows table.
func setup(ctx context.Context, cl *Cluster, cfg *Config) error {
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	until := func(what string, cond func() bool) error {
		for !cond() {
			if !pace(sctx, 50*time.Millisecond) {
				return fmt.Errorf("chaos: setup: waiting for %s: %w", what, sctx.Err())
			}
		}
		cfg.logf("setup: %s", what)
		return nil
	}
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(sctx, time.Second) }
	if err := until("the cluster version in force", func() bool {
		c, cancel := call()
		defer cancel()
		st, err := cl.C.Status(c, "", false)
		return err == nil && st.ClusterVersion == st.CommandVersion && st.ClusterVersion >= 2
	}); err != nil {
		return err
	}
	if err := until("three data nodes up", func() bool {
		c, cancel := call()
		defer cancel()
		resp, err := cl.C.ListNodes(c)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == len(cl.Nodes)
	}); err != nil {
		return err
	}
	if _, err := cl.C.CreateTable(sctx, &pcspb.Table{Name: rowTable, Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 6}}); err != nil {
		return fmt.Errorf("chaos: setup: creating table: %w", err)
	}
	return until("the rows table public", func() bool {
		c, cancel := call()
		defer cancel()
		tr, err := cl.C.GetTable(c, rowTable)
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
}

// waitRecovered waits until every workload has a success after t, or max passes.
func waitRecovered(ctx context.Context, recs map[string]*recorder, t, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	for time.Now().Before(deadline) {
		done := true
		for _, r := range recs {
			r.mu.Lock()
			n := len(r.okAt)
			last := time.Duration(0)
			if n > 0 {
				last = r.okAt[n-1]
			}
			r.mu.Unlock()
			if last <= t {
				done = false
			}
		}
		if done || !pace(ctx, 20*time.Millisecond) {
			return
		}
	}
}

// longestGap is the longest time without a success from begin until the first success after
// healed (the success before begin opens the first gap).
func longestGap(okAt []time.Duration, begin, healed time.Duration) time.Duration {
	ts := append([]time.Duration(nil), okAt...)
	slices.Sort(ts)
	i := sort.Search(len(ts), func(i int) bool { return ts[i] >= begin })
	prev := begin
	if i > 0 {
		prev = ts[i-1]
	}
	var gap time.Duration
	for ; i < len(ts); i++ {
		gap = max(gap, ts[i]-prev)
		prev = ts[i]
		if ts[i] > healed {
			return gap
		}
	}
	return max(gap, healed-prev) // never recovered within the run: at least until the heal
}

// check runs every checker and records violations.
func check(ctx context.Context, cl *Cluster, cfg *Config, rep *Report, kv *kvWorkload, tso *tsoWorkload, ids *idWorkload, rows *rowWorkload, ddl *ddlWorkload) {
	bad := func(format string, args ...any) {
		rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// Every member ends running at the same revision and digest.
	rev, err := converged(cctx, cl)
	if err != nil {
		bad("%v", err)
	}

	var writes map[string][]uint64 // nil: the watch could not be read
	// System KV writes applied at most once, acknowledged ones exactly once.
	if rev > 0 {
		var err error
		writes, err = kv.applied(cctx, rev)
		if err != nil {
			bad("kv: %v", err)
		} else {
			kv.mu.Lock()
			for v, acked := range kv.acked {
				switch n := len(writes[v]); {
				case n > 1:
					bad("kv: write %q applied %d times", v, n)
				case n == 0 && acked:
					bad("kv: acknowledged write %q lost", v)
				}
			}
			for v := range writes {
				if _, ok := kv.acked[v]; !ok {
					bad("kv: write %q applied but never sent (or refused)", v)
				}
			}
			kv.mu.Unlock()
		}
	}

	// Linearizability.
	for _, h := range []struct {
		name  string
		model porcupine.Model
		rec   *recorder
	}{{"kv", registerModel, kv.rec}, {"rows", rowModel, rows.rec}} {
		h.rec.mu.Lock()
		ops := append([]porcupine.Operation(nil), h.rec.ops...)
		h.rec.mu.Unlock()
		switch {
		case h.name == "kv" && writes != nil:
			ops = resolve(ops, writes)
		case h.name == "rows":
			ops = dropUnseen(ops)
		}
		res, info := porcupine.CheckOperationsVerbose(h.model, ops, time.Minute)
		switch res {
		case porcupine.Illegal:
			bad("%s: history of %d operations is not linearizable", h.name, len(ops))
			path := filepath.Join(cfg.Out, h.name+"-history.html")
			if err := porcupine.VisualizePath(h.model, info, path); err == nil {
				cfg.logf("%s: visualisation in %s", h.name, path)
			}
		case porcupine.Unknown:
			rep.Unknown = append(rep.Unknown, fmt.Sprintf("%s: linearizability check of %d operations timed out", h.name, len(ops)))
		}
	}

	tso.mu.Lock()
	for _, v := range checkTSO(tso.got) {
		bad("tso: %s", v)
	}
	tso.mu.Unlock()
	ids.mu.Lock()
	for _, v := range checkIDs(ids.got) {
		bad("ids: %s", v)
	}
	ids.mu.Unlock()

	if resp, err := cl.C.MemberList(cctx); err != nil {
		bad("members: %v", err)
	} else if len(resp.Members) != len(cl.PCS) {
		var names []string
		for _, m := range resp.Members {
			names = append(names, m.Name)
		}
		bad("members: the configuration is %v, not the %d original members (the joiner was not removed)", names, len(cl.PCS))
	}
	ddl.mu.Lock()
	for _, v := range ddl.bad {
		bad("%s", v)
	}
	ddl.mu.Unlock()
	for _, v := range checkCatalog(cctx, cl) {
		bad("catalog: %s", v)
	}
	for _, v := range checkOrphans(cctx, cl) {
		bad("replicas: %s", v)
	}
	if len(rep.Violations) > 0 {
		writeHistories(cfg.Out, kv.rec, rows.rec)
	}
}

// checkCoverage: shards sorted by start tile [start, end) without gap or overlap, and every
// primary is a replica.
func checkCoverage(shards []*pcspb.Shard, start, end []byte) []string {
	var bad []string
	s := append([]*pcspb.Shard(nil), shards...)
	sort.Slice(s, func(i, j int) bool { return bytes.Compare(s[i].Start, s[j].Start) < 0 })
	at := start
	for _, sh := range s {
		if !bytes.Equal(sh.Start, at) {
			bad = append(bad, fmt.Sprintf("shard %d starts at %x where the previous ends at %x (gap or overlap)", sh.Id, sh.Start, at))
		}
		if !slices.Contains(sh.Replicas, sh.Primary) {
			bad = append(bad, fmt.Sprintf("shard %d: primary %d is not among replicas %v", sh.Id, sh.Primary, sh.Replicas))
		}
		at = sh.End
	}
	if !bytes.Equal(at, end) {
		bad = append(bad, fmt.Sprintf("the %d shards end at %x, not at %x", len(s), at, end))
	}
	return bad
}

// checkCatalog: every public table has at most two live schema versions, and its shards tile
// its key space (one range per hash partition: [partition 0, partition n)).
func checkCatalog(ctx context.Context, cl *Cluster) []string {
	resp, err := cl.C.ListTables(ctx)
	if err != nil {
		return []string{fmt.Sprintf("listing tables: %v", err)}
	}
	var bad []string
	for _, t := range resp.Tables {
		if t.State != pcspb.TableState_TABLE_STATE_PUBLIC {
			continue
		}
		if t.SchemaVersion > t.MinLiveVersion+1 {
			bad = append(bad, fmt.Sprintf("table %s has versions %d..%d live", t.Name, t.MinLiveVersion, t.SchemaVersion))
		}
		n := uint32(ddlPartitions)
		if t.Name == rowTable {
			n = 6
		}
		shards, err := cl.C.ScanShards(ctx, t.Name, nil, nil)
		if err != nil {
			bad = append(bad, fmt.Sprintf("scanning %s: %v", t.Name, err))
			continue
		}
		for _, v := range checkCoverage(shards.Shards, binary.BigEndian.AppendUint32(nil, 0), binary.BigEndian.AppendUint32(nil, n)) {
			bad = append(bad, fmt.Sprintf("table %s: %s", t.Name, v))
		}
	}
	return bad
}

// checkOrphans waits (up to a minute: dropped tables' replicas are deleted in the background)
// until every data node holds exactly the replicas the catalog gives it, read from the node's
// own pcsnode_shard_replicas gauge.
func checkOrphans(ctx context.Context, cl *Cluster) []string {
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last []string
	for {
		last = last[:0]
		resp, err := cl.C.ListNodes(octx)
		if err != nil {
			last = append(last, fmt.Sprintf("listing nodes: %v", err))
		} else {
			want := map[string]uint64{}
			for _, n := range resp.Nodes {
				want[n.Node.GetAddress()] = n.Shards
			}
			for _, p := range cl.Nodes {
				held, err := gauge(octx, "http://"+p.HTTP+"/metrics", "pcsnode_shard_replicas")
				if err != nil {
					last = append(last, fmt.Sprintf("%s: %v", p.Name, err))
				} else if uint64(held) != want[p.Addr] {
					last = append(last, fmt.Sprintf("%s holds %v replicas, the catalog gives it %d", p.Name, held, want[p.Addr]))
				}
			}
		}
		if len(last) == 0 || !pace(octx, 200*time.Millisecond) {
			return last
		}
	}
}

// gauge reads one unlabelled metric from a Prometheus text page.
func gauge(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s at %s", name, url)
}

// converged waits until every PCS member runs at the same revision and digest, and returns it.
func converged(ctx context.Context, cl *Cluster) (uint64, error) {
	var last string
	for {
		var rev uint64
		var digest string
		ok := true
		for i, p := range cl.PCS {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cl.C.Status(sctx, p.Addr, true)
			cancel()
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: %v", p.Name, err)
				break
			}
			if i == 0 {
				rev, digest = st.Revision, st.Digest
			} else if st.Revision != rev || st.Digest != digest {
				ok, last = false, fmt.Sprintf("%s at revision %d digest %s, %s at %d %s", cl.PCS[0].Name, rev, digest, p.Name, st.Revision, st.Digest)
				break
			}
		}
		if ok {
			return rev, nil
		}
		if !pace(ctx, 100*time.Millisecond) {
			return 0, fmt.Errorf("members did not converge: %s", last)
		}
	}
}

func writeHistories(dir string, recs ...*recorder) {
	for i, r := range recs {
		r.mu.Lock()
		var b strings.Builder
		for _, op := range r.ops {
			fmt.Fprintf(&b, "%d\t%d\t%d\t%+v\t%+v\n", op.ClientId, op.Call, op.Return, op.Input, op.Output)
		}
		r.mu.Unlock()
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("history-%d.tsv", i)), []byte(b.String()), 0o644)
	}
}

// Print writes the report's table and its one-line verdict.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "fault\tcount\t")
	for _, wl := range r.Workloads {
		fmt.Fprintf(tw, "%s p50\t%s max\t", wl, wl)
	}
	fmt.Fprintln(tw)
	byFault := map[string][]int{}
	var order []string
	for i, win := range r.Windows {
		if _, ok := byFault[win.fault]; !ok {
			order = append(order, win.fault)
		}
		byFault[win.fault] = append(byFault[win.fault], i)
	}
	for _, f := range order {
		fmt.Fprintf(tw, "%s\t%d\t", f, len(byFault[f]))
		for _, wl := range r.Workloads {
			var ds []time.Duration
			for _, i := range byFault[f] {
				ds = append(ds, r.Unavail[wl][i])
			}
			slices.Sort(ds)
			fmt.Fprintf(tw, "%s\t%s\t", ms(ds[len(ds)/2]), ms(ds[len(ds)-1]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprint(w, "operations:")
	for _, wl := range r.Workloads {
		fmt.Fprintf(w, " %s %d", wl, r.Ops[wl])
	}
	fmt.Fprintln(w)
	for _, v := range r.Violations {
		fmt.Fprintln(w, "VIOLATION:", v)
	}
	for _, u := range r.Unknown {
		fmt.Fprintln(w, "UNDECIDED:", u)
	}
	verdict := "PASS"
	if !r.Passed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: %d faults in %v; %d violations, %d undecided (linearizability, applied twice, lost writes, TSO, ids, catalog, convergence)\n",
		verdict, len(r.Windows), r.Elapsed.Round(time.Second), len(r.Violations), len(r.Unknown))
}

func ms(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
