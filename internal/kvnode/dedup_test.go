package kvnode

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// TestRetriedRowWritesApplyOnce: writers whose attempt timeout is shorter than a replicated
// write retry nearly every write while its first attempt is still queued or replicating. Each
// writer writes 1, 2, 3, ... to its own key, one after the other; a first attempt applied after
// the writer had moved on would put an older value back. Every write is checked, not only the
// last: each writer also puts a key of its own per write and deletes the previous one, so an
// attempt applied a second time after the delete leaves a key behind. With the request records
// every key ends at the last value written, only each writer's last own key is left, and the
// primaries answered retries from the records.
func TestRetriedRowWritesApplyOnce(t *testing.T) {
	_, nodes := startCluster(t, 3)
	c, err := client.New(nodes[0].pcs.Endpoints(), client.WithAttemptTimeout(3*time.Millisecond),
		client.WithBackoff(time.Millisecond, 5*time.Millisecond), client.WithMaxAttempts(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	createTable(t, ctx, c, "d", 3, 4)
	kv := c.KV("d")
	cols := []keyenc.Column{{Type: keyenc.Int64}}
	key := func(i int) []byte { k, _ := keyenc.Encode(nil, cols, []keyenc.Value{keyenc.I64(int64(i))}); return k }
	const writers, each = 6, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 1; i <= each; i++ {
				if err := kv.Put(ctx, key(w), []byte(fmt.Sprint(i))); err != nil {
					errs <- fmt.Errorf("writer %d, value %d: %w", w, i, err)
					return
				}
				if err := kv.Put(ctx, key(1000*(w+1)+i), []byte("mine")); err != nil {
					errs <- fmt.Errorf("writer %d, own key %d: %w", w, i, err)
					return
				}
				if i > 1 {
					if err := kv.Delete(ctx, key(1000*(w+1)+i-1)); err != nil {
						errs <- fmt.Errorf("writer %d, deleting own key %d: %w", w, i-1, err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Let any first attempt still queued on a node run (it must find its record).
	normal, err := client.New(nodes[0].pcs.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	defer normal.Close()
	nkv := normal.KV("d")
	for w := 0; w < writers; w++ {
		if err := nkv.Put(ctx, key(100+w), []byte("barrier")); err != nil {
			t.Fatal(err)
		}
	}
	for w := 0; w < writers; w++ {
		v, found, err := nkv.Get(ctx, key(w))
		if err != nil || !found || string(v) != fmt.Sprint(each) {
			t.Errorf("writer %d's key holds %q (found %v, %v), want %d", w, v, found, err, each)
		}
	}
	for w := 0; w < writers; w++ {
		pairs, err := nkv.Scan(ctx, key(1000*(w+1)), key(1000*(w+2)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(pairs) != 1 || string(pairs[0].Key) != string(key(1000*(w+1)+each)) {
			t.Errorf("writer %d's own keys: %d left, want only its last (a put applied again after its delete)", w, len(pairs))
		}
	}
	dups := 0.0
	for _, n := range nodes {
		dups += testutil.ToFloat64(n.Node.metrics.duplicates)
	}
	t.Logf("%d retried writes answered from their records", int(dups))
	if dups == 0 {
		t.Fatal("no retry was answered from a record: the test did not exercise deduplication")
	}
}
