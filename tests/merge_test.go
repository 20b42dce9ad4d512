package tests

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// TestMergeUnderWrites: real pcs and pcsnode processes. A table of one partition, three
// replicas on four nodes, is split into four shards while clients write to it; then merges are
// turned on and the shards merge back into one — the right shard of each pair first brought to
// its neighbour's nodes and primary, then absorbed by a merge entry in the survivor's log —
// while the clients keep writing through the routes they cached. Every acknowledged write
// reads back afterwards, and the operators show the merges done.
func TestMergeUnderWrites(t *testing.T) {
	sc := startSchedCluster(t, 4, 5*time.Minute)
	c, ctx := sc.c, sc.ctx
	// No merges while the table is split, and no splits by load: the writers make it hot.
	sc.set("merge-max-bytes", "0", "rebalance-speed", "max", "hot-min-keys", "1000000000")
	sc.createTable("m", "--hash-partitions", "1", "--replicas", "3")
	shards := func() []*pcspb.Shard {
		resp, err := c.ScanShards(ctx, "m", nil, nil, client.WithLimit(1000))
		if err != nil {
			t.Fatalf("shards: %v", err)
		}
		return resp.Shards
	}
	whole := shards()[0]
	w := startWriters(ctx, c.KV("m"), 6, func(i int) []byte { return int64Key(i * 7919 % 1_000_003) })
	waitFor(t, 30*time.Second, "rows written", func() bool { w.check(t); return w.count.Load() >= 200 })
	for _, at := range []int{250_000, 500_000, 750_000} {
		waitFor(t, 60*time.Second, "a split", func() bool {
			var sh *pcspb.Shard
			for _, x := range shards() {
				if bytes.Compare(x.Start[4:], int64Key(at)) < 0 {
					sh = x
				}
			}
			_, _, err := c.SplitShard(ctx, sh.Id, append(bytes.Clone(sh.Start[:4]), int64Key(at)...))
			if err != nil && !strings.Contains(err.Error(), "busy") {
				t.Fatalf("split of shard %d at %d: %v", sh.Id, at, err)
			}
			return err == nil
		})
	}
	if n := len(shards()); n != 4 {
		t.Fatalf("%d shards after three splits", n)
	}
	split := w.count.Load()
	sc.set("split-merge-interval", "0s", "merge-max-keys", "1000000", "merge-max-bytes", "64MiB")
	waitFor(t, 3*time.Minute, "the shards merged into one", func() bool {
		w.check(t)
		s := shards()
		return len(s) == 1 && bytes.Equal(s[0].Start, whole.Start) && bytes.Equal(s[0].End, whole.End)
	})
	if w.count.Load() == split {
		t.Fatal("no write was acknowledged while the shards merged")
	}
	rows := w.stopAndVerify(ctx, t)
	merges := sc.doneSteps("merge", "merge", false)
	if merges != 3 {
		t.Fatalf("%d merge operators done, want 3", merges)
	}
	t.Logf("%d rows acknowledged and read back; %d merges", rows, merges)
}
