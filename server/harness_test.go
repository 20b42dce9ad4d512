package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/meta"
)

// testCluster is an in-process PCS group over real loopback TCP and real disk.
type testCluster struct {
	t       *testing.T
	dirs    []string
	servers []*Server
	peerLns []net.Listener
	names   []string
}

func testConfig(t *testing.T, name, dir string) Config {
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.DataDir = dir
	cfg.HTTPAddr = ""
	cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Raft.ElectionTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 200 * time.Millisecond
	if os.Getenv("PCS_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// newTestCluster bootstraps n nodes; tweak, if set, adjusts each node's config.
func newTestCluster(t *testing.T, n int, tweak func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{t: t}
	var peers []Peer
	for i := 0; i < n; i++ {
		ln := listen(t)
		name := fmt.Sprintf("n%d", i+1)
		tc.peerLns = append(tc.peerLns, ln)
		tc.names = append(tc.names, name)
		tc.dirs = append(tc.dirs, filepath.Join(t.TempDir(), name))
		peers = append(peers, Peer{Name: name, PeerAddr: ln.Addr().String()})
	}
	for i := 0; i < n; i++ {
		cfg := testConfig(t, tc.names[i], tc.dirs[i])
		cfg.InitialCluster = peers
		cfg.Raft.PeerListener = tc.peerLns[i]
		cfg.ClientListener = listen(t)
		if tweak != nil {
			tweak(&cfg)
		}
		if i == 0 {
			t.Cleanup(tc.closeAll) // also the members started before one that fails to
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("starting %s: %v", tc.names[i], err)
		}
		s.Start()
		tc.servers = append(tc.servers, s)
	}
	tc.waitRunning(10 * time.Second)
	if tweak == nil {
		waitFor(t, 10*time.Second, "the cluster version in force", func() bool {
			return tc.primary().FSM().ClusterVersion() == meta.CommandVersion
		})
	}
	return tc
}

func (tc *testCluster) closeAll() {
	for _, s := range tc.servers {
		if s != nil {
			s.Close()
		}
	}
}

// live returns the servers that are not stopped.
func (tc *testCluster) live() []*Server {
	var out []*Server
	for _, s := range tc.servers {
		if s != nil && !s.closed.Load() {
			out = append(out, s)
		}
	}
	return out
}

func (tc *testCluster) endpoints() []string {
	var out []string
	for _, s := range tc.live() {
		out = append(out, s.ClientAddr())
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRunning waits until every live node is running and one of them is the primary.
func (tc *testCluster) waitRunning(timeout time.Duration) *Server {
	tc.t.Helper()
	var primary *Server
	waitFor(tc.t, timeout, "all nodes running with one primary", func() bool {
		primary = nil
		for _, s := range tc.live() {
			if s.State() != pcspb.NodeState_NODE_STATE_RUNNING {
				return false
			}
			if s.isPrimary() {
				primary = s
			}
		}
		if primary == nil {
			return false
		}
		name, addr := tc.live()[0].primary()
		return name == primary.Name() && addr != ""
	})
	return primary
}

func (tc *testCluster) primary() *Server { return tc.waitRunning(10 * time.Second) }

func (tc *testCluster) followers() []*Server {
	p := tc.primary()
	var out []*Server
	for _, s := range tc.live() {
		if s != p {
			out = append(out, s)
		}
	}
	return out
}

// waitConverged waits until every live node has applied the same revision and reports the
// same digest, and returns it.
func (tc *testCluster) waitConverged(timeout time.Duration) string {
	tc.t.Helper()
	var digest string
	waitFor(tc.t, timeout, "equal revisions and digests", func() bool {
		digest = ""
		var rev uint64
		for i, s := range tc.live() {
			d, pos := s.FSM().Digest()
			if i == 0 {
				digest, rev = d, pos.Revision
			} else if d != digest || pos.Revision != rev {
				return false
			}
		}
		return true
	})
	return digest
}

func (tc *testCluster) client(opts ...client.Option) *client.Client {
	c, err := client.New(tc.endpoints(), opts...)
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
