package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// TestPcsctlReshardUnderWrites: real pcs and pcsnode processes; while clients write, the real
// pcsctl splits a shard, moves a replica off the primary's node and transfers the primary; every
// acknowledged write reads back afterwards and bad requests exit 1 with one line.
func TestPcsctlReshardUnderWrites(t *testing.T) {
	pc := startCluster(t, 3, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	nodes := startNodeProcs(t, pc, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "four data nodes up", func() bool { return upNodes(ctx, c) == len(nodes) })
	ep := "--endpoints=" + strings.Join(pc.endpoints(), ",")
	pcsctl := func(args ...string) (int, string) {
		return run(t, 60*time.Second, "pcsctl", append([]string{ep, "-o", "json"}, args...)...)
	}
	if code, out := pcsctl("table", "create", "rs", "--columns", "id:int64", "--hash-columns", "id", "--hash-partitions", "1", "--replicas", "3"); code != 0 {
		t.Fatalf("table create: %s", out)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "rs")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	kv := c.KV("rs")
	w := startWriters(ctx, kv, 4, int64Key)
	shardOf := func(out string) []map[string]any {
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("pcsctl output %q: %v", out, err)
		}
		return rows
	}
	code, out := pcsctl("shard", "list", "rs")
	if code != 0 {
		t.Fatal(out)
	}
	id := fmt.Sprint(shardOf(out)[0]["id"])
	if code, out = pcsctl("shard", "split", id); code != 0 {
		t.Fatalf("shard split: %s", out)
	}
	halves := shardOf(out)
	if len(halves) != 2 {
		t.Fatalf("split printed %v", halves)
	}
	// Move the right half off its primary's node to the node without a replica of it.
	right := halves[1]
	from := fmt.Sprint(right["primary"])
	var replicas []string
	for _, r := range right["replicas"].([]any) {
		replicas = append(replicas, fmt.Sprint(r))
	}
	to := ""
	for n := 1; n <= 4; n++ {
		if s := fmt.Sprint(n); !strings.Contains(","+strings.Join(replicas, ",")+",", ","+s+",") {
			to = s
		}
	}
	rid := fmt.Sprint(right["id"])
	if code, out = pcsctl("shard", "move", rid, "--from", from, "--to", to); code != 0 {
		t.Fatalf("shard move: %s", out)
	}
	moved := shardOf(out)[0]
	if fmt.Sprint(moved["primary"]) != to {
		t.Fatalf("after moving the primary's replica to %s: %v", to, moved)
	}
	next := fmt.Sprint(moved["replicas"].([]any)[1])
	if code, out = pcsctl("shard", "transfer-primary", rid, "--to", next); code != 0 || fmt.Sprint(shardOf(out)[0]["primary"]) != next {
		t.Fatalf("transfer-primary: %d %s", code, out)
	}
	for _, bad := range [][]string{
		{"shard", "split", "999999"},
		{"shard", "split", id, "--key", "zz"},
		{"shard", "move", rid, "--from", from, "--to", "999"},
		{"shard", "transfer-primary", rid, "--to", from}, // no longer a replica
	} {
		if code, out := run(t, 30*time.Second, "pcsctl", append([]string{ep}, bad...)...); code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("pcsctl %v: exit %d, output %q; want exit 1 and one line", bad, code, out)
		}
	}
	n := w.stopAndVerify(ctx, t)
	t.Logf("%d acknowledged rows read back after split, move and transfer", n)
}
