package meta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/internal/placement"
	"github.com/postdb/pcs/keyenc"
)

// createTableCmd builds a create-table command the way the primary does: compile, place.
func createTableCmd(t testing.TB, f *FSM, table *pcspb.Table) *pcspb.Command {
	t.Helper()
	spec, err := compileTable(table)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []placement.Node
	for _, n := range f.DataNodes() {
		nodes = append(nodes, placement.Node{ID: n.Id, Labels: n.Labels, Eligible: true})
	}
	leaves := spec.Leaves()
	plan, err := placement.Place(nodes, placement.Policy{Replicas: int(table.Replicas), IsolationLabel: table.IsolationLabel}, make([]placement.Shard, len(leaves)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := &pcspb.CmdCreateTable{Table: table}
	for i, l := range leaves {
		cmd.Shards = append(cmd.Shards, &pcspb.Shard{Start: l.Start, End: l.End, Primary: plan[i][0], Replicas: plan[i]})
	}
	return &pcspb.Command{Op: &pcspb.Command_CreateTable{CreateTable: cmd}}
}

func registerNodes(a *applier, n int) {
	for i := 0; i < n; i++ {
		a.apply(&pcspb.Command{Op: &pcspb.Command_RegisterNode{RegisterNode: &pcspb.CmdRegisterNode{Node: &pcspb.DataNode{
			Address: fmt.Sprintf("10.0.0.%d:7000", i), Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}}}}})
	}
}

func ordersTable() *pcspb.Table {
	return &pcspb.Table{Name: "orders", Replicas: 3, IsolationLabel: "zone",
		Columns: []*pcspb.ColumnDef{{Name: "id", Type: "int64"}, {Name: "region", Type: "string"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH,
			Columns: []string{"id"}, HashPartitions: 1000}}
}

func TestCatalogCreateRouteSnapshot(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	registerNodes(a, 6)
	// Re-registering an address keeps its id.
	if r := a.apply(&pcspb.Command{Op: &pcspb.Command_RegisterNode{RegisterNode: &pcspb.CmdRegisterNode{Node: &pcspb.DataNode{Address: "10.0.0.0:7000"}}}}); r.ID != 1 {
		t.Fatalf("re-registration got id %d, want 1", r.ID)
	}
	r := a.apply(createTableCmd(t, a.f, ordersTable()))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := a.f.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	tbl, n, err := a.f.Table("orders")
	if err != nil || n != 1000 || tbl.State != pcspb.TableState_TABLE_STATE_CREATING || tbl.Id != r.ID {
		t.Fatalf("table %v with %d shards (%v)", tbl, n, err)
	}
	// 100k random keys resolve to the shard whose range holds their routing key.
	schema, _ := catalog.CompileSchema(tbl.Columns)
	spec, _ := catalog.Compile(schema, tbl.Partition)
	rnd := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 100_000; i++ {
		key, _ := keyenc.Encode(nil, schema.Cols, []keyenc.Value{keyenc.I64(rnd.Int64()), keyenc.Str("eu")})
		s, _, err := a.f.ShardForKey("orders", key)
		if err != nil {
			t.Fatal(err)
		}
		rk, _ := spec.RoutingKey(key)
		if bytes.Compare(rk, s.Start) < 0 || bytes.Compare(rk, s.End) >= 0 {
			t.Fatalf("key %x routed to shard %d [%x, %x)", key, s.Id, s.Start, s.End)
		}
	}
	shards, _, _ := a.f.ScanShards("orders", nil, nil, 10)
	if len(shards) != 10 || shards[0].Partition != "h0" {
		t.Fatalf("scan: %d shards, first %v", len(shards), shards[0])
	}
	// Snapshot round trip keeps the catalog, its digest and its invariants.
	dst := New(Options{})
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	d1, _ := a.f.Digest()
	d2, _ := dst.Digest()
	if d1 != d2 {
		t.Fatal("catalog digest differs after restore")
	}
	if err := dst.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dst.ShardForKey("orders", []byte{0x02, 0x80, 0, 0, 0, 0, 0, 0, 1}); err != nil {
		t.Fatalf("routing after restore: %v", err)
	}
}

func TestCatalogRefusesBadTables(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	registerNodes(a, 3)
	good := createTableCmd(t, a.f, &pcspb.Table{Name: "t", Replicas: 2, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}})
	if r := a.apply(good); r.Err != nil {
		t.Fatal(r.Err)
	}
	cases := map[string]*pcspb.Command{
		"duplicate": good,
		"bad spec": {Op: &pcspb.Command_CreateTable{CreateTable: &pcspb.CmdCreateTable{Table: &pcspb.Table{Name: "u", Replicas: 1,
			Columns:   []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
			Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}}}}}},
		"unknown node": {Op: &pcspb.Command_CreateTable{CreateTable: &pcspb.CmdCreateTable{Table: &pcspb.Table{Name: "v", Replicas: 1,
			Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}},
			Shards: []*pcspb.Shard{{Start: []byte{0, 0, 0, 0}, End: []byte{0, 0, 0, 1}, Primary: 99, Replicas: []uint64{99}}}}}},
		"wrong ranges": {Op: &pcspb.Command_CreateTable{CreateTable: &pcspb.CmdCreateTable{Table: &pcspb.Table{Name: "w", Replicas: 1,
			Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}},
			Shards: []*pcspb.Shard{{Start: []byte{0}, End: []byte{9}, Primary: 1, Replicas: []uint64{1}}}}}},
		"no table name": {Op: &pcspb.Command_CreateTable{CreateTable: &pcspb.CmdCreateTable{Table: &pcspb.Table{Replicas: 1}}}},
	}
	for name, cmd := range cases {
		data, err := EncodeCommand(cmd)
		var r *Result
		if err == nil {
			r = a.raw(data)
			err = r.Err
		}
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if name == "duplicate" && !errors.Is(err, ErrTableExists) {
			t.Fatalf("duplicate: %v", err)
		}
	}
	if tables := a.f.Tables(); len(tables) != 1 {
		t.Fatalf("refused creates left %d tables", len(tables))
	}
	if _, _, err := a.f.ShardForKey("nope", nil); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("unknown table: %v", err)
	}
}
