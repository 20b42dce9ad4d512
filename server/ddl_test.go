package server

import (
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/cluster"
)

func tableState(t *testing.T, s *Server, name string) (pcspb.TableState, bool) {
	tb, _, err := s.FSM().Table(name)
	if err != nil {
		return 0, false
	}
	return tb.State, true
}

// TestCreateJobSurvivesPrimaryLoss: the primary is stopped right after accepting a create (its
// DDL driver has not sent a single command: it is still warming up); the next primary resumes
// the job, and it finishes exactly once: no duplicate shard, no orphan replica.
func TestCreateJobSurvivesPrimaryLoss(t *testing.T) {
	tc := newTestCluster(t, 3, slowWarmup)
	nodes := tc.startNodes(6, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	old := tc.primary()
	// A fresh term: the warm-up holds the driver back, so the job is surely mid-way when the
	// primary goes.
	if _, err := c.MemberTransfer(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTable(ctx, thousandPartitionTable("orders")); err != nil {
		t.Fatal(err)
	}
	p := tc.primary()
	if st, _ := tableState(t, p, "orders"); st != pcspb.TableState_TABLE_STATE_CREATING {
		t.Fatalf("table already %v before the primary loss", st)
	}
	p.Close()
	_ = old
	waitFor(t, 30*time.Second, "table public under the next primary", func() bool {
		st, ok := tableState(t, tc.primary(), "orders")
		return ok && st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	np := tc.primary()
	if err := np.FSM().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	tb, n, _ := np.FSM().Table("orders")
	if n != 1000 || len(np.FSM().Tables()) != 1 {
		t.Fatalf("%d shards, %d tables after the job", n, len(np.FSM().Tables()))
	}
	want := map[uint64]map[uint64]bool{}
	for _, s := range np.FSM().TableShards(tb.Id) {
		for _, r := range s.Replicas {
			if want[r] == nil {
				want[r] = map[uint64]bool{}
			}
			want[r][s.Id] = true
		}
	}
	for _, nd := range nodes {
		held := nd.HeldShards()
		if len(held) != len(want[nd.id()]) {
			t.Fatalf("node %d holds %d replicas, the catalog gives it %d", nd.id(), len(held), len(want[nd.id()]))
		}
		nd.mu.Lock()
		for _, s := range held {
			if !want[nd.id()][s] {
				t.Fatalf("node %d holds orphan replica %d", nd.id(), s)
			}
			if nd.created[s] != 1 {
				t.Fatalf("node %d created replica %d %d times", nd.id(), s, nd.created[s])
			}
		}
		nd.mu.Unlock()
	}
}

// TestDropWhileNodeDown: a table is dropped while one of its nodes is down; the metadata goes;
// the node drops its replicas when it comes back.
func TestDropWhileNodeDown(t *testing.T) {
	tc := newTestCluster(t, 3, fastNodes)
	nodes := tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	tbl := &pcspb.Table{Name: "t", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 4}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		st, _ := tableState(t, tc.primary(), "t")
		return st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	down := nodes[2]
	down.stop()
	if got := len(down.HeldShards()); got != 4 {
		t.Fatalf("stopped node holds %d replicas, want 4", got)
	}
	if err := c.DropTable(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table metadata removed", func() bool {
		_, ok := tableState(t, tc.primary(), "t")
		return !ok
	})
	for _, n := range nodes[:2] {
		if len(n.HeldShards()) != 0 {
			t.Fatalf("live node %d still holds %v", n.id(), n.HeldShards())
		}
	}
	if len(down.HeldShards()) != 4 {
		t.Fatal("the down node changed while down")
	}
	down.start()
	waitFor(t, 20*time.Second, "returning node drops its replicas", func() bool { return len(down.HeldShards()) == 0 })
	if _, err := c.GetTable(ctx, "t"); !errorsIs(err, client.ErrNotFound) {
		t.Fatalf("dropped table still readable: %v", err)
	}
}

// TestHeartbeatLossAndWarmup: a silent node goes disconnected, then down, no sooner than the
// configured times; a new primary declares nobody down during its warm-up.
func TestHeartbeatLossAndWarmup(t *testing.T) {
	// A warm-up long enough that the new primary is surely still in it when checked.
	tc := newTestCluster(t, 3, func(c *Config) { fastNodes(c); c.Nodes.Warmup = 5 * time.Second })
	nodes := tc.startNodes(2, 2)
	silent := nodes[0]
	p := tc.primary()
	silent.agent.SetSilent(true)
	start := time.Now()
	waitFor(t, 10*time.Second, "disconnected", func() bool { return p.live.State(silent.id()) == cluster.Disconnected })
	disc := time.Since(start)
	waitFor(t, 10*time.Second, "down", func() bool { return p.live.State(silent.id()) == cluster.Down })
	down := time.Since(start)
	if disc < 300*time.Millisecond-60*time.Millisecond || down < time.Second-60*time.Millisecond {
		// A heartbeat interval (50ms) of slack: silence began at the last beat, before start.
		t.Fatalf("disconnected after %v, down after %v; configured 300ms and 1s", disc, down)
	}
	if got := nodes[1].agent.LeaseValid(); !got {
		t.Fatal("a heartbeating node has no valid lease")
	}
	// A new primary: during its warm-up the silent node is not down.
	c := tc.client()
	if _, err := c.MemberTransfer(ctxT(t, 10*time.Second), ""); err != nil {
		t.Fatal(err)
	}
	np := tc.primary()
	if st := np.live.State(silent.id()); st == cluster.Down {
		t.Fatal("new primary declared a node down during its warm-up")
	}
	if np.live.WarmedUp() {
		t.Fatal("the warm-up ended before it could be checked")
	}
	waitFor(t, 10*time.Second, "down after the warm-up", func() bool { return np.live.State(silent.id()) == cluster.Down })
	if np.live.State(nodes[1].id()) != cluster.Up {
		t.Fatal("the heartbeating node is not up at the new primary")
	}
}

// TestMalformedHeartbeat: a heartbeat from node id 0 or an unregistered node is refused and
// leaves the live view as it was.
func TestMalformedHeartbeat(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	p := tc.primary()
	ctx := ctxT(t, 10*time.Second)
	for _, hb := range []*pcspb.NodeHeartbeat{{NodeId: 0, Seq: 1}, {NodeId: 424242, Seq: 1, HeldShards: []uint64{1}}} {
		stream, err := pcspb.NewPCSClient(mustConn(t, p.ClientAddr())).Heartbeat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(hb); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if err == nil {
			t.Fatalf("heartbeat %v accepted", hb)
		}
		if mapped := client.MapError(err); !errorsIs(mapped, client.ErrInvalidArgument) && !errorsIs(mapped, client.ErrNotFound) {
			t.Fatalf("heartbeat %v: %v", hb, err)
		}
		if p.live.Heard(hb.NodeId) {
			t.Fatalf("refused heartbeat from %d entered the live view", hb.NodeId)
		}
	}
}
