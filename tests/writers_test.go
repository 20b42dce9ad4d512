package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// int64Key is row i's key in a table keyed by one int64 column.
func int64Key(i int) []byte {
	k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(i))})
	return k
}

// writers put rows i -> "i" from several goroutines until stopped, each row written again
// after an outcome-unknown answer (the data node deduplicates a retried request), and remember
// every acknowledged row, how many, and the slowest put (retries included).
type writers struct {
	kv  *client.TableKV
	key func(int) []byte

	mu      sync.Mutex
	acked   map[int]bool
	count   atomic.Int64
	slowest atomic.Int64 // nanoseconds
	stop    atomic.Bool
	wg      sync.WaitGroup
	fail    atomic.Value
}

func startWriters(ctx context.Context, kv *client.TableKV, goroutines int, key func(int) []byte) *writers {
	w := &writers{kv: kv, key: key, acked: map[int]bool{}}
	for g := 0; g < goroutines; g++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := g; !w.stop.Load(); i += goroutines {
				start := time.Now()
				var err error
				for attempt := 0; attempt < 100 && ctx.Err() == nil; attempt++ {
					if err = kv.Put(ctx, key(i), []byte(fmt.Sprint(i))); err == nil {
						break
					}
				}
				if err != nil {
					w.fail.Store(err)
					return
				}
				if d := int64(time.Since(start)); d > w.slowest.Load() {
					w.slowest.Store(d)
				}
				w.mu.Lock()
				w.acked[i] = true
				w.mu.Unlock()
				w.count.Add(1)
			}
		}()
	}
	return w
}

// check fails the test if a writer gave up.
func (w *writers) check(t testing.TB) {
	t.Helper()
	if err := w.fail.Load(); err != nil {
		t.Fatal(err)
	}
}

// rate measures the acknowledged puts per second over d (a measurement window, not a
// synchronisation).
func (w *writers) rate(d time.Duration) float64 {
	before, at := w.count.Load(), time.Now()
	time.Sleep(d)
	return float64(w.count.Load()-before) / time.Since(at).Seconds()
}

// stopAndVerify stops the writers and reads every acknowledged row back; it returns how many.
func (w *writers) stopAndVerify(ctx context.Context, t testing.TB) int {
	t.Helper()
	w.stop.Store(true)
	w.wg.Wait()
	w.check(t)
	for i := range w.acked {
		v, found, err := w.kv.Get(ctx, w.key(i))
		if err != nil || !found || string(v) != fmt.Sprint(i) {
			t.Fatalf("acknowledged row %d: %q %v %v", i, v, found, err)
		}
	}
	return len(w.acked)
}

// schedCluster is a PCS member and data nodes, all up, as the scheduling tests start them: a
// client, a deadline for the whole test and pcsctl against the member.
type schedCluster struct {
	t     testing.TB
	pc    *procCluster
	c     *client.Client
	ctx   context.Context
	nodes []*nodeProc
	ep    string
}

func startSchedCluster(t testing.TB, nodes int, timeout time.Duration) *schedCluster {
	pc := startCluster(t, 1, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	sc := &schedCluster{t: t, pc: pc, c: c, nodes: startNodeProcs(t, pc, nodes), ep: "--endpoints=" + strings.Join(pc.endpoints(), ",")}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	sc.ctx = ctx
	waitFor(t, 20*time.Second, fmt.Sprintf("%d data nodes up", nodes), func() bool { return upNodes(ctx, c) == nodes })
	return sc
}

// pcsctl runs pcsctl against the cluster; its exit code and output.
func (sc *schedCluster) pcsctl(args ...string) (int, string) {
	return run(sc.t, 60*time.Second, "pcsctl", append([]string{sc.ep}, args...)...)
}

// set changes schedule settings (key, value, ...), failing the test on an error.
func (sc *schedCluster) set(kv ...string) {
	sc.t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if code, out := sc.pcsctl("config", "set", kv[i], kv[i+1]); code != 0 {
			sc.t.Fatalf("config set %s %s: %s", kv[i], kv[i+1], out)
		}
	}
}

// createTable creates a table keyed by one int64 column with pcsctl (extra flags after the
// columns) and waits until it is public.
func (sc *schedCluster) createTable(name string, flags ...string) {
	sc.t.Helper()
	args := append([]string{"table", "create", name, "--columns", "id:int64", "--hash-columns", "id"}, flags...)
	if code, out := sc.pcsctl(args...); code != 0 {
		sc.t.Fatalf("table create %s: %s", name, out)
	}
	waitFor(sc.t, 30*time.Second, name+" public", func() bool {
		tr, err := sc.c.GetTable(sc.ctx, name)
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
}

// doneSteps counts the steps of finished operators, as pcsctl lists them, that are done and
// match: the operator's kind and the step's kind (byLoad: only splits by load).
func (sc *schedCluster) doneSteps(opKind, stepKind string, byLoad bool) int {
	sc.t.Helper()
	code, out := sc.pcsctl("-o", "json", "operator", "list", "--finished")
	if code != 0 {
		sc.t.Fatalf("operator list: %s", out)
	}
	var ops []struct {
		Kind  string `json:"kind"`
		State string `json:"state"`
		Steps []struct {
			Kind   string `json:"kind"`
			ByLoad bool   `json:"by_load"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &ops); err != nil {
		sc.t.Fatalf("operator list output %q: %v", out, err)
	}
	n := 0
	for _, op := range ops {
		for _, st := range op.Steps {
			if op.Kind == opKind && op.State == "done" && st.Kind == stepKind && (!byLoad || st.ByLoad) {
				n++
			}
		}
	}
	return n
}
