package kvnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/keyenc"
	"github.com/postdb/pcs/server"
)

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// cluster starts one PCS and n data nodes in zones z0.. over loopback.
func startCluster(t *testing.T, n int, opts ...func(*Config)) (*client.Client, []*Server) {
	cfg := server.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.HTTPAddr = "p1", filepath.Join(t.TempDir(), "pcs"), ""
	cfg.ClientListener, cfg.Raft.PeerListener = listen(t), listen(t)
	cfg.Nodes = cluster.Config{DisconnectAfter: 300 * time.Millisecond, DownAfter: time.Second, Warmup: 300 * time.Millisecond}
	cfg.DDLInterval = 20 * time.Millisecond
	cfg.Logger = testLogger()
	cfg.NodeLease, cfg.NodeLeaseMargin = 600*time.Millisecond, 200*time.Millisecond
	pcs, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pcs.Start()
	t.Cleanup(func() { pcs.Close() })
	var nodes []*Server
	for i := 0; i < n; i++ {
		ncfg := Config{DataDir: filepath.Join(t.TempDir(), fmt.Sprint("n", i)), Listener: listen(t),
			Endpoints: []string{pcs.ClientAddr()}, Labels: map[string]string{"zone": fmt.Sprint("z", i)}, HeartbeatInterval: 50 * time.Millisecond, Logger: testLogger()}
		for _, o := range opts {
			o(&ncfg)
		}
		s, err := Start(ncfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		nodes = append(nodes, s)
	}
	c, err := client.New([]string{pcs.ClientAddr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, nodes
}

// TestWritesReachEveryReplica: a write is acknowledged only once every replica of the shard
// has persisted it, so after the acknowledgements every replica holds every row at the same
// log position.
func TestWritesReachEveryReplica(t *testing.T) {
	c, nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	tbl := &pcspb.Table{Name: "r", Replicas: 3, IsolationLabel: "zone", Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 4}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "r")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	cols := []keyenc.Column{{Type: keyenc.Int64}}
	kv := c.KV("r")
	for i := 0; i < 100; i++ {
		k, _ := keyenc.Encode(nil, cols, []keyenc.Value{keyenc.I64(int64(i))})
		if err := kv.Put(ctx, k, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	shards, err := c.ScanShards(ctx, "r", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, sh := range shards.Shards {
		var lsn uint64
		for i, n := range nodes {
			got := n.Store.LSN(sh.Id)
			if i == 0 {
				lsn = got
			} else if got != lsn {
				t.Fatalf("shard %d: replicas at positions %d and %d", sh.Id, lsn, got)
			}
			pairs, _, err := n.Store.Scan(sh.Id, nil, nil, 1000)
			if err != nil || uint64(len(pairs)) != lsn {
				t.Fatalf("shard %d on node %d: %d rows at position %d (%v)", sh.Id, i, len(pairs), lsn, err)
			}
		}
		total += int(lsn)
	}
	if total != 100 {
		t.Fatalf("%d writes across shards, want 100", total)
	}

	// Fencing: a primary of a lower term is refused; a gap is refused; nothing changes.
	sh := shards.Shards[0]
	var replica *Server
	for _, n := range nodes {
		if n.Agent.NodeID() != sh.Primary {
			replica = n
		}
	}
	before := replica.Store.LSN(sh.Id)
	_, err = replica.Node.Replicate(ctx, &pcspb.ReplicateRequest{ShardId: sh.Id, Term: 2, Lsn: before + 1,
		Puts: []*pcspb.KVPair{{Key: append(append([]byte(nil), sh.Start...), 1), Value: []byte("new term")}}})
	if err != nil {
		t.Fatalf("a higher term is accepted: %v", err)
	}
	_, err = replica.Node.Replicate(ctx, &pcspb.ReplicateRequest{ShardId: sh.Id, Term: 1, Lsn: before + 2,
		Puts: []*pcspb.KVPair{{Key: append(append([]byte(nil), sh.Start...), 2), Value: []byte("old primary")}}})
	if ke := client.KVErrorOf(err); ke.GetStaleTerm() != 2 {
		t.Fatalf("a write from term 1 after term 2: %v, want a stale-term refusal", err)
	}
	_, err = replica.Node.Replicate(ctx, &pcspb.ReplicateRequest{ShardId: sh.Id, Term: 2, Lsn: before + 5})
	if ke := client.KVErrorOf(err); ke.GetLogGap() != before+1 {
		t.Fatalf("a write leaving a gap: %v, want a log-gap refusal", err)
	}
	if got := replica.Store.LSN(sh.Id); got != before+1 {
		t.Fatalf("refused writes moved the position to %d", got)
	}
}

// TestPrimaryFailover: the node holding shard primaries stops; once its lease (plus margin)
// has run out, PCS promotes the most up-to-date replica of each of its shards with a higher
// term; writes resume without any manual step and every acknowledged write is readable.
func TestPrimaryFailover(t *testing.T) {
	c, nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	tbl := &pcspb.Table{Name: "f", Replicas: 3, IsolationLabel: "zone", Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 6}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "f")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	cols := []keyenc.Column{{Type: keyenc.Int64}}
	key := func(i int) []byte { k, _ := keyenc.Encode(nil, cols, []keyenc.Value{keyenc.I64(int64(i))}); return k }
	kv := c.KV("f")
	acked := map[int]bool{}
	for i := 0; i < 60; i++ {
		if err := kv.Put(ctx, key(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		acked[i] = true
	}
	// Stop the node that leads the most shards.
	shards, _ := c.ScanShards(ctx, "f", nil, nil)
	lead := map[uint64]int{}
	for _, sh := range shards.Shards {
		lead[sh.Primary]++
	}
	var victim *Server
	for _, n := range nodes {
		if victim == nil || lead[n.Agent.NodeID()] > lead[victim.Agent.NodeID()] {
			victim = n
		}
	}
	lost := victim.Agent.NodeID()
	victim.Close()
	start := time.Now()
	unknown := 0
	for i := 60; i < 120; i++ {
		for {
			err := kv.Put(ctx, key(i), []byte(fmt.Sprint(i)))
			if err == nil {
				break
			}
			// Until the lost replica leaves the configuration a write's outcome is unknown;
			// this put is idempotent (one writer per key), so it is simply written again.
			if !errors.Is(err, client.ErrOutcomeUnknown) {
				t.Fatalf("put %d after losing node %d: %v", i, lost, err)
			}
			unknown++
		}
		acked[i] = true
	}
	t.Logf("writes resumed; 60 more acknowledged %v after the node stopped (%d attempts of unknown outcome)", time.Since(start), unknown)
	for i := range acked {
		v, found, err := kv.Get(ctx, key(i))
		if err != nil || !found || string(v) != fmt.Sprint(i) {
			t.Fatalf("acknowledged write %d: %q %v %v", i, v, found, err)
		}
	}
	shards, _ = c.ScanShards(ctx, "f", nil, nil)
	for _, sh := range shards.Shards {
		for _, r := range sh.Replicas {
			if r == lost {
				t.Fatalf("shard %d still lists the lost node: %v", sh.Id, sh.Replicas)
			}
		}
		if lead[lost] > 0 && sh.Primary == lost {
			t.Fatalf("shard %d still led by the lost node", sh.Id)
		}
	}
}

func waitNodesUp(t *testing.T, ctx context.Context, c *client.Client, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, "nodes up", func() bool {
		resp, err := c.ListNodes(ctx)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == want
	})
}

// testLogger logs to stderr when PCS_TEST_LOG is set (debugging), else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("PCS_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
