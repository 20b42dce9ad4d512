package kvnode

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

func int64Key(i int64) []byte {
	k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(i)})
	return k
}

// TestLargeBatchesKeepEveryReplica: 6 concurrent batches of 6 MiB each into one shard of 3
// replicas. Group commit caps an entry in bytes, so no Replicate message is larger than the
// replicas accept: every write is acknowledged, no replica is taken out, and every replica
// holds every row. A single write larger than an entry may carry is refused and changes
// nothing.
func TestLargeBatchesKeepEveryReplica(t *testing.T) {
	// What is tested is the size of the messages, not how fast 36 MiB reach three disks of a
	// loaded test machine: a replica slow to persist must not be taken for a refusing one.
	c, nodes := startCluster(t, 3, func(cfg *Config) { cfg.HTTPAddr, cfg.ReplicateTimeout = "127.0.0.1:0", time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	createTable(t, ctx, c, "big", 3, 1)
	resp, err := c.ScanShards(ctx, "big", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := resp.Shards[0]
	// One row through the client (which retries until the primary holds its first grant).
	if err := c.KV("big").Put(ctx, int64Key(-1), []byte("first")); err != nil {
		t.Fatal(err)
	}
	kv, err := c.NodeKV(ctx, sh.Primary)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, MaxValueSize)
	rand.Read(value)
	batch := func(first int64, n int) *pcspb.KVBatchRequest {
		req := &pcspb.KVBatchRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}}
		for i := range n {
			req.Puts = append(req.Puts, &pcspb.KVPair{Key: append(slices.Clone(sh.Start), int64Key(first+int64(i))...), Value: value})
		}
		return req
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for b := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A grant that lapsed on a loaded machine is renewed by the next heartbeat: try
			// again, as the client does on NotPrimary (a batch refused for it was not applied).
			for {
				_, errs[b] = kv.Batch(ctx, batch(int64(b*100), 6))
				if !errors.Is(client.MapKVError(errs[b]), client.ErrNotPrimary) || ctx.Err() != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for b, err := range errs {
		if err != nil {
			t.Errorf("batch %d: %v", b, err)
		}
	}
	_, err = kv.Batch(ctx, batch(1000, 9)) // 9 MiB in one write
	if !errors.Is(client.MapKVError(err), client.ErrInvalidArgument) {
		t.Fatalf("a 9 MiB write: %v, want invalid argument", err)
	}
	cur, err := c.GetShardByID(ctx, sh.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Shard.Replicas) != 3 {
		t.Fatalf("shard has replicas %v after large batches, want all 3", cur.Shard.Replicas)
	}
	checkReplicas(t, ctx, c, "big", nodes)
	for _, n := range nodes {
		if n.Agent.NodeID() == sh.Primary {
			if got := scrape(t, n.HTTPAddr())["pcsnode_replicas_removed_total"]; got != 0 {
				t.Fatalf("the primary removed %v replicas", got)
			}
		}
	}
}

// TestWritesNeedMinInSync: a shard of 3 replicas (min-in-sync 2). One replica is killed: the
// primary has it removed and writes go on with two copies. Then the last other replica stops
// answering the primary: PCS refuses to remove it, and writes fail with ErrNotEnoughReplicas —
// none is acknowledged with the primary's copy alone — until it answers again; then they
// resume, and every acknowledged write is on both replicas.
func TestWritesNeedMinInSync(t *testing.T) {
	var cutTo [3]atomic.Uint64 // per node: the node it cannot reach (0: none)
	c, nodes := startCluster(t, 3, cutPeers(&cutTo))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	createTable(t, ctx, c, "floor", 3, 1)
	kv := c.KV("floor")
	resp, err := c.ScanShards(ctx, "floor", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := resp.Shards[0]
	if sh.MinInSync != 2 {
		t.Fatalf("shard min-in-sync %d, want the default 2", sh.MinInSync)
	}
	var from int
	var others []int
	for i, n := range nodes {
		if n.Agent.NodeID() == sh.Primary {
			from = i
		} else {
			others = append(others, i)
		}
	}
	killed, stalled := nodes[others[0]], nodes[others[1]]
	killedID, stalledID := killed.Agent.NodeID(), stalled.Agent.NodeID()
	acked := map[int64]bool{}
	put := func(i int64, timeout time.Duration) error {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := kv.Put(pctx, int64Key(i), []byte("v"))
		if err == nil {
			acked[i] = true
		}
		return err
	}
	for i := range int64(20) {
		if err := put(i, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	killed.Close()
	waitFor(t, 30*time.Second, "the killed replica out of the configuration", func() bool {
		_ = put(100, 2*time.Second)
		cur, err := c.GetShardByID(ctx, sh.Id)
		return err == nil && !slices.Contains(cur.Shard.Replicas, killedID)
	})
	if err := put(101, 10*time.Second); err != nil {
		t.Fatalf("a write with two replicas left: %v", err)
	}
	cutTo[from].Store(stalledID)
	// No write is acknowledged while only the primary can persist it; the writes fail, and
	// (once the primary has given up on the replica) with ErrNotEnoughReplicas.
	waitFor(t, time.Minute, "a write refused with ErrNotEnoughReplicas", func() bool {
		err := put(200, 5*time.Second)
		if err == nil {
			t.Fatal("a write acknowledged with the primary's copy alone")
		}
		return errors.Is(err, client.ErrNotEnoughReplicas)
	})
	cur, err := c.GetShardByID(ctx, sh.Id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cur.Shard.Replicas, stalledID) || len(cur.Shard.Replicas) != 2 {
		t.Fatalf("replicas %v: the stalled replica was removed below min-in-sync", cur.Shard.Replicas)
	}
	cutTo[from].Store(0)
	if err := put(300, 10*time.Second); err != nil {
		t.Fatalf("a write once the replica answers again: %v", err)
	}
	for i := range acked {
		if v, found, err := kv.Get(ctx, int64Key(i)); err != nil || !found || string(v) != "v" {
			t.Fatalf("acknowledged row %d reads %q found=%v: %v", i, v, found, err)
		}
	}
	checkReplicas(t, ctx, c, "floor", []*Server{nodes[from], stalled})
}
