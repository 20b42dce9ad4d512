package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// partitionJobDone reports whether table has no partition job, as the primary says.
func partitionJobDone(ctx context.Context, c *client.Client, table string) bool {
	tr, err := c.GetTable(ctx, table)
	return err == nil && tr.Table.PartitionJob == nil
}

// goneFromNodes reports whether no data node serves shard sh any more (each says it has no
// replica of it).
func goneFromNodes(ctx context.Context, t *testing.T, nodes []*nodeProc, sh *pcspb.Shard) bool {
	for _, n := range nodes {
		cc, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = pcspb.NewKVClient(cc).Get(actx, &pcspb.KVGetRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: sh.Start})
		cancel()
		cc.Close()
		if !errors.Is(client.MapKVError(err), client.ErrShardNotFound) {
			return false
		}
	}
	return true
}

// TestPartitionsUnderWrites: real pcs (three members) and pcsnode processes. While clients write
// rows into a RANGE table, pcsctl adds a partition, drops one (with a data node down, which
// returns afterwards) and truncates one; the PCS primary is killed right after each change is
// accepted. Every acknowledged row of the surviving partitions reads back; the dropped
// partition's rows have no partition and its shards are gone from every node, also the one
// that was down; the truncated partition is empty and takes new rows.
func TestPartitionsUnderWrites(t *testing.T) {
	pc := startCluster(t, 3, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	pc.waitVersion(c)
	nodes := startNodeProcs(t, pc, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "four data nodes up", func() bool { return upNodes(ctx, c) == len(nodes) })
	pcsctl := pcsctlFor(t, pc)
	createRangeTable(ctx, t, c, pcsctl, "events", "1000", "2000", "3000")
	kv := c.KV("events")
	killPrimary := func() {
		t.Helper()
		p := pc.primary(c)
		p.kill()
		p.start()
	}
	// p0 takes rows 0, -1, -2, ... for the whole test; p1 and p2 take 1000 rows each first.
	w0 := startWriters(ctx, kv, 4, func(i int) []byte { return int64Key(-i) })
	fill := func(base int) *writers {
		w := startWriters(ctx, kv, 4, func(i int) []byte { return int64Key(base + i%1000) })
		waitFor(t, 60*time.Second, fmt.Sprintf("rows of partition at %d", base), func() bool { w.check(t); return w.count.Load() >= 300 })
		w.stop.Store(true)
		w.wg.Wait()
		w.check(t)
		return w
	}
	w1, w2 := fill(1000), fill(2000)
	// A reader reads back p0's acknowledged rows throughout.
	readerDone := make(chan error, 1)
	stopReader := make(chan struct{})
	go func() {
		reads := 0
		for {
			select {
			case <-stopReader:
				if reads == 0 {
					readerDone <- errors.New("the reader read nothing")
				}
				readerDone <- nil
				return
			default:
			}
			w0.mu.Lock()
			i, ok := -1, false
			for k := range w0.acked {
				i, ok = k, true
				break
			}
			w0.mu.Unlock()
			if !ok {
				continue
			}
			v, found, err := kv.Get(ctx, int64Key(-i))
			if err != nil || !found || string(v) != fmt.Sprint(i) {
				readerDone <- fmt.Errorf("acknowledged row %d read back as %q, found %v: %v", -i, v, found, err)
				return
			}
			reads++
		}
	}()

	// ADD p3, then a PCS primary kill: the job finishes under the next primary, and p3 takes rows.
	if _, _, err := kv.Get(ctx, int64Key(3500)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a row past the last bound before ADD: %v", err)
	}
	pcsctl("table", "alter", "events", "add-partition", "p3", "--less-than", "1000000000")
	killPrimary()
	waitFor(t, 60*time.Second, "add-partition job done", func() bool { return partitionJobDone(ctx, c, "events") })
	w3 := startWriters(ctx, kv, 2, func(i int) []byte { return int64Key(3000 + i) })

	// DROP p1 with a data node down, then a PCS primary kill; the node returns afterwards.
	shardsOf := func(lo, hi int) []*pcspb.Shard {
		t.Helper()
		var out []*pcspb.Shard
		for _, k := range []int{lo, hi} {
			r, err := c.GetShard(ctx, "events", int64Key(k))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r.Shard)
		}
		return out
	}
	p1 := shardsOf(1000, 1999)
	nodes[3].kill()
	waitFor(t, 30*time.Second, "node down", func() bool {
		// Node states are the PCS primary's (a follower says "unknown").
		resp, err := c.ListNodes(ctx, client.WithEndpoint(pc.primary(c).client))
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == 3
	})
	pcsctl("table", "alter", "events", "drop-partition", "p1")
	killPrimary()
	waitFor(t, 60*time.Second, "drop-partition job done", func() bool { return partitionJobDone(ctx, c, "events") })
	nodes[3].start()
	waitFor(t, 60*time.Second, "the dropped partition's shards gone from every node", func() bool {
		return goneFromNodes(ctx, t, nodes, p1[0]) && goneFromNodes(ctx, t, nodes, p1[1])
	})
	if _, _, err := kv.Get(ctx, int64Key(1500)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a row of the dropped partition: %v", err)
	}

	// TRUNCATE p2, then a PCS primary kill: its rows are gone, it takes new ones.
	p2 := shardsOf(2000, 2999)
	pcsctl("table", "alter", "events", "truncate-partition", "p2")
	killPrimary()
	waitFor(t, 60*time.Second, "truncate-partition job done", func() bool { return partitionJobDone(ctx, c, "events") })
	waitFor(t, 60*time.Second, "the truncated shards gone from every node", func() bool {
		return goneFromNodes(ctx, t, nodes, p2[0]) && goneFromNodes(ctx, t, nodes, p2[1])
	})
	for i := range w2.acked {
		if _, found, err := kv.Get(ctx, int64Key(2000+i%1000)); err != nil || found {
			t.Fatalf("row %d of the truncated partition: found %v, %v", 2000+i%1000, found, err)
		}
	}
	if err := kv.Put(ctx, int64Key(2500), []byte("new")); err != nil {
		t.Fatal(err)
	}
	if v, _, err := kv.Get(ctx, int64Key(2500)); err != nil || string(v) != "new" {
		t.Fatalf("a new row of the truncated partition: %q %v", v, err)
	}
	_ = w1

	close(stopReader)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	n0, n3 := w0.stopAndVerify(ctx, t), w3.stopAndVerify(ctx, t)
	t.Logf("%d rows of p0 and %d of the added p3 read back after add, drop and truncate with three PCS primary kills", n0, n3)
	if out := pcsctl("job", "list"); strings.Contains(out, "partition") {
		t.Fatalf("jobs left: %s", out)
	}
}

// TestSetReplicasUnderWrites: real processes; while clients write, pcsctl sets a table's replica
// count from 3 to 5 and back to 3. The scheduler adds and removes replicas through its
// operators; every shard ends at the count on distinct nodes, and every acknowledged row reads
// back.
func TestSetReplicasUnderWrites(t *testing.T) {
	sc := startSchedCluster(t, 5, 4*time.Minute)
	sc.pc.waitVersion(sc.c)
	sc.createTable("sr", "--hash-partitions", "4", "--replicas", "3")
	w := startWriters(sc.ctx, sc.c.KV("sr"), 4, int64Key)
	at := func(n int) func() bool {
		return func() bool {
			w.check(t)
			resp, err := sc.c.ScanShards(sc.ctx, "sr", nil, nil)
			if err != nil || len(resp.Shards) == 0 {
				return false
			}
			for _, sh := range resp.Shards {
				distinct := map[uint64]bool{}
				for _, r := range sh.Replicas {
					distinct[r] = true
				}
				if len(sh.Replicas) != n || len(distinct) != n || len(sh.Learners) != 0 {
					return false
				}
			}
			return true
		}
	}
	for _, n := range []int{5, 3} {
		if code, out := sc.pcsctl("table", "alter", "sr", "set-replicas", fmt.Sprint(n)); code != 0 {
			t.Fatalf("set-replicas %d: %s", n, out)
		}
		waitFor(t, 90*time.Second, fmt.Sprintf("every shard at %d replicas", n), at(n))
		if code, out := sc.pcsctl("job", "list"); code != 0 || strings.Contains(out, "replicas") {
			t.Fatalf("job list after set-replicas %d: %s", n, out)
		}
	}
	if code, out := sc.pcsctl("table", "alter", "sr", "set-replicas", "1"); code != 1 || !strings.Contains(out, "min-in-sync") && !strings.Contains(out, "acknowledges") {
		t.Fatalf("set-replicas below min-in-sync: exit %d %s", code, out)
	}
	t.Logf("%d acknowledged rows read back after 3 → 5 → 3 replicas", w.stopAndVerify(sc.ctx, t))
}

// intervalCluster is a PCS member, three data nodes and an int64 interval table of width
// 1000 (created without ranges: its first partition holds every id below 1000).
func intervalCluster(t testing.TB, name string) (*client.Client, *client.TableKV, context.Context) {
	sc := startSchedCluster(t, 3, 4*time.Minute)
	sc.pc.waitVersion(sc.c)
	if code, out := sc.pcsctl("table", "create", name, "--columns", "id:int64", "--range-column", "id", "--interval", "1000", "--replicas", "3"); code != 0 {
		t.Fatalf("table create: %s", out)
	}
	waitFor(t, 30*time.Second, "table public", func() bool {
		tr, err := sc.c.GetTable(sc.ctx, name)
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	return sc.c, sc.c.KV(name), sc.ctx
}

// TestIntervalOnDemandUnderWrites: real processes; 50 clients write at once into an interval no
// partition has: one partition is made, every write is acknowledged and reads back once.
func TestIntervalOnDemandUnderWrites(t *testing.T) {
	c, kv, ctx := intervalCluster(t, "iv")
	start := make(chan struct{})
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			<-start
			errs <- kv.Put(ctx, int64Key(1000+i), []byte(fmt.Sprint(i)))
		}()
	}
	close(start)
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	tr, err := c.GetTable(ctx, "iv")
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, r := range tr.Table.Partition.Ranges {
		if !r.Dropped {
			live = append(live, r.Name)
		}
	}
	if len(live) != 2 || live[1] != "p1000" {
		t.Fatalf("partitions after 50 writers crossed into [1000, 2000): %v", live)
	}
	for i := range 50 {
		if v, found, err := kv.Get(ctx, int64Key(1000+i)); err != nil || !found || string(v) != fmt.Sprint(i) {
			t.Fatalf("row %d: %q %v %v", 1000+i, v, found, err)
		}
	}
	if _, found, err := kv.Get(ctx, int64Key(5000)); err != nil || found {
		t.Fatalf("a row of an interval with no partition: found %v, %v", found, err)
	}
}

// BenchmarkIntervalFirstWrite: the time from the first write into an interval no partition has
// (nothing made ahead: an int64 interval) until it is acknowledged; one interval per op.
// go test ./tests -run XXX -bench IntervalFirstWrite -benchtime 100x
func BenchmarkIntervalFirstWrite(b *testing.B) {
	_, kv, ctx := intervalCluster(b, "ivb")
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := kv.Put(ctx, int64Key((i+1)*1000), []byte("v")); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	reportPercentiles(b, "first-write", took)
}

// pcsctlFor returns a runner of pcsctl against pc that fails the test on a non-zero exit.
func pcsctlFor(t testing.TB, pc *procCluster) func(args ...string) string {
	ep := "--endpoints=" + strings.Join(pc.endpoints(), ",")
	return func(args ...string) string {
		t.Helper()
		code, out := run(t, 60*time.Second, "pcsctl", append([]string{ep}, args...)...)
		if code != 0 {
			t.Fatalf("pcsctl %v: %s", args, out)
		}
		return out
	}
}

// createRangeTable creates, with pcsctl, a table keyed by id int64 with 3 replicas, RANGE
// partitioned into p0, p1, ... less than each bound (MAXVALUE allowed), and waits until it is
// public.
func createRangeTable(ctx context.Context, t testing.TB, c *client.Client, pcsctl func(...string) string, name string, bounds ...string) {
	t.Helper()
	spec := fmt.Sprintf("name: %s\nreplicas: 3\ncolumns: [{name: id, type: int64}]\npartition:\n  strategy: PARTITION_STRATEGY_RANGE\n  columns: [id]\n  ranges:\n", name)
	for i, b := range bounds {
		spec += fmt.Sprintf("    - {name: p%d, lessThan: [%q]}\n", i, b)
	}
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	pcsctl("table", "create", "-f", path)
	waitFor(t, 30*time.Second, name+" public", func() bool {
		tr, err := c.GetTable(ctx, name)
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
}
