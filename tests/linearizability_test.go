package tests

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

type kvInput struct {
	put   bool
	key   int
	value string
}

// kvModel is a register per key: a get returns the last put ("" before any).
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[int][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.put {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	Equal: func(a, b any) bool { return a == b },
}

// TestLinearizableAcrossDataNodeKill: 3 PCS + 4 pcsnode processes, a table with 3 replicas,
// concurrent writers and readers; the data node leading the most shards is SIGKILLed. Writes
// resume without any manual step, and the history of every key is linearizable (porcupine) —
// which also means every acknowledged write is seen by the reads after it.
func TestLinearizableAcrossDataNodeKill(t *testing.T) {
	pc := startCluster(t, 3, "--node-warmup", "300ms", "--node-lease", "1s")
	c := pc.client()
	pc.primary(c)
	nodes := startNodeProcs(t, pc, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "four data nodes up", func() bool {
		resp, err := c.ListNodes(ctx)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == 4
	})
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "lin", Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 4}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "lin")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	h := startRowHistory(ctx, c.KV("lin"), 6, 6)
	waitFor(t, 30*time.Second, "writes before the kill", func() bool { return h.puts() >= 60 })
	// Kill the node leading the most shards.
	victimID, victim := mostLeading(t, ctx, c, "lin", nodes)
	victim.kill()
	killed := time.Now()
	before := h.puts()
	waitFor(t, 60*time.Second, "writes after the kill", func() bool { return h.puts() >= before+60 })
	t.Logf("killed data node %d, the one leading the most shards; 60 more writes acknowledged within %v", victimID, time.Since(killed).Round(time.Millisecond))
	h.stopAndCheck(t, ctx)
}

// rowHistory runs clients that put and get rows of a few keys (even clients write, odd ones
// read) and records every operation for a linearizability check.
type rowHistory struct {
	kv       *client.TableKV
	keys     int
	readOpts []client.OpOption // how the readers read (default: from the primary)
	origin   time.Time
	stop     chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	history []porcupine.Operation
	unknown []porcupine.Operation // puts whose outcome is unknown: pending forever
	nputs   int
}

func startRowHistory(ctx context.Context, kv *client.TableKV, keys, clients int, readOpts ...client.OpOption) *rowHistory {
	h := &rowHistory{kv: kv, keys: keys, readOpts: readOpts, origin: time.Now(), stop: make(chan struct{})}
	for w := 0; w < clients; w++ {
		h.wg.Add(1)
		go func(w int) {
			defer h.wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-h.stop:
					return
				default:
				}
				opctx, opcancel := context.WithTimeout(ctx, 10*time.Second)
				h.op(opctx, w, seq)
				opcancel()
			}
		}(w)
	}
	return h
}

func (h *rowHistory) now() int64 { return time.Since(h.origin).Nanoseconds() }

// op is client w's seq-th operation.
func (h *rowHistory) op(ctx context.Context, w, seq int) {
	k := (w + seq) % h.keys
	if w%2 == 0 {
		v := fmt.Sprintf("w%d-%d", w, seq)
		call := h.now()
		err := h.kv.Put(ctx, rowKey(k), []byte(v))
		op := porcupine.Operation{ClientId: w, Input: kvInput{put: true, key: k, value: v}, Call: call, Return: h.now()}
		h.mu.Lock()
		defer h.mu.Unlock()
		if err != nil {
			op.Return = math.MaxInt64 // may or may not have happened
			h.unknown = append(h.unknown, op)
			return
		}
		h.history = append(h.history, op)
		h.nputs++
		return
	}
	call := h.now()
	v, _, err := h.kv.Get(ctx, rowKey(k), h.readOpts...)
	ret := h.now()
	if err == nil {
		h.mu.Lock()
		h.history = append(h.history, porcupine.Operation{ClientId: w, Input: kvInput{key: k}, Output: string(v), Call: call, Return: ret})
		h.mu.Unlock()
	}
}

// puts is the number of acknowledged puts so far.
func (h *rowHistory) puts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nputs
}

// stopAndCheck stops the clients, reads every key once more and checks the whole history.
func (h *rowHistory) stopAndCheck(t *testing.T, ctx context.Context) {
	t.Helper()
	close(h.stop)
	h.wg.Wait()
	for k := 0; k < h.keys; k++ {
		call := h.now()
		v, _, err := h.kv.Get(ctx, rowKey(k))
		if err != nil {
			t.Fatalf("final read of key %d: %v", k, err)
		}
		h.history = append(h.history, porcupine.Operation{ClientId: 99, Input: kvInput{key: k}, Output: string(v), Call: call, Return: h.now()})
	}
	all := append(h.history, h.unknown...)
	res, info := porcupine.CheckOperationsVerbose(kvModel, all, time.Minute)
	if res != porcupine.Ok {
		if f, err := os.CreateTemp("", "pcs-history-*.html"); err == nil {
			porcupine.Visualize(kvModel, info, f)
			f.Close()
			t.Logf("history visualised in %s", f.Name())
		}
		t.Fatalf("history of %d operations (%d of unknown outcome) is not linearizable: %v", len(all), len(h.unknown), res)
	}
	t.Logf("%d operations, %d puts of unknown outcome: linearizable", len(all), len(h.unknown))
}
