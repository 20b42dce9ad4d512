package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// recorder keeps one workload's history: porcupine operations and the times of successes.
type recorder struct {
	t0 time.Time

	mu   sync.Mutex
	ops  []porcupine.Operation
	okAt []time.Duration // since t0, of every successful operation
	errs map[string]int  // error kinds of failed operations
}

func newRecorder(t0 time.Time) *recorder { return &recorder{t0: t0, errs: map[string]int{}} }

func (r *recorder) now() int64 { return int64(time.Since(r.t0)) }

func (r *recorder) add(op porcupine.Operation, ok bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if op.Input != nil {
		r.ops = append(r.ops, op)
	}
	if ok {
		r.okAt = append(r.okAt, time.Duration(op.Return))
	} else if err != nil {
		r.errs[errKind(err)]++
	}
}

func errKind(err error) string {
	for _, e := range []error{client.ErrOutcomeUnknown, client.ErrUnavailable, client.ErrNotPrimary, context.DeadlineExceeded,
		client.ErrVersionMismatch, client.ErrLeaseExpired, client.ErrStaleEpoch, client.ErrEpochNotMatch} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other"
}

// unknownReturn is the return time of an operation whose outcome is unknown: it may take
// effect at any point after its call.
const unknownReturn = math.MaxInt64

// definiteFailure reports whether a failed write certainly did not take effect.
func definiteFailure(err error) bool {
	return errors.Is(err, client.ErrVersionMismatch) || errors.Is(err, client.ErrInvalidArgument)
}

// pace waits d or until ctx ends; workloads are paced so that the checkers' histories stay
// small enough to check and the two cores stay with the cluster.
func pace(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// opTimeout bounds one client call: an operation that cannot finish within it is recorded as
// failed (a write: unknown outcome) and the worker goes on.
const opTimeout = 5 * time.Second

// ---- system KV registers with compare-and-swap ----

type regInput struct {
	key      int
	op       string // get, put, cas
	value    string // put, cas
	expected uint64 // cas
}

type regOutput struct {
	value   string
	version uint64
	ok      bool // cas: applied
	unknown bool
}

type regState struct {
	value   string
	version uint64
}

// registerModel: a register per key with a version that every write bumps; a compare-and-swap
// applies only at the expected version. An operation of unknown outcome may or may not have
// applied: a CAS's effect is then fixed by the state it is linearized in, a put's by porcupine
// linearizing it anywhere after its call (even after every read: never observed).
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(regState), input.(regInput), output.(regOutput)
		switch in.op {
		case "get":
			return out.value == s.value && out.version == s.version, s
		case "put":
			next := regState{value: in.value, version: s.version + 1}
			return out.unknown || out.version == next.version, next
		default: // cas
			match := s.version == in.expected
			if out.unknown {
				if match {
					return true, regState{value: in.value, version: s.version + 1}
				}
				return true, s
			}
			if out.ok != match {
				return false, s
			}
			if match {
				return true, regState{value: in.value, version: s.version + 1}
			}
			return true, s
		}
	},
	Equal: func(a, b any) bool { return a.(regState) == b.(regState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch {
		case in.op == "get":
			return fmt.Sprintf("get(r%d) -> %q v%d", in.key, out.value, out.version)
		case out.unknown:
			return fmt.Sprintf("%s(r%d, %q, exp %d) -> ?", in.op, in.key, in.value, in.expected)
		default:
			return fmt.Sprintf("%s(r%d, %q, exp %d) -> ok=%v v%d", in.op, in.key, in.value, in.expected, out.ok, out.version)
		}
	},
}

const regPrefix = "chaos/r/"

func regKey(k int) []byte { return []byte(fmt.Sprintf("%s%d", regPrefix, k)) }

// kvWorkload: workers read, put and compare-and-swap a few registers of the system KV. Every
// value written is unique, so the watch from revision 1 tells how often each write applied.
type kvWorkload struct {
	c       *client.Client
	keys    int
	workers int
	rec     *recorder

	mu       sync.Mutex
	acked    map[string]bool     // value -> acknowledged (false: outcome unknown)
	writes   map[string][]uint64 // value -> versions it was written at, from the watch
	watchRev uint64              // every write up to this revision is in writes
	watchErr error
}

func (w *kvWorkload) name() string       { return "kv" }
func (w *kvWorkload) history() *recorder { return w.rec }

func (w *kvWorkload) run(ctx context.Context, seed uint64) {
	var wg sync.WaitGroup
	for id := 0; id < w.workers; id++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(id)))
			seen := map[int]uint64{} // last version read per key
			for seq := 0; pace(ctx, 10*time.Millisecond); seq++ {
				k := rng.IntN(w.keys)
				in := regInput{key: k}
				switch r := rng.IntN(10); {
				case r < 4:
					in.op = "get"
				case r < 7:
					in.op, in.value = "put", fmt.Sprintf("w%d-%d", id, seq)
				default:
					in.op, in.value, in.expected = "cas", fmt.Sprintf("w%d-%d", id, seq), seen[k]
				}
				w.do(ctx, id, in, seen)
			}
		}(id)
	}
	wg.Wait()
}

func (w *kvWorkload) do(ctx context.Context, id int, in regInput, seen map[int]uint64) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	op := porcupine.Operation{ClientId: id, Input: in, Call: w.rec.now()}
	if in.op == "get" {
		resp, err := w.c.Get(octx, regKey(in.key))
		op.Return = w.rec.now()
		if err != nil {
			w.rec.add(porcupine.Operation{}, false, err) // a failed read has no effect
			return
		}
		out := regOutput{}
		if resp.Kv != nil {
			out.value, out.version = string(resp.Kv.Value), resp.Kv.Version
		}
		seen[in.key] = out.version
		op.Output = out
		w.rec.add(op, true, nil)
		return
	}
	var opts []client.OpOption
	if in.op == "cas" {
		opts = append(opts, client.WithExpectedVersion(in.expected))
	}
	w.mu.Lock()
	w.acked[in.value] = false
	w.mu.Unlock()
	resp, err := w.c.Put(octx, regKey(in.key), []byte(in.value), opts...)
	op.Return = w.rec.now()
	switch {
	case err == nil:
		op.Output = regOutput{ok: true, version: resp.Kv.GetVersion()}
		seen[in.key] = resp.Kv.GetVersion()
		w.mu.Lock()
		w.acked[in.value] = true
		w.mu.Unlock()
		w.rec.add(op, true, nil)
	case definiteFailure(err):
		w.mu.Lock()
		delete(w.acked, in.value)
		w.mu.Unlock()
		op.Output = regOutput{ok: false}
		w.rec.add(op, true, err) // a refused CAS is an answer: the service is up
	default:
		op.Output, op.Return = regOutput{unknown: true}, unknownReturn
		w.rec.add(op, false, err)
	}
}

// watch follows every write of the registers from revision 1 for the whole run (a watch opened
// only at the end would find the early revisions compacted away on a long run): each value's
// versions, one per time it applied. It runs until ctx ends.
func (w *kvWorkload) watch(ctx context.Context) {
	for resp := range w.c.Watch(ctx, []byte(regPrefix), 1) {
		w.mu.Lock()
		if resp.Err != nil {
			w.watchErr = resp.Err
			w.mu.Unlock()
			return
		}
		for _, ev := range resp.Events {
			if ev.Kv != nil && len(ev.Kv.Value) > 0 {
				w.writes[string(ev.Kv.Value)] = append(w.writes[string(ev.Kv.Value)], ev.Kv.Version)
			}
		}
		w.watchRev = max(w.watchRev, resp.Revision)
		w.mu.Unlock()
	}
}

// applied waits until the watch has seen revision upTo and returns what it saw.
func (w *kvWorkload) applied(ctx context.Context, upTo uint64) (map[string][]uint64, error) {
	for {
		w.mu.Lock()
		rev, err := w.watchRev, w.watchErr
		w.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("chaos: watch: %w", err)
		}
		if rev >= upTo {
			break
		}
		if !pace(ctx, 50*time.Millisecond) {
			return nil, fmt.Errorf("chaos: watch at revision %d never reached %d: %w", rev, upTo, ctx.Err())
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.writes), nil
}

// resolve settles the writes of unknown outcome from what the watch saw: one that never applied
// had no effect and leaves the history; one that applied once gets the version it made (its
// return time stays unknown). Without this, every unknown write stays open to the end of the
// history and the linearizability search grows with each.
func resolve(ops []porcupine.Operation, writes map[string][]uint64) []porcupine.Operation {
	out := ops[:0:0]
	for _, op := range ops {
		in, o := op.Input.(regInput), op.Output.(regOutput)
		if o.unknown && in.op != "get" {
			switch vs := writes[in.value]; len(vs) {
			case 0:
				continue
			case 1:
				op.Output = regOutput{ok: true, version: vs[0]}
			}
		}
		out = append(out, op)
	}
	return out
}

// ---- TSO ----

type tsoOp struct {
	call, ret int64
	ts        uint64
}

type tsoWorkload struct {
	c       *client.Client
	workers int
	rec     *recorder

	mu  sync.Mutex
	got []tsoOp
}

func (w *tsoWorkload) name() string       { return "tso" }
func (w *tsoWorkload) history() *recorder { return w.rec }

func (w *tsoWorkload) run(ctx context.Context, _ uint64) {
	var wg sync.WaitGroup
	for id := 0; id < w.workers; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pace(ctx, 5*time.Millisecond) {
				octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
				call := w.rec.now()
				ts, err := w.c.GetTS(octx)
				cancel()
				ret := w.rec.now()
				if err != nil {
					w.rec.add(porcupine.Operation{}, false, err)
					continue
				}
				w.mu.Lock()
				w.got = append(w.got, tsoOp{call: call, ret: ret, ts: ts})
				w.mu.Unlock()
				w.rec.add(porcupine.Operation{Return: ret}, true, nil)
			}
		}()
	}
	wg.Wait()
}

// checkTSO: no timestamp twice, and a timestamp asked for after another was returned is larger.
func checkTSO(ops []tsoOp) []string {
	var bad []string
	seen := make(map[uint64]bool, len(ops))
	for _, o := range ops {
		if seen[o.ts] {
			bad = append(bad, fmt.Sprintf("timestamp %d handed out twice", o.ts))
		}
		seen[o.ts] = true
	}
	byCall := append([]tsoOp(nil), ops...)
	sort.Slice(byCall, func(i, j int) bool { return byCall[i].call < byCall[j].call })
	byRet := append([]tsoOp(nil), ops...)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].ret < byRet[j].ret })
	var maxDone uint64 // largest timestamp among those returned before the current call
	j := 0
	for _, o := range byCall {
		for j < len(byRet) && byRet[j].ret < o.call {
			maxDone = max(maxDone, byRet[j].ts)
			j++
		}
		if o.ts <= maxDone {
			bad = append(bad, fmt.Sprintf("regression: timestamp %d asked for at %v, after %d was returned", o.ts, time.Duration(o.call), maxDone))
		}
	}
	return bad
}

// ---- ids ----

type idRange struct{ first, count uint64 }

type idWorkload struct {
	c   *client.Client
	rec *recorder

	mu  sync.Mutex
	got []idRange
}

func (w *idWorkload) name() string       { return "ids" }
func (w *idWorkload) history() *recorder { return w.rec }

func (w *idWorkload) run(ctx context.Context, _ uint64) {
	for pace(ctx, 10*time.Millisecond) {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		first, err := w.c.AllocIDs(octx, "chaos", 7)
		cancel()
		if err != nil {
			w.rec.add(porcupine.Operation{}, false, err)
			continue
		}
		w.mu.Lock()
		w.got = append(w.got, idRange{first, 7})
		w.mu.Unlock()
		w.rec.add(porcupine.Operation{Return: w.rec.now()}, true, nil)
	}
}

// checkIDs: no id handed out twice.
func checkIDs(got []idRange) []string {
	rs := append([]idRange(nil), got...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].first < rs[j].first })
	var bad []string
	for i := 1; i < len(rs); i++ {
		if rs[i].first < rs[i-1].first+rs[i-1].count {
			bad = append(bad, fmt.Sprintf("ids [%d,+%d) and [%d,+%d) overlap", rs[i-1].first, rs[i-1].count, rs[i].first, rs[i].count))
		}
	}
	return bad
}

// ---- rows on the data nodes ----

type rowInput struct {
	key   int
	put   bool
	value string
}

type rowOutput struct {
	value   string
	unknown bool
}

// rowModel: a register per row key.
var rowModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range h {
			by[op.Input.(rowInput).key] = append(by[op.Input.(rowInput).key], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(rowInput)
		if in.put {
			return true, in.value
		}
		return output.(rowOutput).value == state.(string), state
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in, out := input.(rowInput), output.(rowOutput)
		if in.put {
			return fmt.Sprintf("put(k%d, %q) unknown=%v", in.key, in.value, out.unknown)
		}
		return fmt.Sprintf("get(k%d) -> %q", in.key, out.value)
	},
}

// dropUnseen removes the row puts of unknown outcome whose value no read returned. For a
// register of unique values that is exact: such a put, if it applied, was overwritten before any
// read, so a linearization with it exists iff one without it does (put it at the end). Without
// this every unknown put stays open to the end of the history and the search grows with each.
func dropUnseen(ops []porcupine.Operation) []porcupine.Operation {
	read := map[string]bool{}
	for _, op := range ops {
		if in := op.Input.(rowInput); !in.put {
			read[op.Output.(rowOutput).value] = true
		}
	}
	out := ops[:0:0]
	for _, op := range ops {
		if in := op.Input.(rowInput); in.put && op.Output.(rowOutput).unknown && !read[in.value] {
			continue
		}
		out = append(out, op)
	}
	return out
}

const rowTable = "chaos"

func rowKey(k int) []byte {
	b, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(k))})
	return b
}

type rowWorkload struct {
	c       *client.Client
	keys    int
	workers int
	rec     *recorder
}

func (w *rowWorkload) name() string       { return "rows" }
func (w *rowWorkload) history() *recorder { return w.rec }

func (w *rowWorkload) run(ctx context.Context, seed uint64) {
	kv := w.c.KV(rowTable)
	var wg sync.WaitGroup
	for id := 0; id < w.workers; id++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1000+uint64(id)))
			for seq := 0; pace(ctx, 10*time.Millisecond); seq++ {
				in := rowInput{key: rng.IntN(w.keys), put: rng.IntN(2) == 0}
				octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
				op := porcupine.Operation{ClientId: id, Input: in, Call: w.rec.now()}
				if in.put {
					in.value = fmt.Sprintf("w%d-%d", id, seq)
					op.Input = in
					err := kv.Put(octx, rowKey(in.key), []byte(in.value))
					op.Return = w.rec.now()
					if err != nil {
						op.Output, op.Return = rowOutput{unknown: true}, unknownReturn
						w.rec.add(op, false, err)
					} else {
						op.Output = rowOutput{}
						w.rec.add(op, true, nil)
					}
				} else {
					v, _, err := kv.Get(octx, rowKey(in.key))
					op.Return = w.rec.now()
					if err != nil {
						w.rec.add(porcupine.Operation{}, false, err)
					} else {
						op.Output = rowOutput{value: string(v)}
						w.rec.add(op, true, nil)
					}
				}
				cancel()
			}
		}(id)
	}
	wg.Wait()
}

// ---- DDL under DML ----

// ddlWorkload creates a table, waits until it is public, writes and reads a row in it, alters
// it and drops it, over and over, while the other workloads run. A round that completes is a
// success; a row that does not read back, or more than two live schema versions, a violation.
type ddlWorkload struct {
	c   *client.Client
	rec *recorder

	mu     sync.Mutex
	bad    []string
	rounds int
}

func (w *ddlWorkload) name() string       { return "ddl" }
func (w *ddlWorkload) history() *recorder { return w.rec }

func (w *ddlWorkload) violation(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bad = append(w.bad, fmt.Sprintf(format, args...))
}

// ddlPartitions is the hash partition count of the DDL workload's tables.
const ddlPartitions = 2

func (w *ddlWorkload) run(ctx context.Context, _ uint64) {
	for i := 0; pace(ctx, 100*time.Millisecond); i++ {
		if err := w.round(ctx, fmt.Sprintf("ddl%d", i)); err != nil {
			w.rec.add(porcupine.Operation{}, false, err)
			continue
		}
		w.mu.Lock()
		w.rounds++
		w.mu.Unlock()
		w.rec.add(porcupine.Operation{Return: w.rec.now()}, true, nil)
	}
}

func (w *ddlWorkload) round(ctx context.Context, name string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err := w.c.CreateTable(rctx, &pcspb.Table{Name: name, Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: ddlPartitions}})
	if err != nil && !errors.Is(err, client.ErrAlreadyExists) {
		return fmt.Errorf("create %s: %w", name, err)
	}
	for {
		tr, err := w.c.GetTable(rctx, name)
		if err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC {
			break
		}
		if !pace(rctx, 50*time.Millisecond) {
			return fmt.Errorf("%s never public: %w", name, rctx.Err())
		}
	}
	kv := w.c.KV(name)
	want := []byte("row of " + name)
	if err := kv.Put(rctx, rowKey(1), want); err != nil {
		return fmt.Errorf("put in %s: %w", name, err)
	}
	got, found, err := kv.Get(rctx, rowKey(1))
	if err != nil {
		return fmt.Errorf("get in %s: %w", name, err)
	}
	if !found || string(got) != string(want) {
		w.violation("ddl: table %s: acknowledged row read back as %q (found %v)", name, got, found)
	}
	if _, err := w.c.AlterTable(rctx, name, [][]byte{[]byte("add column c1")}); err != nil && !errors.Is(err, client.ErrAlterInProgress) {
		return fmt.Errorf("alter %s: %w", name, err)
	}
	if tr, err := w.c.GetTable(rctx, name); err == nil && tr.Table.SchemaVersion > tr.Table.MinLiveVersion+1 {
		w.violation("ddl: table %s has versions %d..%d live (at most two may be)", name, tr.Table.MinLiveVersion, tr.Table.SchemaVersion)
	}
	if err := w.c.DropTable(rctx, name); err != nil && !errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	return nil
}

// ---- PCS membership changes under faults ----

// memberWorkload adds a fourth PCS member on a host of its own (a fresh data dir, --join), waits
// until it is a voter, removes it and stops it, over and over, while the faults run. A member
// change the group refuses (quorum at risk) or that times out under a partition is a failure,
// not a violation; the checks are those of every run (the other workloads' histories, the
// members converging) plus: the member is out of the configuration at the end.
type memberWorkload struct {
	cl  *Cluster
	p   *Proc
	rec *recorder

	rounds int
}

func (w *memberWorkload) name() string       { return "member" }
func (w *memberWorkload) history() *recorder { return w.rec }

func (w *memberWorkload) run(ctx context.Context, _ uint64) {
	for i := 0; pace(ctx, 200*time.Millisecond); i++ {
		if err := w.round(ctx, i); err != nil {
			w.rec.add(porcupine.Operation{}, false, err)
			continue
		}
		w.rounds++
		w.rec.add(porcupine.Operation{Return: w.rec.now()}, true, nil)
	}
	// Leave the group as it was: the joiner removed and stopped.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for w.remove(cctx) != nil && pace(cctx, 200*time.Millisecond) {
	}
	w.p.Kill()
}

// member returns the joiner's entry in the configuration, if any.
func (w *memberWorkload) member(ctx context.Context) (*pcspb.Member, error) {
	mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := w.cl.C.MemberList(mctx)
	if err != nil {
		return nil, err
	}
	for _, m := range resp.Members {
		if m.Name == w.p.Name {
			return m, nil
		}
	}
	return nil, nil
}

func (w *memberWorkload) remove(ctx context.Context) error {
	m, err := w.member(ctx)
	if err != nil || m == nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.cl.C.MemberRemove(rctx, w.p.Name, false); err != nil && !errors.Is(err, client.ErrNotFound) {
		return err
	}
	if m, err := w.member(ctx); err != nil || m != nil {
		return fmt.Errorf("%s still a member (%v)", w.p.Name, err)
	}
	return nil
}

func (w *memberWorkload) round(ctx context.Context, i int) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 40*time.Second)
	defer cancel()
	if err := w.remove(rctx); err != nil { // a failed round may have left it in
		return fmt.Errorf("removing the joiner left by an earlier round: %w", err)
	}
	w.p.Kill()
	w.p.args = w.cl.joinArgs(i)
	if err := w.p.Start(); err != nil {
		return err
	}
	for {
		m, err := w.member(rctx)
		if err == nil && m != nil && m.Voter {
			break
		}
		if !pace(rctx, 100*time.Millisecond) {
			return fmt.Errorf("%s never became a voter: %w", w.p.Name, rctx.Err())
		}
	}
	for {
		err := w.remove(rctx)
		if err == nil {
			break
		}
		if !pace(rctx, 100*time.Millisecond) {
			return fmt.Errorf("removing %s: %w", w.p.Name, err)
		}
	}
	w.p.Kill()
	return nil
}
