package tests

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
)

// TestPausedPrimaryServesNoStaleTimestamp: a primary frozen with SIGSTOP while a successor is
// elected and serves, then thawed, must not hand out a timestamp at or below one its successor
// already handed out: it re-confirms leadership (its lease has run out) and refuses instead.
func TestPausedPrimaryServesNoStaleTimestamp(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := pc.primary(c)

	cc, err := grpc.NewClient(old.client, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := pcspb.NewPCSClient(cc).Tso(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pcspb.TsoRequest{Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("old primary before the pause: %v", err)
	}

	old.cmd.Process.Signal(syscall.SIGSTOP)
	defer old.cmd.Process.Signal(syscall.SIGCONT)
	var successor uint64
	waitFor(t, 20*time.Second, "a new primary serving timestamps", func() bool {
		for _, p := range pc.procs {
			if p == old {
				continue
			}
			sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
			st, err := c.Status(sctx, p.client, false)
			scancel()
			if err == nil && st.RaftState == "Leader" && pcspb.StateName(st.State) == "running" {
				tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
				successor, err = c.GetTS(tctx)
				tcancel()
				return err == nil
			}
		}
		return false
	})

	// The other members are stopped before the old primary wakes, so it cannot hear of the
	// new term and step down first: it answers from its own state unless its lease check
	// refuses, every time.
	for _, p := range pc.procs {
		if p != old {
			p.cmd.Process.Signal(syscall.SIGSTOP)
			defer p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	old.cmd.Process.Signal(syscall.SIGCONT)
	// The thawed node gets the very next request on its old stream.
	if err := stream.Send(&pcspb.TsoRequest{Count: 1}); err == nil {
		resp, err := stream.Recv()
		if err == nil && resp.First <= successor {
			t.Fatalf("thawed old primary handed out %d, at or below its successor's %d", resp.First, successor)
		}
		if err == nil {
			t.Fatalf("thawed old primary, cut off from its peers, handed out %d", resp.First)
		}
		t.Logf("thawed old primary refused: %v (successor's timestamp %d)", err, successor)
	}
}
