// Package nodeagent is the library a data node embeds to take part in a PCS cluster: it
// registers the node, keeps one heartbeat stream to whichever PCS is primary (following
// failovers), tracks the node's lease on a monotonic clock, and hands PCS's commands to the
// node through a small interface.
//
// Lease arithmetic (DESIGN §6): the agent notes t_send before it sends a heartbeat; an answer
// granting lease L makes the lease valid until t_send + L. PCS counts the lease from when it
// received the heartbeat, which is later, so the node always gives up first.
//
// Grants. The node lease says only that the node is alive. A node serves shard S as primary at
// term T only while it holds a grant of (S, T) (Granted): PCS grants it in a heartbeat answer
// only to the node its catalog names S's primary at term T, knowing that no earlier primary of
// S may still hold a grant. A heartbeat reports, for every shard the node holds as primary, the
// term of its own record; the answer renews those not denied, until t_send + L, at the term
// reported — so a demotion that reaches the node in the same answer (a record of a newer term)
// never runs on the renewed grant, whatever order the node applies them in.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/pcstls"
)

// Handler is what a data node implements. Commands are idempotent: creating a replica the node
// already holds, or dropping one it does not, succeeds.
type Handler interface {
	CreateReplica(ctx context.Context, shard *pcspb.Shard) error
	DropReplica(ctx context.Context, shardID uint64) error
	// LoadSchema loads a table's schema version; the node then reports it in
	// NodeStats.SchemaVersions (an online ALTER advances only when every live node has).
	LoadSchema(ctx context.Context, ref *pcspb.SchemaVersionRef) error
	// HeldShards lists every shard the node holds a replica of.
	HeldShards() []uint64
	// Stats reports node and per-shard statistics (either may be nil).
	Stats() (*pcspb.NodeStats, []*pcspb.ShardStats)
}

// Splitter is implemented by a node that can split shards. SplitShard splits a shard the node
// is primary of, as an entry of the shard's replicated log, and ignores a command for a shard
// it does not lead or at another version; the node then reports both halves in its shard stats
// (the new one with SplitFrom set), which is how PCS records the split.
type Splitter interface {
	SplitShard(ctx context.Context, cmd *pcspb.SplitShardCommand) error
}

// Configurer is implemented by a node that takes settings from PCS (NodeConfigCommand); it
// reports the settings in force in NodeStats.Config, and PCS sends them again until it does.
type Configurer interface {
	SetConfig(ctx context.Context, settings map[string]string) error
}

// Merger is implemented by a node that can merge shards. MergeShards absorbs a shard's right
// neighbour, both led by the node with the same replicas, as an entry of the shard's log, and
// ignores a command for shards it does not lead or at other versions; the node then reports
// the survivor with MergedFrom set, which is how PCS records the merge.
type Merger interface {
	MergeShards(ctx context.Context, cmd *pcspb.MergeShardsCommand) error
}

// Config configures an Agent.
type Config struct {
	// Endpoints are PCS client addresses.
	Endpoints []string
	// Address is the node's own service address; it identifies the node across restarts.
	Address string
	Labels  map[string]string
	// CapacityBytes is the node's storage capacity.
	CapacityBytes uint64
	// Interval between heartbeats. Default DefaultInterval.
	Interval time.Duration
	Logger   *slog.Logger
	// OnBeat, if set, is called after each answered heartbeat (load generators count them).
	OnBeat func()
	// ClusterID is the id of the cluster the node was registered in before ("" for a new
	// node): PCS of another cluster refuses the node. OnClusterID, if set, is called with the
	// id a new node learns at registration, to keep it with the node's data.
	ClusterID   string
	OnClusterID func(string) error
	// TLS, if set, is the node's identity for mutual TLS with PCS; PCSNames the identities
	// PCS members' certificates must name (default client.DefaultPCSNames).
	TLS      *pcstls.Source
	PCSNames []string
}

// DefaultInterval is the default heartbeat interval: a quarter of PCS's default node lease.
const DefaultInterval = 250 * time.Millisecond

// Agent runs a node's side of the protocol.
type Agent struct {
	cfg    Config
	h      Handler
	log    *slog.Logger
	c      *client.Client
	origin time.Time
	nodeID atomic.Uint64
	// leaseUntil is a monotonic reading (ns since origin) until which the lease is valid.
	leaseUntil atomic.Int64
	seq        uint64

	grants struct {
		sync.RWMutex
		m map[uint64]grant // shard -> the grant held to serve it as primary
	}

	// cmds carries PCS's commands from the heartbeat loop to the worker that carries them out,
	// so a slow command never delays a heartbeat (and the lease).
	cmds chan *pcspb.NodeCommand
	kick chan struct{}

	mu     sync.Mutex
	silent bool
}

// New returns an agent; Run starts it.
func New(cfg Config, h Handler) (*Agent, error) {
	if cfg.Address == "" || len(cfg.Endpoints) == 0 {
		return nil, errors.New("nodeagent: address and endpoints are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []client.Option{client.WithBackoff(10*time.Millisecond, 200*time.Millisecond), client.WithClusterID(cfg.ClusterID)}
	if cfg.TLS != nil {
		opts = append(opts, client.WithTLS(cfg.TLS), client.WithServerNames(cfg.PCSNames, nil))
	}
	c, err := client.New(cfg.Endpoints, opts...)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, h: h, log: log.With("node_addr", cfg.Address), c: c, origin: time.Now(),
		cmds: make(chan *pcspb.NodeCommand, 4096), kick: make(chan struct{}, 1)}, nil
}

// Kick makes the agent send its next heartbeat now (after a change PCS should learn of soon,
// such as a split).
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// AskSplit asks PCS for the id of the new half of a split the node wants to make of a shard
// it leads (node-requested split); the node then splits as for PCS's command.
func (a *Agent) AskSplit(ctx context.Context, shardID uint64, epoch *pcspb.ShardEpoch) (uint64, error) {
	return a.c.AskSplit(ctx, shardID, epoch)
}

// work carries out commands in the order they came.
func (a *Agent) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-a.cmds:
			var err error
			switch x := c.Cmd.(type) {
			case *pcspb.NodeCommand_CreateReplica:
				err = a.h.CreateReplica(ctx, x.CreateReplica)
			case *pcspb.NodeCommand_DropReplica:
				err = a.h.DropReplica(ctx, x.DropReplica)
			case *pcspb.NodeCommand_LoadSchema:
				err = a.h.LoadSchema(ctx, x.LoadSchema)
			case *pcspb.NodeCommand_SplitShard:
				if sp, ok := a.h.(Splitter); ok {
					if err = sp.SplitShard(ctx, x.SplitShard); err == nil {
						a.Kick()
					}
				}
			case *pcspb.NodeCommand_SetConfig:
				if cf, ok := a.h.(Configurer); ok {
					err = cf.SetConfig(ctx, x.SetConfig.GetSettings())
				}
			case *pcspb.NodeCommand_MergeShards:
				if m, ok := a.h.(Merger); ok {
					if err = m.MergeShards(ctx, x.MergeShards); err == nil {
						a.Kick()
					}
				}
			}
			if err != nil {
				a.log.Warn("command failed", "cmd", c.String(), "err", err)
			}
		}
	}
}

// grant lets the node serve a shard as primary at term until the monotonic reading until (ns
// since origin).
type grant struct {
	term  uint64
	until int64
}

// Granted reports whether the node holds a live grant to serve shard as primary at term.
func (a *Agent) Granted(shard, term uint64) bool {
	a.grants.RLock()
	g, ok := a.grants.m[shard]
	a.grants.RUnlock()
	return ok && g.term == term && int64(time.Since(a.origin)) < g.until
}

// renew records the grants of a heartbeat answer: claimed (shard -> term the heartbeat
// reported it led at) except denied, and the explicit grants, each until until. A grant of a
// newer term replaces an older one; expired grants are let go.
func (a *Agent) renew(claimed map[uint64]uint64, resp *pcspb.HeartbeatResponse, until int64) {
	denied := make(map[uint64]bool, len(resp.Denied))
	for _, id := range resp.Denied {
		denied[id] = true
	}
	now := int64(time.Since(a.origin))
	a.grants.Lock()
	defer a.grants.Unlock()
	if a.grants.m == nil {
		a.grants.m = map[uint64]grant{}
	}
	set := func(shard, term uint64) {
		if g, ok := a.grants.m[shard]; ok && (g.term > term || (g.term == term && g.until >= until)) {
			return
		}
		a.grants.m[shard] = grant{term: term, until: until}
	}
	for id, term := range claimed {
		if !denied[id] {
			set(id, term)
		}
	}
	for _, g := range resp.Grants {
		set(g.ShardId, g.Term)
	}
	for id, g := range a.grants.m {
		if g.until <= now {
			delete(a.grants.m, id)
		}
	}
}

// NodeID is the id PCS assigned (0 before registration).
func (a *Agent) NodeID() uint64 { return a.nodeID.Load() }

// LeaseValid reports whether the node's lease is valid: PCS counts the node alive. It does not
// let the node serve any shard as primary (Granted does).
func (a *Agent) LeaseValid() bool { return int64(time.Since(a.origin)) < a.leaseUntil.Load() }

// SetSilent makes the agent stop sending heartbeats (tests: a node that is alive but cut off).
func (a *Agent) SetSilent(silent bool) {
	a.mu.Lock()
	a.silent = silent
	a.mu.Unlock()
}

func (a *Agent) isSilent() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.silent
}

// Run registers the node and heartbeats until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.c.Close()
	for a.NodeID() == 0 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := a.c.RegisterNode(rctx, a.cfg.Address, a.cfg.Labels, a.cfg.CapacityBytes)
		cancel()
		if err == nil && a.cfg.ClusterID == "" && resp.ClusterId != "" && a.cfg.OnClusterID != nil {
			if err = a.cfg.OnClusterID(resp.ClusterId); err != nil {
				return fmt.Errorf("nodeagent: keeping the cluster id: %w", err)
			}
		}
		if err == nil {
			a.c.SetClusterID(resp.ClusterId)
			a.nodeID.Store(resp.NodeId)
			a.log.Info("registered", "node", resp.NodeId, "cluster_id", resp.ClusterId)
			break
		}
		if errors.Is(err, client.ErrClusterMismatch) {
			return fmt.Errorf("nodeagent: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn("registering", "err", err)
		if !sleep(ctx, a.cfg.Interval) {
			return ctx.Err()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.work(ctx) }()
	defer wg.Wait()
	for ctx.Err() == nil {
		err := a.stream(ctx)
		if ctx.Err() != nil {
			break
		}
		a.log.Debug("heartbeat stream ended", "err", err)
		if !sleep(ctx, min(a.cfg.Interval, 100*time.Millisecond)) {
			break
		}
	}
	return ctx.Err()
}

// answerTimeout is how long a heartbeat waits for its answer: two intervals, within
// [200ms, 1s] — well inside the node lease (4 intervals by default).
func (a *Agent) answerTimeout() time.Duration {
	return min(max(2*a.cfg.Interval, 200*time.Millisecond), time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// stream runs one heartbeat stream until it fails.
func (a *Agent) stream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := a.c.HeartbeatStream(sctx)
	if err != nil {
		return err
	}
	tick := time.NewTicker(a.cfg.Interval)
	defer tick.Stop()
	var last time.Time
	for {
		if !a.isSilent() {
			last = time.Now()
			if err := a.beat(sctx, st); err != nil {
				return err
			}
		}
		select {
		case <-sctx.Done():
			return sctx.Err()
		case <-tick.C:
		case <-a.kick:
			// Kicks come from requests that found no grant or no replica: at most one early
			// heartbeat per minKickSpacing, however many ask, so a waiting shard does not
			// flood PCS.
			if !sleep(sctx, minKickSpacing-time.Since(last)) {
				return sctx.Err()
			}
		}
	}
}

// minKickSpacing is the least time between a heartbeat and one sent early on a Kick.
const minKickSpacing = 20 * time.Millisecond

// beat sends one heartbeat, waits for the answer and carries out its commands.
func (a *Agent) beat(ctx context.Context, st pcspb.PCS_HeartbeatClient) error {
	a.seq++
	// The held list first: a shard made between the two calls (the new half of a split) is then
	// in the stats but not yet in the list, and waits for the next heartbeat; the other way round,
	// PCS would see a held shard with no stats and drop it as foreign.
	held := a.h.HeldShards()
	stats, shardStats := a.h.Stats()
	hb := &pcspb.NodeHeartbeat{NodeId: a.NodeID(), Seq: a.seq, Stats: stats, HeldShards: held, ShardStats: shardStats}
	claimed := map[uint64]uint64{}
	for _, st := range shardStats {
		if st.Primary {
			claimed[st.ShardId] = st.Term
		}
	}
	tSend := time.Since(a.origin)
	if err := st.Send(hb); err != nil {
		return err
	}
	// An answer that does not come within answerTimeout (a paused or cut-off primary) ends the
	// stream; the next one goes to whichever PCS is primary then, in time to keep the lease.
	type recv struct {
		resp *pcspb.HeartbeatResponse
		err  error
	}
	got := make(chan recv, 1)
	go func() {
		resp, err := st.Recv()
		got <- recv{resp, err}
	}()
	var resp *pcspb.HeartbeatResponse
	timer := time.NewTimer(a.answerTimeout())
	defer timer.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			return r.err
		}
		resp = r.resp
	case <-timer.C:
		a.c.ForgetPrimary()
		return fmt.Errorf("nodeagent: no answer to heartbeat %d within %v", hb.Seq, a.answerTimeout())
	case <-ctx.Done():
		return ctx.Err()
	}
	if resp.Seq != hb.Seq {
		return fmt.Errorf("nodeagent: answer to heartbeat %d came for %d", hb.Seq, resp.Seq)
	}
	until := int64(tSend) + int64(time.Duration(resp.LeaseMs)*time.Millisecond)
	a.renew(claimed, resp, until)
	if until > a.leaseUntil.Load() {
		a.leaseUntil.Store(until)
	}
	if a.cfg.OnBeat != nil {
		a.cfg.OnBeat()
	}
	for _, c := range resp.Commands {
		select {
		case a.cmds <- c:
		default:
			a.log.Debug("command queue full; PCS sends it again", "cmd", c.String())
		}
	}
	return nil
}
