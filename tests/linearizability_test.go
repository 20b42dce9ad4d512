package tests

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
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
	key := func(i int) []byte {
		b, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(i))})
		return b
	}
	const keys = 6
	kv := c.KV("lin")
	origin := time.Now()
	now := func() int64 { return time.Since(origin).Nanoseconds() }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		unknown []porcupine.Operation // puts whose outcome is unknown: pending forever
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		puts    int
	)
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		if op.Input.(kvInput).put {
			puts++
		}
		mu.Unlock()
	}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w + seq) % keys
				opctx, opcancel := context.WithTimeout(ctx, 10*time.Second)
				if w%2 == 0 {
					v := fmt.Sprintf("w%d-%d", w, seq)
					call := now()
					err := kv.Put(opctx, key(k), []byte(v))
					ret := now()
					op := porcupine.Operation{ClientId: w, Input: kvInput{put: true, key: k, value: v}, Call: call, Return: ret}
					if err != nil {
						op.Return = math.MaxInt64 // may or may not have happened
						mu.Lock()
						unknown = append(unknown, op)
						mu.Unlock()
					} else {
						record(op)
					}
				} else {
					call := now()
					v, _, err := kv.Get(opctx, key(k))
					ret := now()
					if err == nil {
						record(porcupine.Operation{ClientId: w, Input: kvInput{key: k}, Output: string(v), Call: call, Return: ret})
					}
				}
				opcancel()
			}
		}(w)
	}
	progress := func() int { mu.Lock(); defer mu.Unlock(); return puts }
	waitFor(t, 30*time.Second, "writes before the kill", func() bool { return progress() >= 60 })
	// Kill the node leading the most shards.
	victimID, victim := mostLeading(t, ctx, c, "lin", nodes)
	victim.kill()
	killed := time.Now()
	before := progress()
	waitFor(t, 60*time.Second, "writes after the kill", func() bool { return progress() >= before+60 })
	t.Logf("killed data node %d, the one leading the most shards; 60 more writes acknowledged within %v", victimID, time.Since(killed).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	// Final reads of every key.
	for k := 0; k < keys; k++ {
		call := now()
		v, _, err := kv.Get(ctx, key(k))
		if err != nil {
			t.Fatalf("final read of key %d: %v", k, err)
		}
		record(porcupine.Operation{ClientId: 99, Input: kvInput{key: k}, Output: string(v), Call: call, Return: now()})
	}
	all := append(history, unknown...)
	res := porcupine.CheckOperationsTimeout(kvModel, all, time.Minute)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations (%d of unknown outcome) is not linearizable: %v", len(all), len(unknown), res)
	}
	t.Logf("%d operations, %d puts of unknown outcome: linearizable", len(all), len(unknown))
}
