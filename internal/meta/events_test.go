package meta

import (
	"strings"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

// TestEvents: applied commands that change the cluster become events with the names they refer
// to (a deleted table's, a registered node's new id), in log order; key-value writes and refused
// commands are not events.
func TestEvents(t *testing.T) {
	var got []Event
	f := New(Options{OnEvent: func(e Event) { got = append(got, e) }})
	a := &applier{t: t, f: f}
	registerNodes(a, 3)
	a.apply(put("k", "v"))
	a.apply(createTableCmd(t, f, &pcspb.Table{Name: "orders", Replicas: 3, IsolationLabel: "zone",
		Columns:   []*pcspb.ColumnDef{{Name: "id", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: 4}}))
	tbl, _, err := f.Table("orders")
	if err != nil {
		t.Fatal(err)
	}
	if res := a.apply(&pcspb.Command{Op: &pcspb.Command_SetNodeAdmin{SetNodeAdmin: &pcspb.CmdSetNodeAdmin{NodeId: 999, Offline: true}}}); res.Err == nil {
		t.Fatal("an unknown node was set offline")
	}
	a.apply(&pcspb.Command{Op: &pcspb.Command_SetNodeAdmin{SetNodeAdmin: &pcspb.CmdSetNodeAdmin{NodeId: 2, Offline: true}}})
	a.apply(&pcspb.Command{Op: &pcspb.Command_DeleteTable{DeleteTable: &pcspb.CmdDeleteTable{TableId: tbl.Id}}})
	want := []string{
		"node 1 registered at 10.0.0.0:7000", "node 2 registered", "node 3 registered",
		"table orders created with 4 shards", "node 2 set offline", "table orders deleted",
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i].Text, w) || got[i].AtMs == 0 || (i > 0 && got[i].Index <= got[i-1].Index) {
			t.Errorf("event %d: %+v, want %q, a time and a later index", i, got[i], w)
		}
	}
}
