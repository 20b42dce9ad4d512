package kvnode

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

var errCut = errors.New("fault injection: cut off")

// cutManager fails every request to PCS while cut is set.
type cutManager struct {
	Manager
	cut *atomic.Bool
}

func (m cutManager) Shard(ctx context.Context, id uint64) (*pcspb.Shard, error) {
	if m.cut.Load() {
		return nil, errCut
	}
	return m.Manager.Shard(ctx, id)
}

func (m cutManager) RemoveReplicas(ctx context.Context, req *pcspb.RemoveReplicasRequest) (*pcspb.Shard, error) {
	if m.cut.Load() {
		return nil, errCut
	}
	return m.Manager.RemoveReplicas(ctx, req)
}

// TestPartitionedPrimaryIsFenced cuts a shard's primary off from PCS (no heartbeats, no
// requests) and from its replicas (replication fails), while clients can still reach it. It must stop serving
// reads when its lease runs out, before PCS makes another replica primary; no write it took
// after the cut is acknowledged; and every write acknowledged anywhere survives.
func TestPartitionedPrimaryIsFenced(t *testing.T) {
	var cut [3]atomic.Bool
	c, nodes := startCluster(t, 3, func(cfg *Config) {
		i := cfg.Labels["zone"][1] - '0'
		cfg.WrapPeer = func(p Peer) Peer {
			return func(ctx context.Context, node uint64) (pcspb.KVClient, error) {
				if cut[i].Load() {
					return nil, errCut
				}
				return p(ctx, node)
			}
		}
		cfg.WrapManager = func(m Manager) Manager { return cutManager{m, &cut[i]} }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	createTable(t, ctx, c, "fence", 3, 1)
	kv := c.KV("fence")
	w := startWriters(ctx, kv, 2)
	w.waitMore(t, 100)

	shards, err := c.ScanShards(ctx, "fence", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := shards.Shards[0]
	var old *Server
	var oldIdx int
	for i, n := range nodes {
		if n.Agent.NodeID() == sh.Primary {
			old, oldIdx = n, i
		}
	}
	cc, err := grpc.NewClient(old.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	direct := pcspb.NewKVClient(cc)
	hdr := &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}
	row, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(-42)}) // no writer's key
	key := append(append([]byte(nil), sh.Start...), row...)                                              // its routing key (one leaf)

	// Cut the primary off and keep reading from it directly.
	old.Agent.SetSilent(true)
	cut[oldIdx].Store(true)
	var lastRead atomic.Int64 // unix ns of the end of the last read the old primary served
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			_, err := direct.Get(rctx, &pcspb.KVGetRequest{Header: hdr, Key: key})
			rcancel()
			if err == nil {
				lastRead.Store(time.Now().UnixNano())
			} else if ke := client.KVErrorOf(err); ke != nil && (ke.GetNotPrimary() != nil || ke.GetShardNotFound() != 0) {
				return // lease gone: the old primary refuses
			}
		}
	}()
	// A write to the cut-off primary is never acknowledged.
	if _, err := direct.Put(ctx, &pcspb.KVPutRequest{Header: hdr, Key: key, Value: []byte("lost")}); err == nil {
		t.Fatal("the cut-off primary acknowledged a write")
	}
	// PCS makes another replica primary.
	var takeover time.Time
	waitFor(t, 30*time.Second, "a new primary", func() bool {
		resp, err := c.GetShardByID(ctx, sh.Id)
		if err == nil && resp.Shard.Term > sh.Term {
			takeover = time.Now()
			return true
		}
		return false
	})
	<-readerDone
	if last := time.Unix(0, lastRead.Load()); lastRead.Load() != 0 && !last.Before(takeover) {
		t.Fatalf("the old primary served a read at %v, after the new primary took over at %v", last, takeover)
	}
	w.waitMore(t, 100) // writes go on on the new primary
	// Heal: the old primary's writes of its old term are refused by the replicas.
	cut[oldIdx].Store(false)
	for _, n := range nodes {
		if n == old {
			continue
		}
		_, err := n.Node.Replicate(ctx, &pcspb.ReplicateRequest{ShardId: sh.Id, Term: sh.Term, Primary: sh.Primary,
			Lsn: n.Store.LSN(sh.Id) + 1, Puts: []*pcspb.KVPair{{Key: key, Value: []byte("stale")}}})
		if ke := client.KVErrorOf(err); ke == nil || ke.GetStaleTerm() == 0 {
			t.Fatalf("a replica took a write of the old term: %v", err)
		}
	}
	old.Agent.SetSilent(false)
	w.finish(t, ctx, kv)
	if v, found, err := kv.Get(ctx, row); err != nil || found {
		t.Fatalf("a write refused by the fenced primary is visible: %q %v %v", v, found, err)
	}
}
