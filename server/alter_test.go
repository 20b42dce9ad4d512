package server

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// TestOnlineAlter: an ALTER of three steps advances one version at a time, only once every
// live node has loaded the newest; never are three versions live.
func TestOnlineAlter(t *testing.T) {
	tc := newTestCluster(t, 3, fastNodes)
	nodes := tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	tbl := &pcspb.Table{Name: "a", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Versions: []*pcspb.SchemaVersion{{Definition: []byte("v1: k")}}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		st, _ := tableState(t, tc.primary(), "a")
		return st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	// Invariant checker on every PCS for the whole test.
	var violations atomic.Int32
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for _, s := range tc.live() {
				if err := s.FSM().CheckInvariants(); err != nil {
					t.Errorf("%s: %v", s.Name(), err)
					violations.Add(1)
				}
			}
		}
	}()
	slow := nodes[2]
	slow.setNoLoad(true)
	got, err := c.AlterTable(ctx, "a", [][]byte{[]byte("v2: delete-only"), []byte("v3: write-only"), []byte("v4: public")})
	if err != nil {
		t.Fatal(err)
	}
	if got.SchemaVersion != 2 || got.MinLiveVersion != 1 {
		t.Fatalf("after alter: versions %d..%d", got.MinLiveVersion, got.SchemaVersion)
	}
	if _, err := c.AlterTable(ctx, "a", [][]byte{[]byte("x")}); !errorsIs(err, client.ErrAlterInProgress) {
		t.Fatalf("second alter: %v, want ErrAlterInProgress", err)
	}
	if sv, err := c.GetTableVersion(ctx, "a", 1); err != nil || string(sv.Definition) != "v1: k" {
		t.Fatalf("version 1 while live: %v %v", sv, err)
	}
	// Two nodes load v2; the slow one does not: no advance.
	tb, _, _ := tc.primary().FSM().Table("a")
	waitFor(t, 10*time.Second, "fast nodes report v2", func() bool {
		p := tc.primary()
		return p.live.LoadedVersion(nodes[0].id(), tb.Id) == 2 && p.live.LoadedVersion(nodes[1].id(), tb.Id) == 2
	})
	// Give the planner a few rounds with the slow node reporting v1.
	p := tc.primary()
	for i := 0; i < 5; i++ {
		ch := p.FSM().Changed()
		select {
		case <-ch:
		case <-time.After(4 * p.cfg.DDLInterval):
		}
	}
	if tb, _, _ := p.FSM().Table("a"); tb.MinLiveVersion != 1 || tb.SchemaVersion != 2 {
		t.Fatalf("advanced to %d..%d before every live node loaded v2", tb.MinLiveVersion, tb.SchemaVersion)
	}
	slow.setNoLoad(false)
	waitFor(t, 20*time.Second, "alter finished", func() bool {
		tb, _, _ := tc.primary().FSM().Table("a")
		return tb.SchemaVersion == 4 && tb.MinLiveVersion == 4 && len(tb.PendingSteps) == 0
	})
	close(stop)
	<-done
	if violations.Load() > 0 {
		t.Fatal("invariant violations")
	}
	if _, err := c.GetTableVersion(ctx, "a", 1); !errorsIs(err, client.ErrNotFound) {
		t.Fatalf("retired version 1: %v, want ErrNotFound", err)
	}
	if sv, err := c.GetTableVersion(ctx, "a", 4); err != nil || string(sv.Definition) != "v4: public" {
		t.Fatalf("version 4: %v %v", sv, err)
	}
}
