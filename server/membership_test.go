package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/client"
)

// startJoiner starts a new node that joins the cluster through its endpoints.
func (tc *testCluster) startJoiner(name string, nonVoter bool) *Server {
	tc.t.Helper()
	cfg := testConfig(tc.t, name, filepath.Join(tc.t.TempDir(), name))
	cfg.Raft.PeerAddr = "127.0.0.1:0"
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.Join = tc.endpoints()
	cfg.JoinAsNonVoter = nonVoter
	s, err := New(cfg)
	if err != nil {
		tc.t.Fatalf("starting %s: %v", name, err)
	}
	s.Start()
	tc.servers = append(tc.servers, s)
	tc.names = append(tc.names, name)
	return s
}

func TestMembershipChanges(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.Put(ctx, []byte("before-join"), []byte("1")); err != nil {
		t.Fatal(err)
	}

	// A non-voter joins, replicates, and is listed as such.
	learner := tc.startJoiner("learner", true)
	tc.waitRunning(20 * time.Second)
	tc.waitConverged(20 * time.Second)
	waitFor(t, 10*time.Second, "the learner's addresses recorded", func() bool {
		m := tc.primary().FSM().Members()["learner"]
		return m != nil && m.ClientAddr == learner.ClientAddr()
	})
	ml, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 4 {
		t.Fatalf("members %v, want 4", ml.Members)
	}
	for _, m := range ml.Members {
		if m.Name == "learner" && (m.Voter || m.ClientAddr != learner.ClientAddr()) {
			t.Fatalf("learner listed as %+v", m)
		}
	}

	// Duplicates are refused and change nothing.
	p := tc.primary()
	if _, err := c.MemberAdd(ctx, "learner", "127.0.0.1:1", false, false); !errors.Is(err, client.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v, want ErrAlreadyExists", err)
	}
	if _, err := c.MemberAdd(ctx, "other", p.PeerAddr(), false, false); !errors.Is(err, client.ErrAlreadyExists) {
		t.Fatalf("duplicate address: %v, want ErrAlreadyExists", err)
	}
	if _, err := c.MemberRemove(ctx, "nobody", false); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown member: %v, want ErrNotFound", err)
	}
	if _, err := c.MemberTransfer(ctx, "nobody"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("transfer to unknown member: %v, want ErrNotFound", err)
	}
	if _, err := c.MemberTransfer(ctx, "learner"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("transfer to a non-voter: %v, want ErrInvalidArgument", err)
	}
	if cfg := p.raft.GetConfiguration(); cfg.Error() != nil || len(cfg.Configuration().Servers) != 4 {
		t.Fatalf("refused changes altered the configuration: %v", cfg.Configuration())
	}

	// Graceful transfer to a named voter.
	var target *Server
	for _, s := range tc.followers() {
		if s.Name() != "learner" {
			target = s
			break
		}
	}
	start := time.Now()
	got, err := c.MemberTransfer(ctx, target.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got != target.Name() {
		t.Fatalf("transfer reported %s, want %s", got, target.Name())
	}
	waitFor(t, 10*time.Second, "target serving as primary", target.isPrimary)
	t.Logf("graceful transfer took %v", time.Since(start))
	if _, err := c.Put(ctx, []byte("after-transfer"), []byte("1")); err != nil {
		t.Fatal(err)
	}

	// Remove the learner: it leaves the configuration, writes go on.
	if _, err := c.MemberRemove(ctx, "learner", false); err != nil {
		t.Fatal(err)
	}
	ml, err = c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 3 {
		t.Fatalf("members after removal %v, want 3", ml.Members)
	}
	learner.Close()
	if _, err := c.Put(ctx, []byte("after-remove"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	tc.waitConverged(10 * time.Second)
}

func TestSnapshotCatchUpOnJoin(t *testing.T) {
	tc := newTestCluster(t, 3, func(c *Config) {
		c.Raft.SnapshotThreshold = 1000
		c.Raft.TrailingLogs = 200
		c.Raft.SnapshotInterval = 50 * time.Millisecond
		c.Raft.SegmentSize = 64 << 10 // so that compaction really drops old entries
	})
	c := tc.client()
	ctx := ctxT(t, 120*time.Second)
	// ≥ 10k commands, from 16 writers.
	const writers, each = 16, 650
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func(w int) {
			for i := 0; i < each; i++ {
				if _, err := c.Put(ctx, []byte(fmt.Sprintf("s/%02d/%04d", w, i)), []byte("v")); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}(w)
	}
	for w := 0; w < writers; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	p := tc.primary()
	// The log has been compacted: a new member cannot catch up from the log alone.
	waitFor(t, 30*time.Second, "log compaction on the primary", func() bool {
		first, err := p.group.FirstIndex()
		return err == nil && first > 1000
	})
	joiner := tc.startJoiner("n4", false)
	tc.waitRunning(30 * time.Second)
	tc.waitConverged(30 * time.Second)
	kvs, _, _ := joiner.FSM().Range([]byte("s/"), nil, 2*writers*each)
	if len(kvs) != writers*each {
		t.Fatalf("joiner has %d keys, want %d", len(kvs), writers*each)
	}
	if n := parseUint(joiner.raft.Stats()["last_snapshot_index"]); n == 0 {
		t.Fatalf("joiner caught up without installing a snapshot: %v", joiner.raft.Stats())
	}
}

// TestMembershipCannotLoseQuorum: peers that are not running (or not addresses) never become
// voters, a joiner is promoted once caught up, and no removal leaves the live voters without a
// quorum unless forced.
func TestMembershipCannotLoseQuorum(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 90*time.Second)
	if _, err := c.MemberAdd(ctx, "bad", "notanaddress", false, false); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("member add of a non-address: %v", err)
	}
	// Three peers that are not running: each stays a non-voter; writes go on.
	for i := 0; i < 3; i++ {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := c.MemberAdd(actx, fmt.Sprintf("ghost%d", i), fmt.Sprintf("127.0.0.1:%d", 1+i), false, false)
		cancel()
		if err != nil {
			t.Fatalf("adding ghost%d: %v", i, err)
		}
		if !resp.PromotionPending {
			t.Fatalf("an unreachable peer was promoted: %v", resp.Members)
		}
	}
	ml, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, m := range ml.Members {
		if m.Voter {
			voters++
		}
	}
	if len(ml.Members) != 6 || voters != 3 {
		t.Fatalf("members %v: want 6 with 3 voters", ml.Members)
	}
	if _, err := c.Put(ctx, []byte("still"), []byte("writable")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.MemberRemove(ctx, fmt.Sprintf("ghost%d", i), false); err != nil {
			t.Fatal(err)
		}
	}

	// A joiner asking to vote is promoted once it has caught up.
	tc.startJoiner("n4", false)
	waitFor(t, 30*time.Second, "n4 promoted to voter", func() bool {
		for _, srv := range tc.primary().raft.GetConfiguration().Configuration().Servers {
			if string(srv.ID) == "n4" {
				return srv.Suffrage == raft.Voter
			}
		}
		return false
	})

	// Four voters; stop one follower. Removing another live voter would leave 3 voters with 2
	// live: allowed. Then removing a third would leave 2 voters with 1 live: refused.
	p := tc.primary()
	var down, other *Server
	for _, s := range tc.followers() {
		if down == nil {
			down = s
		} else if other == nil {
			other = s
		}
	}
	down.Close()
	if _, err := c.MemberRemove(ctx, other.Name(), false); err != nil {
		t.Fatalf("removing a live voter with a live quorum left: %v", err)
	}
	var third *Server
	for _, s := range tc.followers() {
		if s != down && s != other && s != p {
			third = s
		}
	}
	if _, err := c.MemberRemove(ctx, third.Name(), false); !errors.Is(err, client.ErrQuorumAtRisk) {
		t.Fatalf("removal leaving 1 live voter of 2: %v, want ErrQuorumAtRisk", err)
	}
	// Removing the stopped one is fine: 2 voters, both live.
	if _, err := c.MemberRemove(ctx, down.Name(), false); err != nil {
		t.Fatalf("removing the stopped voter: %v", err)
	}
	if _, err := c.Put(ctx, []byte("after"), []byte("removals")); err != nil {
		t.Fatal(err)
	}
}
