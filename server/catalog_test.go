package server

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

func thousandPartitionTable(name string) *pcspb.Table {
	return &pcspb.Table{Name: name, Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "id", Type: "int64"}, {Name: "note", Type: "string"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: 1000}}
}

func TestCreateTableAndRoute(t *testing.T) {
	tc := newTestCluster(t, 3, fastNodes)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	zone := map[uint64]string{}
	for _, n := range tc.startNodes(6, 3) {
		zone[n.id()] = n.labels["zone"]
	}
	resp, err := c.CreateTable(ctx, thousandPartitionTable("orders"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Shards != 1000 {
		t.Fatalf("%d shards", resp.Shards)
	}
	tc.waitConverged(10 * time.Second)
	for _, s := range tc.live() {
		if err := s.FSM().CheckInvariants(); err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
	}
	// Replicas in three distinct zones; shard counts per node within ±1.
	shards, err := c.ScanShards(ctx, "orders", nil, nil, client.WithLimit(2000))
	if err != nil || len(shards.Shards) != 1000 || shards.More {
		t.Fatalf("scan: %d shards, more %v, %v", len(shards.GetShards()), shards.GetMore(), err)
	}
	perNode := map[uint64]int{}
	for _, s := range shards.Shards {
		zones := map[string]bool{}
		for _, r := range s.Replicas {
			zones[zone[r]] = true
			perNode[r]++
		}
		if len(zones) != 3 {
			t.Fatalf("shard %d replicas %v span %d zones", s.Id, s.Replicas, len(zones))
		}
	}
	lo, hi := 1<<30, 0
	for _, n := range perNode {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 1 {
		t.Fatalf("shards per node %v: spread %d", perNode, hi-lo)
	}
	// 100k random keys resolve to the shard whose range holds them, on the primary and on a
	// follower (state machine lookups), and a sample through the RPC at each node.
	schema, _ := catalog.CompileSchema(resp.Table.Columns)
	spec, _ := catalog.Compile(schema, resp.Table.Partition)
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range []*Server{tc.primary(), tc.followers()[0]} {
		for i := 0; i < 100_000; i++ {
			key, _ := keyenc.Encode(nil, schema.Cols, []keyenc.Value{keyenc.I64(r.Int64()), keyenc.Str("x")})
			rk, _ := spec.RoutingKey(key)
			sh, _, err := s.FSM().ShardForKey("orders", key)
			if err != nil || bytes.Compare(rk, sh.Start) < 0 || bytes.Compare(rk, sh.End) >= 0 {
				t.Fatalf("%s: key %x → shard %v (%v)", s.Name(), key, sh, err)
			}
			if i%5000 == 0 {
				got, err := c.GetShard(ctx, "orders", key, client.WithEndpoint(s.ClientAddr()))
				if err != nil || got.Shard.Id != sh.Id {
					t.Fatalf("GetShard at %s: %v (%v), want shard %d", s.Name(), got.GetShard(), err, sh.Id)
				}
			}
		}
	}
	byID, err := c.GetShardByID(ctx, shards.Shards[7].Id)
	if err != nil || byID.Shard.Partition != shards.Shards[7].Partition {
		t.Fatalf("GetShardByID: %v %v", byID, err)
	}
}

func TestCreateTableBadInput(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	tc.startNodes(2, 2)
	good := &pcspb.Table{Name: "t", Replicas: 2, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}
	if _, err := c.CreateTable(ctx, good); err != nil {
		t.Fatal(err)
	}
	before := tc.primary().FSM().Tables()
	huge := &pcspb.Table{Name: "huge", Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"k"}}}
	for i := 0; i < 200_000; i++ {
		huge.Partition.Ranges = append(huge.Partition.Ranges, &pcspb.RangePartition{LessThan: []string{fmt.Sprint(i)}})
	}
	for name, tc := range map[string]struct {
		table *pcspb.Table
		want  error
	}{
		"duplicate":     {good, client.ErrAlreadyExists},
		"invalid spec":  {&pcspb.Table{Name: "u", Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "varchar"}}}, client.ErrInvalidArgument},
		"too many reps": {&pcspb.Table{Name: "v", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}, client.ErrNotEnoughNodes},
		"isolation":     {&pcspb.Table{Name: "w", Replicas: 2, IsolationLabel: "rack", Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}, client.ErrNotEnoughNodes},
		"no name":       {&pcspb.Table{Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}, client.ErrInvalidArgument},
		"oversize spec": {huge, client.ErrInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.CreateTable(ctx, tc.table)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if after := tc.primary().FSM().Tables(); len(after) != len(before) {
		t.Fatalf("refused creates changed the catalog: %d tables, had %d", len(after), len(before))
	}
	if _, err := c.GetTable(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown table: %v", err)
	}
	if _, err := c.GetShard(ctx, "t", []byte{0x99}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("malformed key: %v", err)
	}
	if err := c.DropTable(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("drop unknown: %v", err)
	}

	// A table without a replica count takes the cluster's default-replicas: 3 at first (more
	// than the two nodes here), then 2 once set.
	unset := &pcspb.Table{Name: "d", Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}
	if _, err := c.CreateTable(ctx, unset); !errors.Is(err, client.ErrNotEnoughNodes) {
		t.Fatalf("a table without a replica count, default 3, on 2 nodes: %v", err)
	}
	if _, err := c.SetScheduleConfig(ctx, "default-replicas", "10"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("default-replicas 10: %v", err)
	}
	if _, err := c.SetScheduleConfig(ctx, "default-replicas", "2"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.CreateTable(ctx, unset)
	if err != nil || resp.Table.Replicas != 2 {
		t.Fatalf("a table without a replica count after default-replicas 2: %v %v", resp, err)
	}
}

// TestClientRouteCache: the client's cached routes agree with PCS, and a catalog change (drop
// and re-create under the same name) reaches the cache by the watch.
func TestClientRouteCache(t *testing.T) {
	tc := newTestCluster(t, 3, fastNodes)
	tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	mk := func(parts uint32) *pcspb.Table {
		return &pcspb.Table{Name: "r", Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
			Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: parts}}
	}
	if _, err := c.CreateTable(ctx, mk(64)); err != nil {
		t.Fatal(err)
	}
	schema, _ := catalog.CompileSchema(mk(1).Columns)
	key := func(i int64) []byte { b, _ := keyenc.Encode(nil, schema.Cols, []keyenc.Value{keyenc.I64(i)}); return b }
	for i := int64(0); i < 2000; i++ {
		got, err := c.Route(ctx, "r", key(i))
		if err != nil {
			t.Fatal(err)
		}
		want, _, err := tc.primary().FSM().ShardForKey("r", key(i))
		if err != nil || got.Id != want.Id {
			t.Fatalf("key %d: cached route %d, PCS says %d (%v)", i, got.Id, want.Id, err)
		}
	}
	old, _ := c.Route(ctx, "r", key(1))
	if err := c.DropTable(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "drop finished", func() bool { _, _, err := tc.primary().FSM().Table("r"); return err != nil })
	if _, err := c.CreateTable(ctx, mk(8)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "cache invalidated by the catalog watch", func() bool {
		s, err := c.Route(ctx, "r", key(1))
		return err == nil && s.TableId != old.TableId
	})
	// Reserved keys are refused.
	if _, err := c.Put(ctx, []byte("\x00catalog/tables/r"), []byte("x")); !errorsIs(err, client.ErrInvalidArgument) {
		t.Fatalf("write to a reserved key: %v", err)
	}
}
