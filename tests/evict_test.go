package tests

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// TestRollingRestartEvictPrimaries: real processes; while clients write, each of four data
// nodes in turn has its primaries evicted (pcsctl node evict-primaries --wait), is killed while
// it leads nothing, restarted on its data, and let lead again. Every acknowledged write reads
// back; the longest a write took (retries included) is logged.
func TestRollingRestartEvictPrimaries(t *testing.T) {
	sc := startSchedCluster(t, 4, 5*time.Minute)
	c, ctx, nodes, pcsctl := sc.c, sc.ctx, sc.nodes, sc.pcsctl
	sc.createTable("roll", "--hash-partitions", "8", "--replicas", "3")
	idOf := map[*nodeProc]uint64{}
	resp, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, ni := range resp.Nodes {
			if ni.Node.Address == n.addr {
				idOf[n] = ni.Node.Id
			}
		}
	}
	if len(idOf) != len(nodes) {
		t.Fatalf("node ids: %v", idOf)
	}
	info := func(id uint64) *pcspb.NodeInfo {
		resp, err := c.ListNodes(ctx)
		if err != nil {
			return nil
		}
		for _, ni := range resp.Nodes {
			if ni.Node.Id == id {
				return ni
			}
		}
		return nil
	}
	kv := c.KV("roll")
	w := startWriters(ctx, kv, 4, int64Key)
	restart := func(n *nodeProc) {
		id := idOf[n]
		n.kill()
		time.Sleep(3 * time.Second) // the restart's downtime (an upgrade), a fault's duration
		n.start()
		waitFor(t, 30*time.Second, fmt.Sprintf("node %d listening and up again", id), func() bool {
			conn, err := net.DialTimeout("tcp", n.addr, time.Second)
			if err != nil {
				return false
			}
			conn.Close()
			ni := info(id)
			return ni != nil && ni.State == "up"
		})
	}
	// For comparison: one node restarted without evicting its primaries first (its shards
	// wait for failover).
	waitFor(t, 20*time.Second, "node 1 leading shards", func() bool { ni := info(idOf[nodes[0]]); return ni != nil && ni.Primaries > 0 })
	w.slowest.Store(0)
	restart(nodes[0])
	waitFor(t, 60*time.Second, "writes flowing again", func() bool { return w.rate(200*time.Millisecond) > 0 })
	unevicted := time.Duration(w.slowest.Load())
	w.slowest.Store(0)
	for _, n := range nodes {
		id := idOf[n]
		code, out := pcsctl("node", "evict-primaries", fmt.Sprint(id), "--wait", "30s")
		if code != 0 || !strings.Contains(out, "leads no shard") {
			t.Fatalf("evict-primaries %d: exit %d: %s", id, code, out)
		}
		if ni := info(id); ni == nil || ni.Primaries != 0 || !ni.EvictPrimaries {
			t.Fatalf("node %d after evict-primaries: %v", id, ni)
		}
		restart(n)
		if code, out := pcsctl("node", "evict-primaries", fmt.Sprint(id), "--undo"); code != 0 {
			t.Fatalf("evict-primaries --undo %d: %s", id, out)
		}
		w.check(t)
	}
	if code, out := pcsctl("node", "evict-primaries", "999"); code != 1 {
		t.Fatalf("evict-primaries of an unknown node: exit %d: %s", code, out)
	}
	waitFor(t, 60*time.Second, "primaries back on every node", func() bool {
		for _, n := range nodes {
			if ni := info(idOf[n]); ni == nil || ni.Primaries == 0 || ni.EvictPrimaries {
				return false
			}
		}
		return true
	})
	n := w.stopAndVerify(ctx, t)
	t.Logf("rolling restart of %d nodes with evict-primaries: slowest write %s (a restart without: %s); %d acknowledged rows read back",
		len(nodes), time.Duration(w.slowest.Load()).Round(time.Millisecond), unevicted.Round(time.Millisecond), n)
}
