package cluster

import (
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
)

func TestLivenessAndWarmup(t *testing.T) {
	clk := clock.NewManual(0)
	r := New(clk, Config{DisconnectAfter: time.Second, DownAfter: 3 * time.Second, Warmup: 5 * time.Second})
	r.Observe(&pcspb.NodeHeartbeat{NodeId: 1, HeldShards: []uint64{7}})
	steps := []struct {
		at       time.Duration
		n1, n2   State
		warmedUp bool
	}{
		{0, Up, Disconnected, false},
		{1500 * time.Millisecond, Disconnected, Disconnected, false},
		{4 * time.Second, Disconnected, Disconnected, false}, // silent past DownAfter, but warming up
		{5 * time.Second, Down, Down, true},
	}
	var now time.Duration
	for _, s := range steps {
		clk.Advance(s.at - now)
		now = s.at
		if got := r.State(1); got != s.n1 {
			t.Fatalf("at %v: node 1 %s, want %s", s.at, got, s.n1)
		}
		if got := r.State(2); got != s.n2 {
			t.Fatalf("at %v: node 2 (never heard) %s, want %s", s.at, got, s.n2)
		}
		if r.WarmedUp() != s.warmedUp {
			t.Fatalf("at %v: warmed up %v", s.at, !s.warmedUp)
		}
	}
	r.Observe(&pcspb.NodeHeartbeat{NodeId: 1})
	if r.State(1) != Up || r.Holds(1, 7) {
		t.Fatal("a new heartbeat did not replace the old view")
	}
	r.Reset()
	if r.State(1) != Disconnected || r.Heard(1) {
		t.Fatal("a new term must start with no node down and nothing heard")
	}
}
