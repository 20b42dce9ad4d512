package tests

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// TestWholeGroupRestartReadyAfterApply: real processes. After all three members are killed
// and started again at once, none says it is running (/ready) before it has applied every
// entry the group had committed: a new primary's first commit index is stale until it commits
// in its term, and members once took it as caught up, ready with their logs still to replay.
func TestWholeGroupRestartReadyAfterApply(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	pc.primary(c)
	val := bytes.Repeat([]byte("v"), 16<<10)
	for i := range 2000 { // 32 MiB of log to replay at start
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("k%04d", i)), val); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	pc.waitConverged(c, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := c.Status(ctx, pc.procs[0].client, false)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	committed := st.AppliedIndex // every member has applied this much, the last put among it
	for _, p := range pc.procs {
		p.kill()
	}
	for _, p := range pc.procs {
		p.start()
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pc.procs))
	for _, p := range pc.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := c.Status(ctx, p.client, false)
				cancel()
				if err == nil && pcspb.StateName(st.State) == "running" {
					if st.AppliedIndex < committed {
						errs <- fmt.Errorf("%s says it is running at applied index %d; %d was committed before the restart", p.name, st.AppliedIndex, committed)
					}
					return
				}
				time.Sleep(2 * time.Millisecond) // (polling a process's status; nothing to wait on)
			}
			errs <- fmt.Errorf("%s not running 60 s after the restart", p.name)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
