package server

import (
	"testing"
	"time"

	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/version"
)

// TestClusterVersionWaitsForEveryMember: while one member reports it reads only command
// version 1 (an older build), the primary keeps writing version 1 — entries without request
// ids, which that member would apply alike — and retries are not deduplicated; once every
// member reads this build's version, the cluster version rises and exactly-once applies.
func TestClusterVersionWaitsForEveryMember(t *testing.T) {
	tc := newTestCluster(t, 3, func(c *Config) {
		if c.Name == "n3" {
			c.CommandVersion = 1
		}
	})
	p := tc.primary()
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	for i := 0; i < 20; i++ {
		if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "every member's address recorded", func() bool {
		ms := p.FSM().Members()
		return len(ms) == 3 && ms["n3"] != nil && ms["n3"].ClientAddr != ""
	})
	if got := p.membersCommandVersion(ctx); got != 1 {
		t.Fatalf("the members' version is %d; n3 reads only 1", got)
	}
	if v := p.FSM().ClusterVersion(); v != 1 {
		t.Fatalf("cluster version %d with a member of version 1", v)
	}
	st, err := c.Status(ctx, "", false)
	if err != nil || st.ClusterVersion != 1 || st.CommandVersion != tc.primary().commandVersion() || st.Version != version.Get().String() {
		t.Fatalf("status: %+v %v (build %s)", st, err, version.Get())
	}
	tc.waitConverged(10 * time.Second)

	// The old member goes; the others all read this build's version.
	var old *Server
	for _, s := range tc.live() {
		if s.Name() == "n3" {
			old = s
		}
	}
	if _, err := c.MemberRemove(ctx, "n3", true); err != nil {
		t.Fatal(err)
	}
	old.Close()
	waitFor(t, 10*time.Second, "this build's cluster version", func() bool { return tc.primary().FSM().ClusterVersion() == meta.CommandVersion })
	tc.waitConverged(10 * time.Second)
}
