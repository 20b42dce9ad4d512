package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/nodeagent"
)

// memNode is a data node that keeps replicas in memory, driven by the real node agent.
type memNode struct {
	mu   sync.Mutex
	held map[uint64]bool
}

func (m *memNode) CreateReplica(_ context.Context, s *pcspb.Shard) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[s.Id] = true
	return nil
}

func (m *memNode) DropReplica(_ context.Context, id uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.held, id)
	return nil
}

func (m *memNode) HeldShards() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []uint64
	for id := range m.held {
		out = append(out, id)
	}
	return out
}

func (m *memNode) LoadSchema(context.Context, *pcspb.SchemaVersionRef) error { return nil }

func (m *memNode) Stats() (*pcspb.NodeStats, []*pcspb.ShardStats) { return nil, nil }

// startMemNodes runs n in-memory data nodes (zones z0..z{zones-1}) against endpoints.
func startMemNodes(t *testing.T, endpoints []string, n, zones int) []*nodeagent.Agent {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var agents []*nodeagent.Agent
	for i := 0; i < n; i++ {
		a, err := nodeagent.New(nodeagent.Config{Endpoints: endpoints, Address: fmt.Sprintf("127.0.0.1:%d", 9000+i),
			Labels: map[string]string{"zone": fmt.Sprint("z", i%zones)}, Interval: 100 * time.Millisecond}, &memNode{held: map[uint64]bool{}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(ctx) }()
		agents = append(agents, a)
	}
	for _, a := range agents {
		waitFor(t, 10*time.Second, "node registration", func() bool { return a.NodeID() != 0 })
	}
	return agents
}
