package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// replicaTable starts three PCS members and four data nodes with rowCluster's 3-replica table
// "t".
func replicaTable(t *testing.T) (*client.Client, []*nodeProc, context.Context) {
	_, c, nodes := rowCluster(t, 4, "--node-warmup", "300ms", "--node-lease", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c, nodes, ctx
}

// TestFollowerReadsLinearizable: real processes; readers read rows on any replica (follower
// reads) while writers write them; a replica that is not a primary is paused, then the node
// leading the most shards is killed. The whole history is linearizable (porcupine).
func TestFollowerReadsLinearizable(t *testing.T) {
	c, nodes, ctx := replicaTable(t)
	// A replica that is not the primary serves a follower read, and refuses a primary read.
	if err := c.KV("t").Put(ctx, rowKey(0), []byte("v0")); err != nil {
		t.Fatal(err)
	}
	sr, err := c.GetShard(ctx, "t", rowKey(0))
	if err != nil {
		t.Fatal(err)
	}
	sh := sr.Shard
	var backup uint64
	for _, r := range sh.Replicas {
		if r != sh.Primary {
			backup = r
		}
	}
	bkv, err := c.NodeKV(ctx, backup)
	if err != nil {
		t.Fatal(err)
	}
	req := &pcspb.KVGetRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: append(append([]byte(nil), sh.Start...), rowKey(0)...),
		Consistency: pcspb.ReadConsistency_READ_CONSISTENCY_FOLLOWER}
	if resp, err := bkv.Get(ctx, req); err != nil || string(resp.Value) != "v0" {
		t.Fatalf("follower read on replica node %d: %v %v", backup, resp, err)
	}
	req.Consistency = pcspb.ReadConsistency_READ_CONSISTENCY_PRIMARY
	if _, err := bkv.Get(ctx, req); !errors.Is(client.MapKVError(err), client.ErrNotPrimary) {
		t.Fatalf("primary read on replica node %d: %v", backup, err)
	}
	h := startRowHistory(ctx, c.KV("t"), 6, 8, client.WithFollowerRead())
	waitFor(t, 30*time.Second, "writes before the faults", func() bool { return h.puts() >= 60 })
	// Pause a node that leads no shard, if there is one (else the least leading), for 2 s.
	_, lead := mostLeading(t, ctx, c, "t", nodes)
	paused := nodes[0]
	if paused == lead {
		paused = nodes[1]
	}
	paused.cmd.Process.Signal(syscall.SIGSTOP)
	before := h.puts()
	waitFor(t, 30*time.Second, "writes while a replica is paused", func() bool { return h.puts() >= before+30 })
	paused.cmd.Process.Signal(syscall.SIGCONT)
	_, victim := mostLeading(t, ctx, c, "t", nodes)
	victim.kill()
	before = h.puts()
	waitFor(t, 60*time.Second, "writes after the kill", func() bool { return h.puts() >= before+60 })
	h.stopAndCheck(t, ctx)
}

// TestStaleReadsWithinBound: readers read rows on any replica with a staleness bound while
// writers write them, across a replica pause; no read returns a value that a later write had
// overwritten more than the bound before the read began, and each reports a staleness within
// the bound.
func TestStaleReadsWithinBound(t *testing.T) {
	c, nodes, ctx := replicaTable(t)
	kv := c.KV("t")
	const bound = 300 * time.Millisecond
	origin := time.Now()
	type put struct {
		v          string
		call, done time.Duration
	}
	var mu sync.Mutex
	puts := map[int][]put{} // by key
	type read struct {
		key   int
		v     string
		call  time.Duration
		stale time.Duration
	}
	var reads []read
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w + seq) % 4
				if w < 2 {
					v := fmt.Sprintf("w%d-%d", w, seq)
					call := time.Since(origin)
					if err := kv.Put(ctx, rowKey(k), []byte(v)); err != nil {
						continue // outcome unknown: never counted as overwriting anything
					}
					mu.Lock()
					puts[k] = append(puts[k], put{v, call, time.Since(origin)})
					mu.Unlock()
					continue
				}
				var stale time.Duration
				call := time.Since(origin)
				v, _, err := kv.Get(ctx, rowKey(k), client.WithStaleRead(bound), client.WithStaleness(&stale))
				if err == nil {
					mu.Lock()
					reads = append(reads, read{k, string(v), call, stale})
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(2 * time.Second) // a window of load, not a synchronisation
	_, lead := mostLeading(t, ctx, c, "t", nodes)
	paused := nodes[0]
	if paused == lead {
		paused = nodes[1]
	}
	paused.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(2 * time.Second)
	paused.cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if len(reads) < 100 {
		t.Fatalf("only %d stale reads", len(reads))
	}
	for _, r := range reads {
		if r.stale > bound {
			t.Fatalf("a read reported staleness %v over the bound %v", r.stale, bound)
		}
		// The put that wrote the value read, and whether another put definitely overwrote it
		// (began after it was acknowledged) and was acknowledged more than the bound before the
		// read began.
		var of *put
		for i := range puts[r.key] {
			if puts[r.key][i].v == r.v {
				of = &puts[r.key][i]
			}
		}
		for _, p := range puts[r.key] {
			newer := of == nil || p.call > of.done
			if r.v != "" && of == nil {
				continue // a put of unknown outcome
			}
			if newer && p.done < r.call-bound {
				t.Fatalf("read of key %d at %v returned %q, overwritten by %q acknowledged at %v (bound %v)", r.key, r.call, r.v, p.v, p.done, bound)
			}
		}
	}
	var worst time.Duration
	for _, r := range reads {
		worst = max(worst, r.stale)
	}
	t.Logf("%d stale reads within %v (largest reported staleness %v); %d puts", len(reads), bound, worst, func() int {
		n := 0
		for _, p := range puts {
			n += len(p)
		}
		return n
	}())
}

// BenchmarkReplicaReads: row reads of a 3-replica table by 16 clients for 3 s, served by the
// primary only, by any replica linearizably (follower) and by any replica within 1 s (stale).
// go test ./tests -run XXX -bench ReplicaReads -benchtime 1x
func BenchmarkReplicaReads(b *testing.B) {
	pc := startCluster(b, 1, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	nodes := startNodeProcs(b, pc, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(b, 20*time.Second, "data nodes up", func() bool { return upNodes(ctx, c) == len(nodes) })
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "rb", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 1}}); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "rb")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	kv := c.KV("rb")
	for k := range 100 {
		if err := kv.Put(ctx, rowKey(k), []byte("value")); err != nil {
			b.Fatal(err)
		}
	}
	for _, mode := range []struct {
		name string
		opts []client.OpOption
	}{{"primary", nil}, {"follower", []client.OpOption{client.WithFollowerRead()}}, {"stale", []client.OpOption{client.WithStaleRead(time.Second)}}} {
		b.Run(mode.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var mu sync.Mutex
				var lat []time.Duration
				stop := time.Now().Add(3 * time.Second)
				var wg sync.WaitGroup
				for g := range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var mine []time.Duration
						for j := 0; time.Now().Before(stop); j++ {
							start := time.Now()
							if _, _, err := kv.Get(ctx, rowKey((g*7+j)%100), mode.opts...); err != nil {
								b.Error(err)
								return
							}
							mine = append(mine, time.Since(start))
						}
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(len(lat))/3, "reads/s")
				reportPercentiles(b, "read", lat)
			}
		})
	}
}
