package server

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postdb/pcs/client"
)

// TestRetriedWritesApplyOnce: clients whose attempt timeout is shorter than a write's commit
// time retry nearly every put while the first attempt is still in flight; the state machine
// applies each request once and answers the retries with the recorded outcome. The watch from
// revision 1 shows every acknowledged value exactly once and no value twice.
func TestRetriedWritesApplyOnce(t *testing.T) {
	// Every seventh put reply is lost after the member served it (besides the attempts the
	// 2 ms timeout cuts short): the client must retry those, and only the record may answer.
	var served atomic.Int64
	tc := newTestCluster(t, 3, func(c *Config) {
		c.loseReply = func(method string) bool {
			return strings.HasSuffix(method, "/Put") && served.Add(1)%7 == 0
		}
	})
	tc.primary()
	ctx := ctxT(t, 2*time.Minute)
	c := tc.client(client.WithAttemptTimeout(2*time.Millisecond), client.WithBackoff(time.Millisecond, 5*time.Millisecond),
		client.WithMaxAttempts(1000))
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		unknown int
		wg      sync.WaitGroup
	)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				_, err := c.Put(ctx, []byte(fmt.Sprintf("k/%d", i%5)), []byte(v))
				mu.Lock()
				switch {
				case err == nil:
					acked[v] = true
				case errors.Is(err, client.ErrOutcomeUnknown):
					unknown++
				default:
					t.Errorf("put %s: %v", v, err)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	tc.waitConverged(10 * time.Second)
	p := tc.primary()
	rev := p.FSM().Position().Revision
	applied := map[string]int{}
	wctx := ctxT(t, time.Minute)
	for resp := range c.Watch(wctx, []byte("k/"), 1) {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		for _, ev := range resp.Events {
			applied[string(ev.Kv.Value)]++
		}
		if resp.Revision >= rev {
			break
		}
	}
	if wctx.Err() != nil {
		t.Fatalf("the watch did not reach revision %d: %v", rev, wctx.Err())
	}
	for v, n := range applied {
		if n > 1 {
			t.Errorf("%s applied %d times", v, n)
		}
	}
	for v := range acked {
		if applied[v] != 1 {
			t.Errorf("%s acknowledged, applied %d times", v, applied[v])
		}
	}
	dups := 0.0
	for _, s := range tc.live() {
		dups += testutil.ToFloat64(s.metrics.duplicates)
	}
	t.Logf("%d acknowledged, %d unknown, %d retries answered from the record", len(acked), unknown, int(dups))
	if dups == 0 {
		t.Fatalf("no retry reached the record: the test did not exercise deduplication")
	}
}
