package server

import (
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

func TestJobsListAndCancel(t *testing.T) {
	tc := newTestCluster(t, 3, slowWarmup)
	nodes := tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	mk := func(name string) *pcspb.Table {
		return &pcspb.Table{Name: name, Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}
	}
	// Cancel an ALTER's pending steps.
	if _, err := c.CreateTable(ctx, mk("a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a public", func() bool {
		st, _ := tableState(t, tc.primary(), "a")
		return st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	nodes[2].setNoLoad(true)
	if _, err := c.AlterTable(ctx, "a", [][]byte{[]byte("2"), []byte("3"), []byte("4")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alter job 2/3 nodes", func() bool {
		js, err := c.ListJobs(ctx)
		return err == nil && len(js) == 1 && js[0].Kind == "alter" && js[0].Done == 2 && js[0].Total == 3
	})
	if err := c.CancelJob(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	nodes[2].setNoLoad(false)
	waitFor(t, 20*time.Second, "alter ends at version 2", func() bool {
		tb, _, _ := tc.primary().FSM().Table("a")
		return tb.SchemaVersion == 2 && tb.MinLiveVersion == 2 && len(tb.PendingSteps) == 0
	})
	if js, _ := c.ListJobs(ctx); len(js) != 0 {
		t.Fatalf("jobs left: %v", js)
	}
	// Cancel a create: it is rolled back.
	if _, err := c.MemberTransfer(ctx, ""); err != nil { // a fresh warm-up holds the create back
		t.Fatal(err)
	}
	if _, err := c.CreateTable(ctx, mk("b")); err != nil {
		t.Fatal(err)
	}
	if js, err := c.ListJobs(ctx); err != nil || len(js) != 1 || js[0].Kind != "create" {
		t.Fatalf("jobs after create: %v %v", js, err)
	}
	if err := c.CancelJob(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "cancelled create rolled back", func() bool {
		_, ok := tableState(t, tc.primary(), "b")
		return !ok
	})
	for _, n := range nodes {
		if held := n.HeldShards(); len(held) != 1 { // table a's one shard
			t.Fatalf("node %d holds %v after the rollback", n.id(), held)
		}
	}
	if err := c.CancelJob(ctx, "a"); !errorsIs(err, client.ErrNotFound) {
		t.Fatalf("cancel with no job: %v", err)
	}
}
