package server

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/nodeagent"
)

// testNode is an in-process data node for catalog tests: it registers, heartbeats through the
// real node agent, and keeps its replicas in memory. It can be stopped (down), restarted
// (returns with what it held) and silenced.
type testNode struct {
	t       *testing.T
	addr    string
	labels  map[string]string
	eps     []string
	agent   *nodeagent.Agent
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	held    map[uint64]*pcspb.Shard
	created map[uint64]int // create commands carried out per shard
	schema  map[uint64]uint64
	noLoad  bool // ignore LoadSchema (a node slow to load a schema)
}

func (n *testNode) LoadSchema(_ context.Context, ref *pcspb.SchemaVersionRef) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.noLoad {
		n.schema[ref.TableId] = max(n.schema[ref.TableId], ref.Version)
	}
	return nil
}

func (n *testNode) setNoLoad(v bool) {
	n.mu.Lock()
	n.noLoad = v
	n.mu.Unlock()
}

func (n *testNode) CreateReplica(_ context.Context, s *pcspb.Shard) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.held[s.Id]; !ok {
		n.created[s.Id]++
	}
	n.held[s.Id] = s
	return nil
}

func (n *testNode) DropReplica(_ context.Context, id uint64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.held, id)
	return nil
}

func (n *testNode) HeldShards() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]uint64, 0, len(n.held))
	for id := range n.held {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (n *testNode) Stats() (*pcspb.NodeStats, []*pcspb.ShardStats) {
	n.mu.Lock()
	defer n.mu.Unlock()
	versions := map[uint64]uint64{}
	for k, v := range n.schema {
		versions[k] = v
	}
	return &pcspb.NodeStats{ShardCount: uint64(len(n.held)), SchemaVersions: versions}, nil
}

func (n *testNode) start() {
	a, err := nodeagent.New(nodeagent.Config{Endpoints: n.eps, Address: n.addr, Labels: n.labels, Interval: 50 * time.Millisecond}, n)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.agent, n.cancel, n.done = a, cancel, make(chan struct{})
	go func() { defer close(n.done); a.Run(ctx) }()
	waitFor(n.t, 10*time.Second, "node registration", func() bool { return a.NodeID() != 0 })
}

func (n *testNode) stop() {
	n.cancel()
	<-n.done
}

func (n *testNode) id() uint64 { return n.agent.NodeID() }

// startNodes starts count nodes with zone labels z0, z1, z2, ...
func (tc *testCluster) startNodes(count, zones int) []*testNode {
	var out []*testNode
	for i := 0; i < count; i++ {
		n := &testNode{t: tc.t, addr: fmt.Sprintf("10.1.0.%d:7000", i), labels: map[string]string{"zone": fmt.Sprintf("z%d", i%zones)},
			eps: tc.endpoints(), held: map[uint64]*pcspb.Shard{}, created: map[uint64]int{}, schema: map[uint64]uint64{}}
		n.start()
		tc.t.Cleanup(func() {
			select {
			case <-n.done:
			default:
				n.stop()
			}
		})
		out = append(out, n)
	}
	// Until every node is up at the primary, placement would not see them.
	waitFor(tc.t, 10*time.Second, "nodes up", func() bool {
		p := tc.primary()
		for _, n := range out {
			if p.live.State(n.id()) != cluster.Up {
				return false
			}
		}
		return true
	})
	return out
}

// fastNodes shortens the node timeouts for tests.
func fastNodes(c *Config) {
	c.Nodes = cluster.Config{DisconnectAfter: 300 * time.Millisecond, DownAfter: time.Second, Warmup: 500 * time.Millisecond}
	c.DDLInterval = 30 * time.Millisecond
}

// slowWarmup is fastNodes with a 2 s warm-up, for tests that act on a job while a new primary's
// warm-up still holds it back (a loaded CI machine must not let the job finish first).
func slowWarmup(c *Config) {
	fastNodes(c)
	c.Nodes.Warmup = 2 * time.Second
}
