package tests

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/client"
)

// appliedEverywhere reports whether every listed node reports key in force at want.
func appliedEverywhere(ctx context.Context, c *client.Client, ids []uint64, key, want string) bool {
	infos, err := c.GetNodeConfig(ctx, ids...)
	if err != nil || len(infos) != len(ids) {
		return false
	}
	for _, in := range infos {
		if in.Applied[key] != want {
			return false
		}
	}
	return true
}

// TestNodeConfigReachesEveryNode: real processes; a log level set once with pcsctl reaches every
// data node: those up, one that was down when it was set, and one that registers later; a
// node's own setting wins; bad settings are refused with one line.
func TestNodeConfigReachesEveryNode(t *testing.T) {
	sc := startSchedCluster(t, 3, 2*time.Minute)
	pc, c, nodes, ctx, pcsctl := sc.pc, sc.c, sc.nodes, sc.ctx, sc.pcsctl
	// ids lists the registered nodes, except the one at address but.
	ids := func(but string) []uint64 {
		resp, err := c.ListNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, n := range resp.Nodes {
			if n.Node.Address != but {
				out = append(out, n.Node.Id)
			}
		}
		return out
	}
	all := ids("")
	if !appliedEverywhere(ctx, c, all, "log-level", "warn") {
		t.Fatal("the nodes do not report their own --log-level warn")
	}
	nodes[2].kill()
	waitFor(t, 20*time.Second, "node down", func() bool { return upNodes(ctx, c) == 2 })
	if code, out := pcsctl("node", "config", "set", "log-level", "debug"); code != 0 {
		t.Fatalf("node config set: %s", out)
	}
	up := ids(nodes[2].addr)
	waitFor(t, 20*time.Second, "debug on the nodes up", func() bool { return appliedEverywhere(ctx, c, up, "log-level", "debug") })
	nodes[2].start()
	late := startNodeProcs(t, pc, 1)
	waitFor(t, 20*time.Second, "four data nodes up", func() bool { return upNodes(ctx, c) == 4 })
	all = ids("")
	waitFor(t, 20*time.Second, "debug on every node, the one that was down and the new one too", func() bool {
		return appliedEverywhere(ctx, c, all, "log-level", "debug")
	})
	for _, n := range append(nodes, late...) {
		if b, _ := os.ReadFile(n.dir + ".log"); !strings.Contains(string(b), "log level set by PCS") {
			t.Fatalf("node %s did not log the change:\n%s", n.addr, n.logTail(2000))
		}
	}
	// A node's own setting wins over the one for all.
	if code, out := pcsctl("node", "config", "set", "log-level", "error", "--nodes", "1"); code != 0 {
		t.Fatalf("node config set --nodes 1: %s", out)
	}
	var others []uint64
	for _, id := range all {
		if id != 1 {
			others = append(others, id)
		}
	}
	waitFor(t, 20*time.Second, "error on node 1, debug elsewhere", func() bool {
		return appliedEverywhere(ctx, c, []uint64{1}, "log-level", "error") && appliedEverywhere(ctx, c, others, "log-level", "debug")
	})
	if code, out := pcsctl("-o", "json", "node", "config", "get", "1"); code != 0 || !strings.Contains(out, `"error"`) {
		t.Fatalf("node config get 1: %d %s", code, out)
	}
	for _, bad := range [][]string{
		{"node", "config", "set", "color", "red"},
		{"node", "config", "set", "log-level", "loud"},
		{"node", "config", "set", "log-level", "info", "--nodes", "999"},
		{"node", "config", "set", "log-level", "info", "--nodes", "x"},
		{"node", "config", "get", "x"},
	} {
		if code, out := pcsctl(bad...); code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("pcsctl %v: exit %d, output %q; want exit 1 and one line", bad, code, out)
		}
	}
}

// TestNodeMonitoringSwitches: real processes; the monitoring settings PCS carries to the data
// nodes take effect there: per-shard metric series appear on /metrics with shard-metrics on and
// go with it off; /debug/pprof/ answers only while pprof is on.
func TestNodeMonitoringSwitches(t *testing.T) {
	sc := startSchedCluster(t, 2, 2*time.Minute)
	c, ctx, pcsctl := sc.c, sc.ctx, sc.pcsctl
	httpAddr := freeAddr(t)
	n := &nodeProc{t: t, dir: filepath.Join(t.TempDir(), "node-http"), addr: freeAddr(t),
		args: []string{"--endpoints", strings.Join(sc.pc.endpoints(), ","), "--labels", "zone=z2", "--log-level", "warn", "--http-addr", httpAddr}}
	n.start()
	t.Cleanup(n.kill)
	waitFor(t, 20*time.Second, "three data nodes up", func() bool { return upNodes(ctx, c) == 3 })
	sc.createTable("mon", "--hash-partitions", "2", "--replicas", "3")
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	resp, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, ni := range resp.Nodes {
		ids = append(ids, ni.Node.Id)
	}
	set := func(key, value string) {
		t.Helper()
		if code, out := pcsctl("node", "config", "set", key, value); code != 0 {
			t.Fatalf("node config set %s %s: %s", key, value, out)
		}
		waitFor(t, 20*time.Second, key+" "+value+" on every node", func() bool { return appliedEverywhere(ctx, c, ids, key, value) })
	}
	if !appliedEverywhere(ctx, c, ids, "shard-metrics", "off") || !appliedEverywhere(ctx, c, ids, "pprof", "off") {
		t.Fatal("the monitoring switches are not reported off by default")
	}
	if _, body := get("/metrics"); strings.Contains(body, "pcsnode_shard_lsn{") {
		t.Fatal("per-shard series with shard-metrics off")
	}
	if code, _ := get("/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ with pprof off: %d", code)
	}
	set("shard-metrics", "on")
	set("pprof", "on")
	if _, body := get("/metrics"); strings.Count(body, "pcsnode_shard_lsn{shard=") != 2 {
		t.Fatalf("with shard-metrics on, /metrics has no series for the node's 2 shards:\n%.2000s", body)
	}
	if code, body := get("/debug/pprof/cmdline"); code != http.StatusOK || !strings.Contains(body, "pcsnode") {
		t.Fatalf("/debug/pprof/cmdline with pprof on: %d %.200s", code, body)
	}
	set("shard-metrics", "off")
	set("pprof", "off")
	if _, body := get("/metrics"); strings.Contains(body, "pcsnode_shard_lsn{") {
		t.Fatal("per-shard series after shard-metrics was turned off")
	}
	if code, _ := get("/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ after pprof was turned off: %d", code)
	}
	if code, out := pcsctl("node", "config", "set", "pprof", "maybe"); code != 1 || !strings.Contains(out, "on or off") {
		t.Fatalf("pprof maybe: exit %d %q", code, out)
	}
}
