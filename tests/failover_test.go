package tests

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postdb/pcs/client"
)

// TestKillPrimaryLosesNoAcknowledgedWrite: writers run while the primary is SIGKILLed again and
// again; a new primary takes writes; the killed node restarts and catches up; every
// acknowledged write is present and all nodes converge on one revision and digest.
func TestKillPrimaryLosesNoAcknowledgedWrite(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc.primary(c)

	var (
		mu      sync.Mutex
		acked   = map[string]string{}
		writes  atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errorsN atomic.Int64
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("acked/%d/%06d", w, i), fmt.Sprint(i)
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.Put(wctx, []byte(key), []byte(val))
				wcancel()
				if err != nil {
					errorsN.Add(1)
					continue // not acknowledged: may or may not exist
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
				writes.Add(1)
			}
		}(w)
	}

	const kills = 3
	for k := 0; k < kills; k++ {
		before := writes.Load()
		waitFor(t, 20*time.Second, "writes flowing", func() bool { return writes.Load() > before+50 })
		victim := pc.primary(c)
		victim.kill()
		at := writes.Load()
		killedAt := time.Now()
		waitFor(t, 20*time.Second, "writes after the kill", func() bool { return writes.Load() > at+20 })
		t.Logf("kill %d: %s down; writes resumed within %v", k+1, victim.name, time.Since(killedAt).Round(time.Millisecond))
		victim.start()
	}
	close(stop)
	wg.Wait()
	t.Logf("%d acknowledged writes, %d failed attempts", len(acked), errorsN.Load())

	rev, digest := pc.waitConverged(c, 60*time.Second)
	t.Logf("converged at revision %d digest %.12s", rev, digest)
	// Every acknowledged write, read linearizably and from each node's local state.
	for _, p := range pc.procs {
		got := map[string]string{}
		var after []byte
		for {
			resp, err := c.Range(ctx, []byte("acked/"), client.WithEndpoint(p.client), client.WithStale(), client.WithAfter(after), client.WithLimit(5000))
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range resp.Kvs {
				got[string(kv.Key)] = string(kv.Value)
			}
			if !resp.More {
				break
			}
			after = resp.Kvs[len(resp.Kvs)-1].Key
		}
		missing := 0
		for k, v := range acked {
			if got[k] != v {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("%s lacks %d of %d acknowledged writes", p.name, missing, len(acked))
		}
	}
}

// tsSample is one timestamp with the times it was asked for and received.
type tsSample struct {
	ts             uint64
	sent, received time.Duration
}

// TestTSOAndIDsAcrossFailovers: clients take timestamps and ids continuously while the primary
// is SIGKILLed five times. Every timestamp is greater than every timestamp received before it
// was requested; no timestamp and no id repeats.
func TestTSOAndIDsAcrossFailovers(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc.primary(c)
	origin := time.Now()

	var (
		mu      sync.Mutex
		samples []tsSample
		ids     []uint64
		count   atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Since(origin)
				tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
				ts, err := c.GetTS(tctx)
				tcancel()
				received := time.Since(origin)
				if err == nil {
					mu.Lock()
					samples = append(samples, tsSample{ts, sent, received})
					mu.Unlock()
					count.Add(1)
				}
				if w%4 == 0 {
					ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
					first, err := c.AllocIDs(ictx, "txn", 5)
					icancel()
					if err == nil {
						mu.Lock()
						for i := uint64(0); i < 5; i++ {
							ids = append(ids, first+i)
						}
						mu.Unlock()
					}
				}
			}
		}(w)
	}
	const kills = 5
	for k := 0; k < kills; k++ {
		before := count.Load()
		waitFor(t, 20*time.Second, "timestamps flowing", func() bool { return count.Load() > before+200 })
		victim := pc.primary(c)
		victim.kill()
		at := count.Load()
		waitFor(t, 20*time.Second, "timestamps after the kill", func() bool { return count.Load() > at+200 })
		victim.start()
	}
	close(stop)
	wg.Wait()
	checkTimestamps(t, samples)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Fatalf("id %d handed out twice", ids[i])
		}
	}
	t.Logf("%d timestamps and %d ids over %d kills", len(samples), len(ids), kills)
}

// checkTimestamps verifies uniqueness and real-time order: a timestamp received before another
// was requested is smaller than it.
func checkTimestamps(t *testing.T, samples []tsSample) {
	t.Helper()
	byTS := append([]tsSample(nil), samples...)
	sort.Slice(byTS, func(i, j int) bool { return byTS[i].ts < byTS[j].ts })
	for i := 1; i < len(byTS); i++ {
		if byTS[i].ts == byTS[i-1].ts {
			t.Fatalf("timestamp %d handed out twice", byTS[i].ts)
		}
	}
	byRecv := append([]tsSample(nil), samples...)
	sort.Slice(byRecv, func(i, j int) bool { return byRecv[i].received < byRecv[j].received })
	bySent := append([]tsSample(nil), samples...)
	sort.Slice(bySent, func(i, j int) bool { return bySent[i].sent < bySent[j].sent })
	var maxBefore uint64
	j := 0
	for _, s := range bySent {
		for j < len(byRecv) && byRecv[j].received < s.sent {
			maxBefore = max(maxBefore, byRecv[j].ts)
			j++
		}
		if s.ts <= maxBefore {
			t.Fatalf("timestamp %d requested at %v is not above %d, received before it was requested", s.ts, s.sent, maxBefore)
		}
	}
}
