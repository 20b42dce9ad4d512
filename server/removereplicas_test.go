package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// TestRemoveReplicasRequests: a shard's primary may take replicas out of its configuration
// (PacificA); every request that is not from the primary of the current term and configuration,
// names no replica or the primary, or comes from a node whose lease PCS no longer holds alive,
// is refused and changes nothing.
func TestRemoveReplicasRequests(t *testing.T) {
	tc := newTestCluster(t, 1, func(c *Config) {
		fastNodes(c)
		c.NodeLeaseMargin = time.Minute // no failover while the primary's node is silent
	})
	nodes := tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	tbl := &pcspb.Table{Name: "t", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 1}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		st, _ := tableState(t, tc.primary(), "t")
		return st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	p := tc.primary()
	pcs := pcspb.NewPCSClient(mustConn(t, p.ClientAddr()))
	shards, err := c.ScanShards(ctx, "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := shards.Shards[0]
	var other uint64 // a replica other than the primary
	for _, r := range sh.Replicas {
		if r != sh.Primary {
			other = r
		}
	}
	unchanged := func(what string) {
		t.Helper()
		cur, _, err := p.fsm.ShardByID(sh.Id)
		if err != nil || !proto.Equal(cur, sh) {
			t.Fatalf("%s changed the shard: %v → %v (%v)", what, sh, cur, err)
		}
	}
	req := func(mod func(*pcspb.RemoveReplicasRequest)) *pcspb.RemoveReplicasRequest {
		r := &pcspb.RemoveReplicasRequest{ShardId: sh.Id, Primary: sh.Primary, Term: sh.Term, ConfVer: sh.Epoch.GetConfVer(), Nodes: []uint64{other}}
		mod(r)
		return r
	}
	for _, bad := range []struct {
		name string
		req  *pcspb.RemoveReplicasRequest
		code codes.Code
	}{
		{"unknown shard", req(func(r *pcspb.RemoveReplicasRequest) { r.ShardId = 9999 }), codes.NotFound},
		{"no node", req(func(r *pcspb.RemoveReplicasRequest) { r.Nodes = nil }), codes.InvalidArgument},
		{"the primary itself", req(func(r *pcspb.RemoveReplicasRequest) { r.Nodes = []uint64{sh.Primary} }), codes.InvalidArgument},
		{"a node that is not a replica", req(func(r *pcspb.RemoveReplicasRequest) { r.Nodes = []uint64{9999} }), codes.InvalidArgument},
		{"a replica that is not the primary", req(func(r *pcspb.RemoveReplicasRequest) { r.Primary = other }), codes.Aborted},
		{"an old term", req(func(r *pcspb.RemoveReplicasRequest) { r.Term-- }), codes.Aborted},
		{"a newer term", req(func(r *pcspb.RemoveReplicasRequest) { r.Term++ }), codes.Aborted},
		{"an old configuration", req(func(r *pcspb.RemoveReplicasRequest) { r.ConfVer-- }), codes.Aborted},
	} {
		_, err := pcs.RemoveReplicas(ctx, bad.req)
		if status.Code(err) != bad.code {
			t.Fatalf("%s: got %v, want %v", bad.name, err, bad.code)
		}
		unchanged(bad.name)
	}

	// The primary's node falls silent: once PCS no longer holds its lease alive, it may not
	// shrink the configuration.
	var primary *testNode
	for _, n := range nodes {
		if n.id() == sh.Primary {
			primary = n
		}
	}
	primary.stop()
	waitFor(t, 10*time.Second, "the primary's lease to run out at PCS", func() bool { return p.live.Silent(sh.Primary) >= p.cfg.NodeLease })
	if _, err := pcs.RemoveReplicas(ctx, req(func(*pcspb.RemoveReplicasRequest) {})); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a primary without a lease removed a replica: %v", err)
	}
	unchanged("a primary without a lease")
	primary.start()
	waitFor(t, 10*time.Second, "the primary's node back", func() bool { return p.live.Silent(sh.Primary) < p.cfg.NodeLease/2 })

	got, err := pcs.RemoveReplicas(ctx, req(func(*pcspb.RemoveReplicasRequest) {}))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.Shard; len(g.Replicas) != 2 || g.Primary != sh.Primary || g.Term != sh.Term || g.Epoch.GetConfVer() != sh.Epoch.GetConfVer()+1 {
		t.Fatalf("removing node %d from %v gave %v", other, sh, g)
	}
	// The same request again is of an old configuration.
	if _, err := pcs.RemoveReplicas(ctx, req(func(*pcspb.RemoveReplicasRequest) {})); status.Code(err) != codes.Aborted {
		t.Fatalf("a repeated removal: %v", err)
	}
}
