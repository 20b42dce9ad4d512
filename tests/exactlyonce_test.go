package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// regInput is one operation on a versioned register (a system-KV key).
type regInput struct {
	op       string // get, put, cas, del
	key      int
	value    string
	expected uint64 // cas
}

// regOutput is what the operation returned; nil for an outcome that is unknown.
type regOutput struct {
	ok      bool // false: version mismatch (cas)
	value   string
	version uint64 // get
}

type regState struct {
	value   string
	version uint64 // 0: absent
}

// regModel is etcd's key model: a put bumps the version, a delete removes the key, a cas
// applies only at the expected version.
var regModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in := state.(regState), input.(regInput)
		out, known := output.(regOutput)
		switch in.op {
		case "get":
			return out.value == st.value && out.version == st.version, st
		case "put":
			return true, regState{in.value, st.version + 1}
		case "del":
			return true, regState{}
		case "cas":
			match := st.version == in.expected
			if !known {
				if match {
					return true, regState{in.value, st.version + 1}
				}
				return true, st
			}
			if out.ok != match {
				return false, st
			}
			if match {
				return true, regState{in.value, st.version + 1}
			}
			return true, st
		}
		return false, st
	},
	Equal: func(a, b any) bool { return a == b },
}

// TestExactlyOnceAcrossPrimaryFaults: clients put, compare-and-swap, delete and read a few
// system-KV keys while the PCS primary is SIGKILLed and SIGSTOPped (longer than the election
// timeout) in turn. Every key's history is linearizable, and the watch from revision 1 shows
// every acknowledged put or CAS applied exactly once, every refused one not at all, and none
// twice — although the clients retried writes whose first attempt was in flight at the fault.
func TestExactlyOnceAcrossPrimaryFaults(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	pc.primary(c)
	pc.waitVersion(c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const keys, workers = 4, 5
	origin := time.Now()
	now := func() int64 { return time.Since(origin).Nanoseconds() }
	var (
		mu       sync.Mutex
		history  []porcupine.Operation
		outcomes = map[string]string{} // value -> "ok", "refused", "unknown"
		writes   int
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	keyOf := func(k int) []byte { return []byte(fmt.Sprintf("reg/%d", k)) }
	for w := 0; w < workers; w++ {
		wcli, err := client.New(pc.endpoints())
		if err != nil {
			t.Fatal(err)
		}
		defer wcli.Close()
		wg.Add(1)
		go func(w int, c *client.Client) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w + i) % keys
				in := regInput{key: k, value: fmt.Sprintf("w%d-%d", w, i)}
				var out any
				call := now()
				opctx, opcancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				switch i % 4 {
				case 0, 1:
					in.op = "put"
					_, err = c.Put(opctx, keyOf(k), []byte(in.value))
					out = regOutput{ok: true}
				case 2:
					in.op = "get"
					var resp *pcspb.GetResponse
					resp, err = c.Get(opctx, keyOf(k))
					if err == nil {
						o := regOutput{ok: true}
						if resp.Kv != nil {
							o.value, o.version = string(resp.Kv.Value), resp.Kv.Version
						}
						out = o
						// The next operation is a CAS against what was read.
						in2 := regInput{op: "cas", key: k, value: fmt.Sprintf("w%d-%dc", w, i), expected: o.version}
						ret := now()
						mu.Lock()
						history = append(history, porcupine.Operation{ClientId: w, Input: in, Output: out, Call: call, Return: ret})
						mu.Unlock()
						in, call = in2, now()
						_, err = c.Put(opctx, keyOf(k), []byte(in.value), client.WithExpectedVersion(in.expected))
						out = regOutput{ok: err == nil}
						if errors.Is(err, client.ErrVersionMismatch) {
							err = nil
						}
					}
				case 3:
					in.op = "del"
					_, err = c.Delete(opctx, keyOf(k))
					out = regOutput{ok: true}
				}
				ret := now()
				opcancel()
				op := porcupine.Operation{ClientId: w, Input: in, Output: out, Call: call, Return: ret}
				mu.Lock()
				switch {
				case err == nil:
					history = append(history, op)
					if in.op == "put" || in.op == "cas" {
						writes++
						if out.(regOutput).ok {
							outcomes[in.value] = "ok"
						} else {
							outcomes[in.value] = "refused"
						}
					}
				case in.op == "get":
					// A failed read has no effect.
				case errors.Is(err, client.ErrOutcomeUnknown):
					op.Output, op.Return = nil, math.MaxInt64
					history = append(history, op)
					outcomes[in.value] = "unknown"
				default:
					// Any other error says the write was not applied; the checks below hold the
					// server to it (it appears in no event).
					op.Output, op.Return = nil, math.MaxInt64
					history = append(history, op)
					outcomes[in.value] = "refused: " + err.Error()
				}
				mu.Unlock()
			}
		}(w, wcli)
	}

	progress := func(n int) {
		mu.Lock()
		before := writes
		mu.Unlock()
		waitFor(t, 30*time.Second, "writes flowing", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return writes >= before+n
		})
	}
	for round := 0; round < 4; round++ {
		progress(100)
		victim := pc.primary(c)
		if round%2 == 0 {
			victim.kill()
			progress(50)
			victim.start()
		} else {
			victim.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(3 * time.Second) // the fault itself: a pause longer than the election timeout
			victim.cmd.Process.Signal(syscall.SIGCONT)
		}
		t.Logf("round %d: faulted %s", round, victim.name)
	}
	progress(100)
	close(stop)
	wg.Wait()
	rev, _ := pc.waitConverged(c, 60*time.Second)

	// Every applied put or CAS, from the watch.
	applied := map[string]int{}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	for resp := range c.Watch(wctx, []byte("reg/"), 1) {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, ev := range resp.Events {
			if ev.Kv.Version > 0 && len(ev.Kv.Value) > 0 {
				applied[string(ev.Kv.Value)]++
			}
		}
		if resp.Revision >= rev {
			break
		}
	}
	counts := map[string]int{}
	for v, o := range outcomes {
		n := applied[v]
		kind := o
		if len(kind) > 7 && kind[:7] == "refused" {
			kind = "refused"
		}
		counts[kind]++
		switch {
		case n > 1:
			t.Errorf("%s applied %d times (client saw %s)", v, n, o)
		case kind == "ok" && n != 1:
			t.Errorf("%s acknowledged but applied %d times", v, n)
		case kind == "refused" && n != 0:
			t.Errorf("%s refused (%s) but applied", v, o)
		}
	}
	for v, n := range applied {
		if _, ok := outcomes[v]; !ok {
			t.Errorf("%s applied %d times but never sent", v, n)
		}
	}
	t.Logf("%d writes: %v; %d operations in the history", len(outcomes), counts, len(history))
	res, info := porcupine.CheckOperationsVerbose(regModel, history, time.Minute)
	if res != porcupine.Ok {
		path := filepath.Join(t.TempDir(), "..", t.Name()+".html")
		if err := porcupine.VisualizePath(regModel, info, path); err == nil {
			t.Logf("visualization: %s", path)
		}
		t.Fatalf("history is not linearizable (%v)", res)
	}
}
