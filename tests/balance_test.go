package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// replicasPerNode counts, from the catalog, the replicas and learners each node holds.
func replicasPerNode(ctx context.Context, c *client.Client, table string) (map[uint64]int, error) {
	resp, err := c.ScanShards(ctx, table, nil, nil)
	if err != nil {
		return nil, err
	}
	out := map[uint64]int{}
	for _, sh := range resp.Shards {
		for _, r := range sh.Replicas {
			out[r]++
		}
		for _, l := range sh.Learners {
			out[l]++
		}
	}
	return out, nil
}

// TestScaleOutBalancesAndDrains: real processes — 3 pcs and 3 pcsnode with a 64-shard table
// under concurrent writes. Three nodes join: the scheduler spreads the replicas to within one
// shard per node with no manual step, and the PCS primary is killed half-way (the new one
// resumes the operators). Then one node is drained with pcsctl: it ends holding nothing. Every
// acknowledged write reads back.
func TestScaleOutBalancesAndDrains(t *testing.T) {
	pc := startCluster(t, 3, "--node-lease", "1s")
	c := pc.client()
	pc.primary(c)
	pc.waitVersion(c)
	startNodeProcs(t, pc, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "data nodes up", func() bool { return upNodes(ctx, c) == 3 })
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "b", Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 64}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "table public", func() bool {
		tr, err := c.GetTable(ctx, "b")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		rows    = &workload{name: "rows"}
		mu      sync.Mutex
		written = map[int]int{}
		base    []time.Duration // latency of acknowledged writes before the scale-out
		lat     []time.Duration // ... and while balancing
		timing  = &base
	)
	kv := c.KV("b")
	for w := 0; w < 2; w++ {
		rows.run(&wg, stop, func(ctx context.Context, i int) error {
			k := (i*2 + w) % 500
			t0 := time.Now()
			err := kv.Put(ctx, rowKey(k), []byte(fmt.Sprint(i)))
			if err == nil {
				mu.Lock()
				if i >= written[k] {
					written[k] = i
				}
				if timing != nil {
					*timing = append(*timing, time.Since(t0))
				}
				mu.Unlock()
			}
			return err
		})
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, 20*time.Second, "rows flowing", func() bool { return rows.okBetween(time.Now().Add(-time.Second), time.Now()) })
	waitFor(t, 20*time.Second, "a baseline of writes", func() bool { mu.Lock(); defer mu.Unlock(); return len(base) >= 2000 })

	start := time.Now()
	mu.Lock()
	timing = &lat
	mu.Unlock()
	startNodeProcs(t, pc, 3)
	waitFor(t, 30*time.Second, "six data nodes up", func() bool { return upNodes(ctx, c) == 6 })
	// Kill the PCS primary once the new nodes hold some replicas, while operators run.
	waitFor(t, time.Minute, "balancing under way", func() bool {
		per, err := replicasPerNode(ctx, c, "b")
		return err == nil && len(per) > 3
	})
	primary := pc.primary(c)
	primary.kill()
	t.Logf("killed the PCS primary %s %v after the new nodes joined", primary.name, time.Since(start).Round(time.Millisecond))
	balanced := func() bool {
		per, err := replicasPerNode(ctx, c, "b")
		if err != nil || len(per) != 6 {
			return false
		}
		lo, hi := 1<<30, 0
		for _, n := range per {
			lo, hi = min(lo, n), max(hi, n)
		}
		ops, err := c.ListOperators(ctx, 0, false)
		return err == nil && len(ops) == 0 && hi-lo <= 2 && hi <= 32+1 && lo >= 32-1
	}
	waitFor(t, 2*time.Minute, "replicas balanced within one shard per node", balanced)
	per, _ := replicasPerNode(ctx, c, "b")
	mu.Lock()
	timing = nil
	slices.Sort(lat)
	slices.Sort(base)
	p99, baseP99 := lat[len(lat)*99/100], base[len(base)*99/100]
	mu.Unlock()
	finished, err := c.ListOperators(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	moves := 0
	for _, op := range finished {
		for _, st := range op.Steps {
			if st.Kind == "add-learner" && op.State == "done" {
				moves++
			}
		}
	}
	t.Logf("balanced after %v: replicas per node %v; %d moves done (recent finished list of the new primary); write p99 during balancing %v over %d writes (before: %v over %d)",
		time.Since(start).Round(time.Millisecond), per, moves, p99.Round(time.Millisecond), len(lat), baseP99.Round(time.Millisecond), len(base))
	for _, kind := range []string{"under-replicated", "misplaced"} {
		code, out := run(t, 30*time.Second, "pcsctl", "--endpoints", strings.Join(pc.endpoints(), ","), "shard", "check", kind, "b", "-o", "json")
		if code != 0 || strings.TrimSpace(out) != "[]" {
			t.Fatalf("pcsctl shard check %s after balancing: exit %d\n%s", kind, code, out)
		}
	}

	// Drain one of the first nodes with pcsctl.
	resp, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := resp.Nodes[0].Node.Id
	code, out := run(t, 3*time.Minute, "pcsctl", "--endpoints", strings.Join(pc.endpoints(), ","), "--timeout", "3m", "node", "drain", fmt.Sprint(victim), "--wait", "150s")
	if code != 0 {
		t.Fatalf("pcsctl node drain: exit %d\n%s", code, out)
	}
	t.Logf("drain:\n%s", out)
	per, err = replicasPerNode(ctx, c, "b")
	if err != nil || per[victim] != 0 {
		t.Fatalf("after the drain node %d holds %d replicas (%v)", victim, per[victim], err)
	}
	if err := c.SetNodeState(ctx, victim, "tombstone"); err != nil {
		t.Fatalf("tombstone after drain: %v", err)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	mu.Lock()
	defer mu.Unlock()
	for k, i := range written {
		v, found, err := kv.Get(ctx, rowKey(k))
		if err != nil || !found || string(v) != fmt.Sprint(i) {
			t.Errorf("key %d: %q found=%v %v, want the last acknowledged %d", k, v, found, err, i)
		}
	}
	t.Logf("%d keys checked", len(written))
}
