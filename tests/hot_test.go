package tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHotShardSplitByLoad: real pcs and pcsnode processes; clients write as fast as they can to
// a table of one shard, so the node leading it leads all the cluster's load. The hot scheduler
// splits the shard by load (the node picks the key from the keys it sampled) and spreads the
// halves' primaries over the nodes; every acknowledged write reads back afterwards. The write
// rate before and after is logged (a figure, not an assertion: the machine is shared).
func TestHotShardSplitByLoad(t *testing.T) {
	sc := startSchedCluster(t, 4, 4*time.Minute)
	c, ctx, ep := sc.c, sc.ctx, sc.ep
	pcsctl := func(args ...string) (int, string) { return sc.pcsctl(append([]string{"-o", "json"}, args...)...) }
	sc.set("hot-hold", "3s", "hot-min-keys", "20")
	sc.createTable("hot", "--hash-partitions", "1", "--replicas", "3")
	kv := c.KV("hot")
	key := func(i int) []byte { return int64Key(i * 7919 % 1_000_003) } // spread over the key space
	w := startWriters(ctx, kv, 8, key)
	type shardRow struct {
		ID      uint64 `json:"id"`
		Primary uint64 `json:"primary"`
	}
	shards := func() []shardRow {
		code, out := pcsctl("shard", "list", "hot")
		if code != 0 {
			t.Fatalf("shard list: %s", out)
		}
		var rows []shardRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("shard list output %q: %v", out, err)
		}
		return rows
	}
	before := w.rate(5 * time.Second)
	primaries := map[uint64]bool{}
	waitFor(t, 3*time.Minute, "the hot shard split by load and its primaries on three nodes", func() bool {
		w.check(t)
		rows := shards()
		primaries = map[uint64]bool{}
		for _, r := range rows {
			primaries[r.Primary] = true
		}
		return len(rows) >= 2 && len(primaries) >= 3
	})
	after := w.rate(5 * time.Second)
	code, out := pcsctl("shard", "hot", "--table", "hot", "--by", "writes", "--top", "3")
	if code != 0 {
		t.Fatalf("shard hot: %s", out)
	}
	var hot struct {
		Shards []struct {
			ID          uint64  `json:"id"`
			Table       string  `json:"table"`
			WritePerSec float64 `json:"write_per_sec"`
		} `json:"shards"`
		Nodes []struct {
			ID   uint64  `json:"id"`
			Keys float64 `json:"keys_per_sec"`
		} `json:"nodes"`
		Mean float64 `json:"mean_keys_per_sec"`
	}
	if err := json.Unmarshal([]byte(out), &hot); err != nil {
		t.Fatalf("shard hot output %q: %v", out, err)
	}
	if len(hot.Shards) == 0 || len(hot.Shards) > 3 || hot.Shards[0].Table != "hot" || hot.Shards[0].WritePerSec <= 0 || len(hot.Nodes) != 4 || hot.Mean <= 0 {
		t.Fatalf("shard hot: %s", out)
	}
	for i := 1; i < len(hot.Shards); i++ {
		if hot.Shards[i].WritePerSec > hot.Shards[i-1].WritePerSec {
			t.Fatalf("shard hot not ordered by writes: %s", out)
		}
	}
	if code, out := run(t, 60*time.Second, "pcsctl", ep, "scheduler", "explain", "node", fmt.Sprint(hot.Nodes[0].ID)); code != 0 ||
		!strings.Contains(out, "load: leads") || !strings.Contains(out, "replicas:") {
		t.Fatalf("scheduler explain node: exit %d: %s", code, out)
	}
	if code, out := run(t, 60*time.Second, "pcsctl", ep, "scheduler", "explain", "shard", fmt.Sprint(hot.Shards[0].ID)); code != 0 ||
		!strings.Contains(out, "as a new replica:") {
		t.Fatalf("scheduler explain shard: exit %d: %s", code, out)
	}
	if code, out := run(t, 60*time.Second, "pcsctl", ep, "scheduler", "explain", "shard", "999999"); code != 1 {
		t.Fatalf("scheduler explain of an unknown shard: exit %d: %s", code, out)
	}
	if code, out := pcsctl("shard", "hot", "--by", "colour"); code != 1 || !strings.Contains(out, "colour") {
		t.Fatalf("shard hot --by colour: exit %d %q", code, out)
	}
	splits := sc.doneSteps("hot", "split", true)
	if _, table := run(t, 60*time.Second, "pcsctl", ep, "operator", "list", "--finished"); testing.Verbose() {
		t.Log(table)
		_, sl := run(t, 60*time.Second, "pcsctl", ep, "shard", "list", "hot")
		t.Log(sl)
	}
	if splits == 0 {
		t.Fatal("no finished hot split by load among the operators")
	}
	n := w.stopAndVerify(ctx, t)
	t.Logf("hot shard: %d splits by load, %d shards, primaries on %d nodes; puts %.0f/s before, %.0f/s after; %d acknowledged rows read back",
		splits, len(shards()), len(primaries), before, after, n)
}
