package tests

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFaultUnavailability: 3 PCS + 4 data nodes under four workloads (system-KV puts,
// timestamps, ids, row writes over every shard); each iteration injects one fault — SIGKILL or
// a 3 s SIGSTOP of the PCS primary, or of the data node leading the most shards — and measures,
// per workload, the longest time without a success that spans the fault. The process is then
// restarted or continued and the cluster left to settle.
//
//	go test -run XXX -bench FaultUnavailability -benchtime 10x ./tests
func BenchmarkFaultUnavailability(b *testing.B) {
	for _, fault := range []string{"pcs-kill", "pcs-stop", "node-kill", "node-stop"} {
		b.Run(fault, func(b *testing.B) { benchFault(b, fault) })
	}
}

func benchFault(b *testing.B, fault string) {
	pc, c, nodes := rowCluster(b, 4, "--node-warmup", "300ms", "--node-lease", "1s")
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		kv   = &workload{name: "kv"}
		ts   = &workload{name: "tso"}
		ids  = &workload{name: "ids"}
		rows []*workload
	)
	kv.run(&wg, stop, func(ctx context.Context, i int) error {
		_, err := c.Put(ctx, []byte(fmt.Sprint("b/", i%10)), []byte("v"))
		return err
	})
	ts.run(&wg, stop, func(ctx context.Context, _ int) error { _, err := c.GetTS(ctx); return err })
	ids.run(&wg, stop, func(ctx context.Context, _ int) error { _, err := c.AllocIDs(ctx, "b", 1); return err })
	table := c.KV("t")
	for w := 0; w < 12; w++ { // 12 keys over the 6 shards: every shard is written
		r := &workload{name: fmt.Sprint("rows", w)}
		rows = append(rows, r)
		r.run(&wg, stop, func(ctx context.Context, i int) error { return table.Put(ctx, rowKey(w), []byte(fmt.Sprint(i))) })
	}
	defer func() { close(stop); wg.Wait() }()
	all := append([]*workload{kv, ts, ids}, rows...)
	steady := func() {
		// Every shard fully replicated again (the last fault's repairs done) ...
		waitFor(b, 120*time.Second, "every shard with 3 replicas and no learner", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.ScanShards(ctx, "t", nil, nil)
			if err != nil {
				return false
			}
			for _, sh := range s.Shards {
				if len(sh.Replicas) != 3 || len(sh.Learners) != 0 {
					return false
				}
			}
			return true
		})
		// ... and every workload succeeding.
		waitFor(b, 60*time.Second, "every workload succeeding", func() bool {
			for _, w := range all {
				if !w.okBetween(time.Now().Add(-300*time.Millisecond), time.Now()) {
					return false
				}
			}
			return true
		})
	}
	gaps := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steady()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var signal func(syscall.Signal)
		var restart func()
		if fault == "pcs-kill" || fault == "pcs-stop" {
			p := pc.primary(c)
			signal = func(s syscall.Signal) { p.cmd.Process.Signal(s) }
			restart = func() { <-p.exited; p.start() }
		} else {
			_, np := mostLeading(b, ctx, c, "t", nodes)
			signal = func(s syscall.Signal) { np.cmd.Process.Signal(s) }
			restart = func() { <-np.exited; np.start() }
		}
		cancel()
		at := time.Now()
		switch fault {
		case "pcs-kill", "node-kill":
			signal(syscall.SIGKILL)
		default:
			signal(syscall.SIGSTOP)
		}
		var missing string
		deadline := time.Now().Add(60 * time.Second)
		for {
			missing = ""
			for _, w := range all {
				if !w.okBetween(at, time.Now()) {
					missing += " " + w.name
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				for _, n := range nodes {
					b.Logf("---- data node %s ----\n%s", n.addr, n.logTail(4000))
				}
				shards, _ := c.ScanShards(context.Background(), "t", nil, nil)
				b.Logf("shards: %v", shards)
				b.Fatalf("round %d: no success within 60 s after the fault for:%s", i, missing)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if fault == "pcs-stop" || fault == "node-stop" {
			if d := time.Until(at.Add(3 * time.Second)); d > 0 {
				time.Sleep(d) // the fault: the rest of the 3 s pause
			}
			signal(syscall.SIGCONT)
		} else {
			restart()
		}
		for _, w := range []*workload{kv, ts, ids} {
			gaps[w.name] = append(gaps[w.name], w.gapAround(at, at.Add(time.Millisecond)))
		}
		var worst time.Duration
		worstName := ""
		for _, r := range rows {
			if g := r.gapAround(at, at.Add(time.Millisecond)); g > worst {
				worst, worstName = g, r.name
			}
		}
		b.Logf("round %d: rows gap %v (%s) at %s", i, worst.Round(time.Millisecond), worstName, at.UTC().Format("15:04:05.000"))
		if os.Getenv("PCS_BENCH_DEBUG") != "" && worst > 3*time.Second {
			for _, n := range nodes {
				b.Logf("---- data node %s ----\n%s", n.addr, n.logTail(6000))
			}
			for _, p := range pc.procs {
				b.Logf("---- %s ----\n%s", p.name, p.logTail())
			}
			b.FailNow()
		}
		gaps["rows"] = append(gaps["rows"], worst)
	}
	b.StopTimer()
	for _, name := range []string{"kv", "tso", "ids", "rows"} {
		reportPercentiles(b, name, gaps[name])
	}
}
