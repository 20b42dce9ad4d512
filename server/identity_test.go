package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/postdb/pcs/client"
)

// TestClusterIdentity: members of one cluster share its id and a joiner learns it; a node that
// bootstrapped a cluster of its own and is then added to another is refused at every Raft
// contact (its data never mixes with the cluster's, the digests never diverge), refused at
// --join, and a caller of another cluster is refused on gRPC.
func TestClusterIdentity(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	id := tc.primary().ClusterID()
	if len(id) != 16 {
		t.Fatalf("cluster id %q", id)
	}
	for _, s := range tc.live() {
		if s.ClusterID() != id {
			t.Fatalf("%s has cluster id %s, %s has %s", s.Name(), s.ClusterID(), tc.primary().Name(), id)
		}
	}
	if st, err := c.Status(ctx, "", false); err != nil || st.ClusterId != id {
		t.Fatalf("status reports %q, %v", st.GetClusterId(), err)
	}
	if _, err := c.Put(ctx, []byte("cluster"), []byte("a")); err != nil {
		t.Fatal(err)
	}

	// A lone node bootstraps its own cluster and takes a write.
	loneCfg := testConfig(t, "lone", filepath.Join(t.TempDir(), "lone"))
	loneCfg.Raft.PeerListener = listen(t)
	loneCfg.ClientListener = listen(t)
	lone, err := New(loneCfg)
	if err != nil {
		t.Fatal(err)
	}
	lone.Start()
	t.Cleanup(func() { lone.Close() })
	lc, err := client.New([]string{lone.ClientAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Put(ctx, []byte("lone-only"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if lone.ClusterID() == id || lone.ClusterID() == "" {
		t.Fatalf("lone node's cluster id %q (cluster %s)", lone.ClusterID(), id)
	}
	// Added to the cluster by hand: the Raft handshake refuses it; it is never promoted.
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	resp, err := c.MemberAdd(actx, "lone", lone.PeerAddr(), false, false)
	cancel()
	if err != nil || !resp.PromotionPending {
		t.Fatalf("member add of a node of another cluster: %v %v", resp, err)
	}
	if kv, _ := lone.FSM().Get([]byte("cluster")); kv != nil {
		t.Fatalf("the lone node received the cluster's data")
	}
	if kv, _ := tc.primary().FSM().Get([]byte("lone-only")); kv != nil {
		t.Fatalf("the cluster received the lone node's data")
	}
	if _, err := c.MemberRemove(ctx, "lone", false); err != nil {
		t.Fatal(err)
	}
	tc.waitConverged(10 * time.Second)
	lone.Close()

	// Restarted with --join into the cluster, the node holding its own data is refused.
	loneCfg.Join = tc.endpoints()
	loneCfg.Raft.PeerListener = listen(t)
	loneCfg.ClientListener = listen(t)
	if s, err := New(loneCfg); !errors.Is(err, ErrClusterMismatch) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("--join with another cluster's data: %v, want ErrClusterMismatch", err)
	}

	// A caller that says it is of another cluster (a data node registered elsewhere).
	other, err := client.New(tc.endpoints(), client.WithClusterID("00000000000000aa"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.RegisterNode(ctx, "127.0.0.1:9", nil, 0); !errors.Is(err, client.ErrClusterMismatch) {
		t.Fatalf("a node of another cluster registering: %v, want ErrClusterMismatch", err)
	}
	// A joiner with an empty data dir learns the id.
	joiner := tc.startJoiner("n4", true)
	waitFor(t, 20*time.Second, "the joiner learns the cluster id", func() bool { return joiner.ClusterID() == id })
}
