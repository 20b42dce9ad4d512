package tests

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestNoStaleReadAfterPauseInWarmup: the case of a primary lease that outlived a shard's
// primary role (Safety II). 3 PCS + 4 pcsnode, rows of a table with 3 replicas, 6 clients
// putting and getting 6 keys. Each round stops the PCS primary (SIGSTOP), and while the new
// one is in its warm-up SIGSTOPs the data node leading the most shards for 1.2 s to 2.6 s: its
// shards move to new primaries about when it wakes (also right after a heartbeat it sent on
// waking was answered), and it must never answer a get from its old state. The
// whole history of every key is checked for linearizability (porcupine). Rounds: 20, or
// $PCS_STALE_ROUNDS.
func TestNoStaleReadAfterPauseInWarmup(t *testing.T) {
	rounds := 20
	if s := os.Getenv("PCS_STALE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("PCS_STALE_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	pc, c, nodes := rowCluster(t, 4, "--node-warmup", "3s", "--node-lease", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	h := startRowHistory(ctx, c.KV("t"), 6, 6)
	waitFor(t, 30*time.Second, "rows flowing", func() bool { return h.puts() >= 30 })
	for r := 0; r < rounds; r++ {
		_, victim := mostLeading(t, ctx, c, "t", nodes)
		old := pc.primary(c)
		old.cmd.Process.Signal(syscall.SIGSTOP)
		pc.primary(c) // a new primary, in its warm-up
		// Somewhere in the warm-up: at once, or up to 1.5 s in.
		time.Sleep(time.Duration(r%4) * 500 * time.Millisecond) // the fault's timing, not synchronisation
		victim.cmd.Process.Signal(syscall.SIGSTOP)
		// The pause: 1.2 s to 2.6 s, around the time PCS takes to move the node's shards
		// (lease + margin + a DDL round), so that it wakes just before, during or after.
		time.Sleep(1200*time.Millisecond + time.Duration(r%15)*100*time.Millisecond)
		victim.cmd.Process.Signal(syscall.SIGCONT)
		old.cmd.Process.Signal(syscall.SIGCONT)
		before := h.puts()
		waitFor(t, 60*time.Second, "rows written after the round", func() bool { return h.puts() >= before+20 })
		waitFor(t, 60*time.Second, "every shard back to 3 replicas", func() bool {
			s, err := c.ScanShards(ctx, "t", nil, nil)
			if err != nil {
				return false
			}
			for _, sh := range s.Shards {
				if len(sh.Replicas) < 3 {
					return false
				}
			}
			return true
		})
	}
	h.stopAndCheck(t, ctx)
}
