package server

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/meta"
)

// TestWatchAcrossPrimaryChange: a watch served by the primary survives the primary's loss: no
// event is lost, repeated or reordered.
func TestWatchAcrossPrimaryChange(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	p := tc.primary()
	// The watch starts at the primary, so it is cut when the primary goes.
	eps := []string{p.ClientAddr()}
	for _, f := range tc.followers() {
		eps = append(eps, f.ClientAddr())
	}
	wc, err := client.New(eps)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)

	first, err := c.Put(ctx, []byte("w/start"), []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := wc.Watch(wctx, []byte("w/"), first.Header.Revision)

	const total = 300
	var acked sync.Map // key -> mod revision
	writeErr := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			key := fmt.Sprintf("w/%04d", i)
			for {
				resp, err := c.Put(ctx, []byte(key), []byte("v"))
				if err == nil {
					acked.Store(key, resp.Kv.ModRevision)
					break
				}
				if ctx.Err() != nil {
					writeErr <- err
					return
				}
			}
			if i == total/3 {
				p.Close() // the primary, and the node serving the watch, is gone
			}
		}
		writeErr <- nil
	}()

	var got []*pcspb.Event
	seen := map[uint64]bool{}
	lastRev := uint64(0)
	for len(seen) < total+1 {
		select {
		case resp, ok := <-events:
			if !ok {
				t.Fatalf("watch ended after %d events", len(got))
			}
			if resp.Err != nil {
				t.Fatalf("watch: %v", resp.Err)
			}
			for _, ev := range resp.Events {
				rev := ev.Kv.ModRevision
				if rev <= lastRev {
					t.Fatalf("event at revision %d after %d: repeated or out of order", rev, lastRev)
				}
				lastRev = rev
				seen[rev] = true
				got = append(got, ev)
			}
		case <-ctx.Done():
			t.Fatalf("saw %d of %d events", len(seen), total+1)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	// Every acknowledged write is among the events, at its revision. A write retried after an
	// unknown outcome may appear twice (two puts), which is not a repeat.
	acked.Range(func(k, v any) bool {
		if !seen[v.(uint64)] {
			t.Errorf("acknowledged put of %s at revision %d never seen", k, v)
		}
		return true
	})
	if got[0].Kv.ModRevision != first.Header.Revision || string(got[0].Kv.Key) != "w/start" {
		t.Fatalf("first event %v, want w/start at %d", got[0].Kv, first.Header.Revision)
	}
}

func TestWatchCompactedRevision(t *testing.T) {
	tc := newTestCluster(t, 1, func(c *Config) { c.History = 10 })
	c := tc.client()
	ctx := ctxT(t, 20*time.Second)
	for i := 0; i < 30; i++ {
		if _, err := c.Put(ctx, []byte("k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for resp := range c.Watch(ctx, []byte("k"), 1) {
		if resp.Err == nil {
			t.Fatalf("watch from a compacted revision delivered %v", resp.Events)
		}
		if !errorsIs(resp.Err, client.ErrCompacted) {
			t.Fatalf("watch from a compacted revision: %v, want ErrCompacted", resp.Err)
		}
		return
	}
	t.Fatal("watch closed without an error")
}

// TestWatchReportsProgress: writes to other keys move a watch's revision on (a progress report
// without events), so a watcher can tell it has seen every matching event up to a revision
// whose last writes were not its own.
func TestWatchReportsProgress(t *testing.T) {
	tc := newTestCluster(t, 1, nil)
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	mine, err := c.Put(ctx, []byte("p/mine"), []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	var other *pcspb.PutResponse
	for i := 0; i < 3; i++ {
		if other, err = c.Put(ctx, []byte(fmt.Sprintf("q/%d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, progress := 0, false
	for resp := range c.Watch(wctx, []byte("p/"), mine.Header.Revision+1) {
		if resp.Err != nil {
			t.Fatal(resp.Err)
		}
		events += len(resp.Events)
		if len(resp.Events) == 0 {
			progress = true
		}
		if resp.Revision >= other.Header.Revision {
			break
		}
	}
	if events != 0 || !progress {
		t.Fatalf("got %d events (want none after p/mine) and a progress report %v up to revision %d", events, progress, other.Header.Revision)
	}
}

// TestWatchOfLargeValues: a watch from revision 1 over five 1 MiB values gets every event
// (messages are cut by bytes below what a client accepts, between revisions).
func TestWatchOfLargeValues(t *testing.T) {
	tc := newTestCluster(t, 1, nil)
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	big := bytes.Repeat([]byte("x"), meta.MaxValueSize)
	var last uint64
	for i := 0; i < 5; i++ {
		resp, err := c.Put(ctx, []byte(fmt.Sprint("big/", i)), big)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	got := 0
	for resp := range c.Watch(ctx, []byte("big/"), 1) {
		if resp.Err != nil {
			t.Fatalf("watch: %v", resp.Err)
		}
		for _, ev := range resp.Events {
			if len(ev.Kv.Value) != meta.MaxValueSize {
				t.Fatalf("event of %d bytes", len(ev.Kv.Value))
			}
			got++
		}
		if got == 5 && resp.Revision >= last {
			return
		}
	}
	t.Fatalf("watch closed after %d of 5 events", got)
}

// TestKeyspaceQuota: past --quota-bytes a put fails with ErrNoSpace and changes nothing;
// deletes still work and make room again.
func TestKeyspaceQuota(t *testing.T) {
	tc := newTestCluster(t, 1, func(c *Config) { c.QuotaBytes = 4 << 10 })
	c := tc.client()
	ctx := ctxT(t, 20*time.Second)
	v := bytes.Repeat([]byte("v"), 1000)
	for i := 0; i < 4; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprint("q/", i)), v); err != nil {
			t.Fatal(err)
		}
	}
	before := tc.primary().FSM().Position().Revision
	if _, err := c.Put(ctx, []byte("q/4"), v); !errorsIs(err, client.ErrNoSpace) {
		t.Fatalf("a put past the quota: %v, want ErrNoSpace", err)
	}
	if after := tc.primary().FSM().Position().Revision; after != before {
		t.Fatalf("a refused put moved the revision %d -> %d", before, after)
	}
	if _, err := c.Delete(ctx, []byte("q/0")); err != nil {
		t.Fatalf("a delete at the quota: %v", err)
	}
	if _, err := c.Put(ctx, []byte("q/4"), v); err != nil {
		t.Fatalf("a put after a delete made room: %v", err)
	}
}
