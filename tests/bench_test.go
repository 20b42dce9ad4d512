package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// Process benchmarks: real binaries on loopback. They report percentiles as custom metrics
// (ms); ns/op is the mean per iteration and includes set-up.
//
//	go test -run XXX -bench . -benchtime 12x ./tests

func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[len(ds)/2]), name+"-p50-ms")
	b.ReportMetric(ms(ds[min(len(ds)-1, len(ds)*99/100)]), name+"-p99-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), name+"-max-ms")
}

// untilOK retries f until it succeeds and returns how long that took from start.
func untilOK(b *testing.B, start time.Time, f func(ctx context.Context) error) time.Duration {
	b.Helper()
	took, err := tryUntil(start, f)
	if err != nil {
		b.Fatal(err)
	}
	return took
}

// tryUntil calls f until it succeeds, for at most 30 s from start, and returns the time from
// start to the success. Safe to call from any goroutine.
func tryUntil(start time.Time, f func(ctx context.Context) error) (time.Duration, error) {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > 30*time.Second {
			return 0, fmt.Errorf("no success within 30s: %w", err)
		}
	}
}

// BenchmarkReadyAfterStart: a fresh 3-node group, from starting the processes to the first
// acknowledged write and the first timestamp.
func BenchmarkReadyAfterStart(b *testing.B) {
	var write, ts []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		pc := startCluster(b, 3)
		c, _ := client.New(pc.endpoints(), client.WithBackoff(time.Millisecond, 20*time.Millisecond))
		write = append(write, untilOK(b, start, func(ctx context.Context) error {
			_, err := c.Put(ctx, []byte("k"), []byte("v"))
			return err
		}))
		ts = append(ts, untilOK(b, start, func(ctx context.Context) error { _, err := c.GetTS(ctx); return err }))
		c.Close()
		for _, p := range pc.procs {
			p.kill()
		}
	}
	reportPercentiles(b, "first-write", write)
	reportPercentiles(b, "first-tso", ts)
}

// BenchmarkRestartReady: a single node restarted on existing data, until its first write.
func BenchmarkRestartReady(b *testing.B) {
	pc := startCluster(b, 1)
	c := pc.client()
	p := pc.procs[0]
	var ready []time.Duration
	for i := 0; i < b.N; i++ {
		untilOK(b, time.Now(), func(ctx context.Context) error { _, err := c.Put(ctx, []byte("k"), []byte("v")); return err })
		p.kill()
		start := time.Now()
		p.start()
		ready = append(ready, untilOK(b, start, func(ctx context.Context) error {
			_, err := c.Put(ctx, []byte("k"), []byte("v"))
			return err
		}))
	}
	reportPercentiles(b, "restart-write", ready)
}

// BenchmarkFailover: SIGKILL the primary of a 3-node group; time until the first successful
// write and the first timestamp through the client.
func BenchmarkFailover(b *testing.B) {
	pc := startCluster(b, 3)
	c := pc.client()
	var write, ts []time.Duration
	for i := 0; i < b.N; i++ {
		victim := pc.primary(c)
		// Warm: the client knows the primary and has a TSO stream to it.
		untilOK(b, time.Now(), func(ctx context.Context) error { _, err := c.Put(ctx, []byte("k"), []byte("v")); return err })
		untilOK(b, time.Now(), func(ctx context.Context) error { _, err := c.GetTS(ctx); return err })
		start := time.Now()
		victim.kill()
		done := make(chan time.Duration)
		tsErr := make(chan error, 1)
		go func() {
			took, err := tryUntil(start, func(ctx context.Context) error { _, err := c.GetTS(ctx); return err })
			tsErr <- err
			done <- took
		}()
		write = append(write, untilOK(b, start, func(ctx context.Context) error {
			_, err := c.Put(ctx, []byte(fmt.Sprint("k", i)), []byte("v"))
			return err
		}))
		if err := <-tsErr; err != nil {
			b.Fatal(err)
		}
		ts = append(ts, <-done)
		victim.start()
		pc.waitConverged(c, 30*time.Second)
	}
	reportPercentiles(b, "write", write)
	reportPercentiles(b, "tso", ts)
}

// BenchmarkGracefulTransfer: pcsctl member transfer, until the new primary takes a write.
func BenchmarkGracefulTransfer(b *testing.B) {
	pc := startCluster(b, 3)
	c := pc.client()
	pc.primary(c)
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		untilOK(b, time.Now(), func(ctx context.Context) error { _, err := c.Put(ctx, []byte("k"), []byte("v")); return err })
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.MemberTransfer(ctx, ""); err != nil {
			b.Fatal(err)
		}
		cancel()
		took = append(took, untilOK(b, start, func(ctx context.Context) error {
			_, err := c.Put(ctx, []byte("k"), []byte("v"))
			return err
		}))
	}
	reportPercentiles(b, "transfer", took)
}

// TestPcsbenchRuns: pcsbench's summary line is printed and counts operations.
func TestPcsbenchRuns(t *testing.T) {
	pc := startCluster(t, 3)
	pc.primary(pc.client())
	eps := strings.Join(pc.endpoints(), ",")
	for _, sub := range []string{"tso", "put"} {
		code, out := run(t, time.Minute, "pcsbench", sub, "--endpoints", eps, "--clients", "2", "--concurrency", "4", "--duration", "500ms")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if code != 0 || !strings.HasPrefix(last, sub+" ops/s=") || strings.Contains(last, "ops/s=0 ") || !strings.HasSuffix(last, "errors=0") {
			t.Fatalf("pcsbench %s: exit %d, summary %q\n%s", sub, code, last, out)
		}
	}
}

// BenchmarkDataNodeFailover: 3 PCS and 4 pcsnode processes with default timeouts, a table of
// 3 replicas over 8 shards. Each iteration SIGKILLs the node leading the most shards and times
// until a write to every shard with a replica on it succeeds again (a new primary for the
// shards it led, a smaller configuration for the others); then restarts it and waits until
// every shard is back to three replicas (untimed).
func BenchmarkDataNodeFailover(b *testing.B) {
	pc := startCluster(b, 3)
	c := pc.client()
	pc.primary(c)
	nodes := startNodeProcs(b, pc, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	waitFor(b, 30*time.Second, "four data nodes up", func() bool { return upNodes(ctx, c) == 4 })
	tbl := &pcspb.Table{Name: "fo", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 8}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 30*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "fo")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	// One row key per shard.
	keyOf := map[uint64][]byte{}
	for i := 0; len(keyOf) < 8 && i < 10_000; i++ {
		k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(i))})
		sh, err := c.Route(ctx, "fo", k)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := keyOf[sh.Id]; !ok {
			keyOf[sh.Id] = k
		}
	}
	kv := c.KV("fo")
	var last string // the last unhealthy state seen, for the failure message
	healthy := func() bool {
		resp, err := c.ScanShards(ctx, "fo", nil, nil)
		if up := upNodes(ctx, c); err != nil || up != 4 {
			last = fmt.Sprintf("%d nodes up, %v", up, err)
			return false
		}
		for _, sh := range resp.Shards {
			if len(sh.Replicas) != 3 || len(sh.Learners) != 0 {
				last = fmt.Sprintf("shard %d: replicas %v learners %v", sh.Id, sh.Replicas, sh.Learners)
				return false
			}
		}
		return true
	}
	byID := map[uint64]*nodeProc{}
	resp, err := c.ListNodes(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range resp.Nodes {
		for _, p := range nodes {
			if p.addr == n.Node.Address {
				byID[n.Node.Id] = p
			}
		}
	}
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		waitFor(b, 60*time.Second, "every shard back to three replicas", func() bool {
			if healthy() {
				return true
			}
			b.Log(last)
			return false
		})
		for _, k := range keyOf { // warm routes
			untilOK(b, time.Now(), func(ctx context.Context) error { return kv.Put(ctx, k, []byte("warm")) })
		}
		shards, err := c.ScanShards(ctx, "fo", nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		lead := map[uint64]int{}
		for _, sh := range shards.Shards {
			lead[sh.Primary]++
		}
		var victim uint64
		for id := range byID {
			if victim == 0 || lead[id] > lead[victim] {
				victim = id
			}
		}
		var affected [][]byte
		for _, sh := range shards.Shards {
			if slices.Contains(sh.Replicas, victim) {
				affected = append(affected, keyOf[sh.Id])
			}
		}
		start := time.Now()
		byID[victim].kill()
		type result struct {
			took time.Duration
			err  error
		}
		done := make(chan result, len(affected))
		for _, k := range affected {
			go func() {
				took, err := tryUntil(start, func(ctx context.Context) error { return kv.Put(ctx, k, []byte(fmt.Sprint(i))) })
				done <- result{took, err}
			}()
		}
		var worst time.Duration
		for range affected {
			r := <-done
			if r.err != nil {
				shards, _ := c.ScanShards(ctx, "fo", nil, nil)
				for _, n := range nodes {
					b.Logf("log of node %s:\n%s", n.addr, n.logTail(8000))
				}
				b.Fatalf("kill %d (node %d): a write did not succeed: %v; shards: %v", i, victim, r.err, shards.GetShards())
			}
			worst = max(worst, r.took)
		}
		took = append(took, worst)
		byID[victim].start()
	}
	b.StopTimer()
	reportPercentiles(b, "failover", took)
}

func upNodes(ctx context.Context, c *client.Client) int {
	resp, err := c.ListNodes(ctx)
	if err != nil {
		return 0
	}
	up := 0
	for _, n := range resp.Nodes {
		if n.State == "up" {
			up++
		}
	}
	return up
}
