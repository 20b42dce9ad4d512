package kvnode

import (
	"context"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// TestReplicaReadsShowOnlyCommitted: a replica holding an entry its primary has not finished
// (written here, not yet on every replica) serves follower and stale reads from the state
// before it; a read of the primary's kind is refused.
func TestReplicaReadsShowOnlyCommitted(t *testing.T) {
	c, nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	tbl := &pcspb.Table{Name: "r", Replicas: 3, IsolationLabel: "zone", Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "r")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	key, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(7)})
	kv := c.KV("r")
	for _, v := range []string{"v1", "v2"} {
		if err := kv.Put(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	sr, err := c.GetShard(ctx, "r", key)
	if err != nil {
		t.Fatal(err)
	}
	sh := sr.Shard
	var backup *Server
	for _, n := range nodes {
		if n.Agent.NodeID() != sh.Primary {
			backup = n
		}
	}
	rk := append(append([]byte(nil), sh.Start...), key...)
	get := func(cons pcspb.ReadConsistency) (*pcspb.KVGetResponse, error) {
		return backup.Node.Get(ctx, &pcspb.KVGetRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: rk,
			Consistency: cons, MaxStalenessMs: 10_000})
	}
	if resp, err := get(pcspb.ReadConsistency_READ_CONSISTENCY_FOLLOWER); err != nil || string(resp.Value) != "v2" {
		t.Fatalf("follower read: %v %v", resp, err)
	}
	// An entry the primary is still replicating, as the replica sees it: on its store, not yet
	// acknowledged.
	lsn := backup.Store.LSN(sh.Id)
	if _, err := backup.Node.Replicate(ctx, &pcspb.ReplicateRequest{ShardId: sh.Id, Term: sh.Term, Lsn: lsn + 1, Primary: sh.Primary,
		Puts: []*pcspb.KVPair{{Key: rk, Value: []byte("in flight")}}}); err != nil {
		t.Fatal(err)
	}
	for _, cons := range []pcspb.ReadConsistency{pcspb.ReadConsistency_READ_CONSISTENCY_STALE, pcspb.ReadConsistency_READ_CONSISTENCY_FOLLOWER} {
		resp, err := get(cons)
		if err != nil || string(resp.Value) != "v2" {
			t.Fatalf("%v read with an entry in flight: %q %v, want v2", cons, resp.GetValue(), err)
		}
	}
	if _, err := get(pcspb.ReadConsistency_READ_CONSISTENCY_PRIMARY); err == nil {
		t.Fatal("a replica served a primary read")
	} else if ke := client.KVErrorOf(err); ke.GetNotPrimary() == nil {
		t.Fatalf("a primary read on a replica: %v", err)
	}
}
