package tests

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// TestShardGroupStaysTogether: real processes. Two tables of a shard group; a split of the
// anchor table's shard splits the other's at the same key; a third table joins the group after
// the split; a scale-out from 3 to 5 nodes rebalances; through all of it every shard of the
// group stays on the nodes of its anchor (the first table's shard of the same partition and
// range), with the same primary, and within its range.
func TestShardGroupStaysTogether(t *testing.T) {
	sc := startSchedCluster(t, 3, 5*time.Minute)
	pc, c, ctx, nodes, pcsctl := sc.pc, sc.c, sc.ctx, sc.nodes, sc.pcsctl
	sc.set("rebalance-speed", "max")
	create := func(name string) {
		sc.createTable(name, "--hash-partitions", "4", "--replicas", "2", "--shard-group", "g")
	}
	create("orders")
	create("lines")
	shards := func(name string) []*pcspb.Shard {
		resp, err := c.ScanShards(ctx, name, nil, nil, client.WithLimit(1000))
		if err != nil {
			t.Fatalf("shards of %s: %v", name, err)
		}
		return resp.Shards
	}
	first := shards("orders")[0]
	waitFor(t, 30*time.Second, "orders' first shard split", func() bool {
		code, out := pcsctl("shard", "split", fmt.Sprint(first.Id))
		if code != 0 && !strings.Contains(out, "shard busy") { // busy: balancing moves it now
			t.Fatalf("split: %s", out)
		}
		return code == 0
	})
	// misaligned lists the group's shards not with their anchor.
	misaligned := func(tables ...string) []string {
		anchors := shards("orders")
		var bad []string
		for _, name := range tables {
			for _, sh := range shards(name) {
				var a *pcspb.Shard
				for _, x := range anchors {
					if x.Partition == sh.Partition && bytes.Compare(x.Start, sh.Start) <= 0 && (a == nil || bytes.Compare(x.Start, a.Start) > 0) {
						a = x
					}
				}
				switch {
				case a == nil:
					bad = append(bad, fmt.Sprintf("%s shard %d: no anchor", name, sh.Id))
				case len(a.End) > 0 && (len(sh.End) == 0 || bytes.Compare(sh.End, a.End) > 0):
					bad = append(bad, fmt.Sprintf("%s shard %d runs past anchor %d", name, sh.Id, a.Id))
				case sh.Primary != a.Primary || !sameSet(sh.Replicas, a.Replicas) || len(sh.Learners) > 0:
					bad = append(bad, fmt.Sprintf("%s shard %d on %v (primary %d), anchor %d on %v (primary %d)", name, sh.Id, sh.Replicas, sh.Primary, a.Id, a.Replicas, a.Primary))
				}
			}
		}
		return bad
	}
	var last []string
	waitFor(t, 60*time.Second, "lines split where orders split", func() bool {
		last = misaligned("lines")
		return len(shards("lines")) == 5 && len(last) == 0
	})
	create("items") // joins after the split
	waitFor(t, 60*time.Second, "items aligned", func() bool { last = misaligned("lines", "items"); return len(last) == 0 })
	more := startNodeProcs(t, pc, 2)
	waitFor(t, 20*time.Second, "five data nodes up", func() bool { return upNodes(ctx, c) == len(nodes)+len(more) })
	waitFor(t, 3*time.Minute, "the group rebalanced onto the new nodes and aligned", func() bool {
		resp, err := c.ListNodes(ctx)
		if err != nil {
			return false
		}
		for _, n := range resp.Nodes {
			if n.Shards == 0 {
				return false
			}
		}
		ops, err := c.ListOperators(ctx, 0, false)
		if err != nil || len(ops) > 0 {
			return false
		}
		last = misaligned("lines", "items")
		return len(last) == 0
	})
	if t.Failed() {
		t.Logf("misaligned: %v", last)
	}
}

func sameSet(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
