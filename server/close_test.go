package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// TestCloseReturnsInEveryState: Close of a primary under write load, of a follower, and of
// nodes that have lost their quorum (with writes and lease renewals stuck in Raft) returns
// within a few seconds. Close waits for every goroutine it started, so a call blocked without
// a deadline would hang it.
func TestCloseReturnsInEveryState(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				wctx, wcancel := context.WithTimeout(ctx, time.Second)
				c.Put(wctx, []byte("k"), []byte("v"))
				c.GetTS(wctx)
				wcancel()
			}
		}()
	}
	closeWithin := func(s *Server, what string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("Close of %s (%s) did not return", s.Name(), what)
		}
	}
	// A follower under load.
	closeWithin(tc.followers()[0], "follower")
	// The primary, now without a spare node: the last one loses its quorum when it goes.
	p := tc.primary()
	last := tc.followers()[0]
	closeWithin(p, "primary")
	// The last node has no quorum: writes and lease rounds wait in Raft until they time out.
	waitFor(t, 10*time.Second, "the last node without a primary", func() bool {
		return last.State() == pcspb.NodeState_NODE_STATE_ELECTION
	})
	closeWithin(last, "no quorum")
	cancel()
	wg.Wait()
}
