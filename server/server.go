// Package server is the composition root of a PCS node: it builds the Raft group, the metadata
// state machine, the timestamp oracle and the id allocator, serves them over gRPC and HTTP, and
// owns the node's life cycle (start, primary takeover, stop).
//
// Node states (DESIGN §3): election while no primary is known; recovery while this node has not
// caught up (a new primary: until its barrier has applied every earlier entry and it has reloaded
// and re-persisted the TSO window; a follower: until it has applied the commit index it saw
// when the primary changed); running otherwise.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/dirlock"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/raftgroup"
	"github.com/postdb/pcs/internal/rpclimits"
	"github.com/postdb/pcs/internal/tracing"
	"github.com/postdb/pcs/internal/tso"
)

// Server is a running PCS node.
type Server struct {
	cfg     Config
	events  *eventLog       // the console's event log
	heat    *heatmap        // the console's key heatmap (sampled while primary)
	proxyTr *http.Transport // console requests relayed to the primary
	log     *slog.Logger
	clk     clock.Clock
	fsm     *meta.FSM
	group   *raftgroup.Group
	raft    *raft.Raft
	oracle  *tso.Oracle
	metrics *metrics
	peers   *peerConns

	grpcSrv  *grpc.Server
	grpcLn   net.Listener
	httpSrv  *http.Server
	httpLn   net.Listener
	leaseDur time.Duration

	// leaseUntil is the monotonic reading (clk.Mono, ns) until which this node may act as
	// primary without asking a quorum: the start of its last confirmed round plus leaseDur.
	leaseUntil atomic.Int64
	// ready is set once a new primary has finished its takeover; cleared when it loses office.
	ready atomic.Bool
	// downAfter: a data node silent this long is down (lost): Config.Nodes.DownAfter, at
	// least NodeLease + NodeLeaseMargin.
	downAfter time.Duration
	// readySince: when this member last became a ready primary (unix ns). membersVersion: the
	// lowest command version the members reported at the version loop's last look (0: not
	// every member answered).
	readySince     atomic.Int64
	membersVersion atomic.Uint32
	// transferring blocks the TSO while a graceful transfer of the primary is under way.
	transferring atomic.Bool
	// caughtUp is set once a follower has applied what was committed when the primary changed.
	caughtUp atomic.Bool

	ids struct {
		sync.Mutex
		blocks map[string]*idBlock
	}
	extendCh chan struct{}
	live     *cluster.Registry
	nodeCmds *nodeCommands
	// placeLoads: the nodes' loads new shards are placed by (cached: computing them reads every shard).
	placeLoads placeLoads
	// ddlKick wakes the DDL loop before its next tick (a partition was added: its replicas'
	// commands should be ready for the nodes' next heartbeat).
	ddlKick chan struct{}
	// nodeConf caches the parsed node settings (nodeconfig.go).
	nodeConf atomic.Pointer[parsedNodeConfig]
	fences   *fences
	shardReq shardRequests
	sched    scheduling
	needJoin bool
	dirLock  *dirlock.Lock
	ident    *raftgroup.Identity

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

type idBlock struct{ next, end uint64 }

// New opens the node's storage, starts Raft (bootstrapping or joining as configured) and binds
// its listeners. Serving starts with Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.Name)
	if cfg.Tracing == nil {
		cfg.Tracing = tracing.New("pcs")
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		clk:      clock.NewReal(),
		extendCh: make(chan struct{}, 1),
		events:   newEventLog(),
		heat:     newHeatmap(),
	}
	s.proxyTr = s.newProxyTransport()
	if cfg.Clock != nil {
		s.clk = cfg.Clock
	}
	s.peers = newPeerConns(s.peerCredentials(), cfg.Tracing.DialOption())
	s.ids.blocks = map[string]*idBlock{}
	// One meaning of down everywhere (pcsctl, the scheduler's view, DDL): silent past
	// down-after and never before its lease and the margin have lapsed, when failover acts.
	s.downAfter = max(cfg.Nodes.DownAfter, cfg.NodeLease+cfg.NodeLeaseMargin)
	nodes := cfg.Nodes
	nodes.DownAfter = s.downAfter
	s.live = cluster.New(s.clk, nodes)
	s.nodeCmds = newNodeCommands()
	s.ddlKick = make(chan struct{}, 1)
	s.leaseDur = time.Duration(float64(cfg.Raft.HeartbeatTimeout) * cfg.LeaseRatio)
	s.oracle = tso.NewOracle(s.clk)
	s.metrics = newMetrics(s)
	s.fences = newFences(cfg.NodeLease + cfg.NodeLeaseMargin)
	s.fsm = meta.New(meta.Options{History: cfg.History, Logger: log, ObserveApply: s.metrics.observeApply,
		OnPrimaryChange: s.primaryChanged, OnRestore: func() { s.fences.restored(s.clk.Mono()) }, OnEvent: s.events.add})

	var err error
	if err = os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if s.dirLock, err = dirlock.Acquire(cfg.DataDir); err != nil {
		return nil, err
	}
	fail := func(err error) (*Server, error) {
		s.closeListeners()
		s.peers.close()
		s.dirLock.Release()
		return nil, err
	}
	hasState, err := raftgroup.HasState(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	s.grpcLn, s.httpLn = cfg.ClientListener, cfg.HTTPListener
	if s.grpcLn == nil {
		if s.grpcLn, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
			return fail(fmt.Errorf("client address: %w", err))
		}
	}
	if s.httpLn == nil && cfg.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fail(fmt.Errorf("http address: %w", err))
		}
	}
	if s.ident, err = raftgroup.OpenIdentity(cfg.DataDir); err != nil {
		return fail(err)
	}
	if hasState && len(cfg.Join) > 0 && s.ident.ID() != 0 {
		// Restarted with --join (a service unit keeps its flags): fine for a member of that
		// cluster, refused for a node holding another cluster's data.
		if other := s.probeClusterID(cfg.Join); other != "" && other != s.ClusterID() {
			return fail(fmt.Errorf("%w: %s holds data of cluster %s, but --join %s is cluster %s; start with an empty data dir to join it",
				ErrClusterMismatch, cfg.DataDir, s.ClusterID(), strings.Join(cfg.Join, ","), other))
		}
	}
	bootstrap := !hasState && len(cfg.Join) == 0
	if bootstrap && s.ident.ID() == 0 {
		if err := s.ident.Adopt(newClusterID(cfg.InitialCluster)); err != nil {
			return fail(err)
		}
	}
	rc := cfg.Raft
	rc.Name, rc.Dir, rc.Logger, rc.Identity = cfg.Name, cfg.DataDir, log, s.ident
	if t := cfg.TLS; t != nil {
		rc.TLS = &raftgroup.TLS{Source: t.Source, Allow: t.AllowedPeers}
	}
	rc.ForceNewCluster = cfg.ForceNewCluster && hasState
	if rc.ForceNewCluster {
		log.Warn("forcing a new cluster of this member alone from its data")
	}
	if bootstrap {
		rc.Bootstrap = func(local raft.ServerAddress) raft.Configuration {
			peers := cfg.InitialCluster
			if len(peers) == 0 {
				peers = []Peer{{Name: cfg.Name, PeerAddr: string(local)}}
			}
			var servers []raft.Server
			for _, p := range peers {
				addr := raft.ServerAddress(p.PeerAddr)
				if p.Name == cfg.Name {
					addr = local
				}
				servers = append(servers, raft.Server{ID: raft.ServerID(p.Name), Address: addr, Suffrage: raft.Voter})
			}
			return raft.Configuration{Servers: servers}
		}
	}
	s.group, err = raftgroup.Open(rc, s.fsm)
	if err != nil {
		return fail(err)
	}
	s.raft = s.group.Raft
	if bootstrap {
		log.Info("bootstrapped cluster", "members", max(len(cfg.InitialCluster), 1), "cluster_id", s.ClusterID())
	}
	s.grpcSrv = newGRPCServer(s)
	if s.httpLn != nil {
		var h http.Handler
		s.httpLn, h = s.tlsHTTP(s.httpLn, s.httpHandler())
		s.httpSrv = rpclimits.HTTP(h)
	}
	s.needJoin = !hasState && len(cfg.Join) > 0
	return s, nil
}

func (s *Server) closeListeners() {
	if s.grpcLn != nil {
		s.grpcLn.Close()
	}
	if s.httpLn != nil {
		s.httpLn.Close()
	}
}

// Start serves gRPC and HTTP and starts the background loops. It returns at once.
func (s *Server) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.tracingLoop(ctx) }()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.heatmapLoop(ctx) }()
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("grpc server", "err", err)
		}
	}()
	go func() { defer s.wg.Done(); s.leadershipLoop(ctx) }()
	go func() { defer s.wg.Done(); s.followerLoop(ctx) }()
	if s.httpSrv != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http server", "err", err)
			}
		}()
	}
	if s.needJoin {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.join(ctx) }()
	}
	s.log.Info("serving", "client_addr", s.ClientAddr(), "peer_addr", s.PeerAddr(), "http_addr", s.HTTPAddr(),
		"client_bind", s.grpcLn.Addr().String(), "peer_bind", s.group.BoundAddr())
}

// Run starts the server and blocks until ctx ends, then stops it.
func (s *Server) Run(ctx context.Context) error {
	s.Start()
	<-ctx.Done()
	return s.Close()
}

// Close stops serving and shuts Raft down. It is safe to call more than once.
func (s *Server) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.ready.Store(false)
	s.oracle.Stop()
	stopped := make(chan struct{})
	go func() { s.grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		s.grpcSrv.Stop()
	}
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.httpSrv.Shutdown(ctx)
		cancel()
	}
	err := s.group.Close()
	s.wg.Wait()
	s.peers.close()
	s.proxyTr.CloseIdleConnections()
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	s.cfg.Tracing.Shutdown(tctx)
	tcancel()
	s.dirLock.Release()
	return err
}

// ClusterID is the id of this node's cluster ("" while a joining node has not learnt it).
func (s *Server) ClusterID() string { return raftgroup.FormatClusterID(s.ident.ID()) }

// probeClusterID asks the endpoints for their cluster id ("" if none answers).
func (s *Server) probeClusterID(endpoints []string) string {
	for _, ep := range endpoints {
		cli, err := s.peers.get(ep)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, &pcspb.StatusRequest{})
		cancel()
		if err == nil && st.ClusterId != "" {
			return st.ClusterId
		}
	}
	return ""
}

// newClusterID derives the id of a new cluster: from the initial members, so that every
// member bootstrapping the same cluster computes the same id, and with a random part for a
// single node bootstrapping alone.
func newClusterID(initial []Peer) uint64 {
	h := sha256.New()
	h.Write([]byte("pcs-cluster\x00"))
	if len(initial) == 0 {
		var r [16]byte
		_, _ = rand.Read(r[:])
		h.Write(r[:])
	}
	peers := slices.Clone(initial)
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range peers {
		fmt.Fprintf(h, "%s=%s\x00", p.Name, p.PeerAddr)
	}
	id := binary.BigEndian.Uint64(h.Sum(nil))
	return max(id, 1)
}

// ClientAddr is the gRPC address others dial: the advertised one, else the bound one.
func (s *Server) ClientAddr() string {
	if s.cfg.AdvertiseClientAddr != "" {
		return s.cfg.AdvertiseClientAddr
	}
	return s.grpcLn.Addr().String()
}

// PeerAddr is the Raft address others dial: the advertised one, else the bound one.
func (s *Server) PeerAddr() string { return s.group.LocalAddr() }

// HTTPAddr is the HTTP address others dial (advertised, else bound), or "" without HTTP.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	if s.cfg.AdvertiseHTTPAddr != "" {
		return s.cfg.AdvertiseHTTPAddr
	}
	return s.httpLn.Addr().String()
}

// Name is the member name.
func (s *Server) Name() string { return s.cfg.Name }

// FSM exposes the state machine (tests check digests and invariants through it).
func (s *Server) FSM() *meta.FSM { return s.fsm }

// Raft exposes the Raft instance (tests and diagnostics).
func (s *Server) Raft() *raft.Raft { return s.raft }

// State is the node state.
func (s *Server) State() pcspb.NodeState {
	if s.raft.State() == raft.Leader {
		if s.ready.Load() {
			return pcspb.NodeState_NODE_STATE_RUNNING
		}
		return pcspb.NodeState_NODE_STATE_RECOVERY
	}
	if _, id := s.raft.LeaderWithID(); id == "" {
		return pcspb.NodeState_NODE_STATE_ELECTION
	}
	if s.caughtUp.Load() {
		return pcspb.NodeState_NODE_STATE_RUNNING
	}
	return pcspb.NodeState_NODE_STATE_RECOVERY
}

// isPrimary reports whether this node is the primary and has finished its takeover.
func (s *Server) isPrimary() bool {
	return s.ready.Load() && s.raft.State() == raft.Leader
}

// primary returns the known primary's name and client address ("" if unknown).
func (s *Server) primary() (name, addr string) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", ""
	}
	if string(id) == s.cfg.Name {
		return s.cfg.Name, s.ClientAddr()
	}
	if m := s.fsm.Members()[string(id)]; m != nil {
		return string(id), m.ClientAddr
	}
	return string(id), ""
}

func (s *Server) notPrimary() error {
	name, addr := s.primary()
	return &notPrimaryError{name: name, addr: addr}
}

// leadershipLoop reacts to this node winning or losing the primary role.
func (s *Server) leadershipLoop(ctx context.Context) {
	var (
		termCancel context.CancelFunc
		termWG     sync.WaitGroup
	)
	stopTerm := func() {
		if termCancel != nil {
			termCancel()
			termWG.Wait()
			termCancel = nil
		}
		s.ready.Store(false)
		s.leaseUntil.Store(0)
		s.transferring.Store(false)
		s.oracle.Stop()
		s.ids.Lock()
		clear(s.ids.blocks)
		s.ids.Unlock()
	}
	defer stopTerm()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-s.raft.LeaderCh():
			stopTerm()
			if !leader {
				s.log.Info("lost the primary role")
				continue
			}
			s.log.Info("won the primary role; taking over")
			tctx, cancel := context.WithCancel(ctx)
			termCancel = cancel
			termWG.Add(1)
			go func() { defer termWG.Done(); s.primaryTerm(tctx) }()
		}
	}
}

// primaryTerm runs while this node is the primary: the takeover, then the lease keeper and
// the TSO window keeper.
func (s *Server) primaryTerm(ctx context.Context) {
	start := time.Now()
	for {
		err := s.takeover(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("takeover failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.live.Reset() // live state is rebuilt from heartbeats; the warm-up starts now
	s.nodeCmds.reset()
	s.placeLoads.reset()
	s.readySince.Store(time.Now().UnixNano())
	s.membersVersion.Store(0)
	s.ready.Store(true)
	s.metrics.failovers.Inc()
	s.log.Info("primary ready", "took", time.Since(start))
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); s.leaseLoop(ctx) }()
	go func() { defer wg.Done(); s.ddlLoop(ctx) }()
	go func() { defer wg.Done(); s.scheduleLoop(ctx) }()
	go func() { defer wg.Done(); s.versionLoop(ctx) }()
	s.windowLoop(ctx)
	wg.Wait()
}

// takeover: barrier (every earlier entry applied), reload and re-persist the TSO window, record
// this member's addresses.
func (s *Server) takeover(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	if err := waitFuture(bctx, s.raft.Barrier(s.cfg.WriteTimeout)); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	if err := s.renewLease(); err != nil {
		return err
	}
	saved := int64(s.fsm.TsoWindow())
	phys := s.oracle.Reset(saved)
	limit := phys + s.cfg.TSOWindow.Milliseconds()
	if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_TsoWindow{TsoWindow: &pcspb.CmdTsoWindow{PhysicalMs: uint64(limit)}}}); err != nil {
		s.oracle.Stop()
		return fmt.Errorf("persisting tso window: %w", err)
	}
	s.oracle.SetLimit(limit)
	if err := s.registerSelf(ctx); err != nil {
		return fmt.Errorf("recording member: %w", err)
	}
	if s.ident.ID() == 0 {
		// Data from before cluster ids: the primary names the cluster; members learn the id
		// at their next Raft contact.
		if err := s.ident.Adopt(newClusterID(nil)); err != nil {
			return err
		}
		s.log.Info("cluster id assigned", "cluster_id", s.ClusterID())
	}
	return nil
}

// renewLease confirms leadership with a quorum round and extends the lease from its start. The
// round is given an election timeout: a quorum that does not answer by then is not there.
func (s *Server) renewLease() error {
	t0 := s.clk.Mono()
	ctx, cancel := context.WithTimeout(context.Background(), max(s.cfg.Raft.ElectionTimeout, 2*s.cfg.Raft.HeartbeatTimeout))
	defer cancel()
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		s.leaseUntil.Store(0)
		return fmt.Errorf("verifying leadership: %w", err)
	}
	s.leaseUntil.Store(int64(t0 + s.leaseDur))
	return nil
}

func (s *Server) leaseValid() bool {
	return int64(s.clk.Mono()) < s.leaseUntil.Load()
}

func (s *Server) leaseLoop(ctx context.Context) {
	t := time.NewTicker(s.leaseDur / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.renewLease(); err != nil {
				s.log.Debug("lease renewal failed", "err", err)
			}
		}
	}
}

// windowLoop keeps the persisted TSO window at least a third of TSOWindow ahead.
func (s *Server) windowLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TSOWindow / 10)
	defer t.Stop()
	window := s.cfg.TSOWindow.Milliseconds()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.extendCh:
		}
		phys, limit, serving := s.oracle.Window()
		if !serving {
			continue
		}
		base := max(s.clk.WallMs(), phys)
		if limit-base > window*2/3 {
			continue
		}
		next := base + window
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_TsoWindow{TsoWindow: &pcspb.CmdTsoWindow{PhysicalMs: uint64(next)}}}); err != nil {
			s.log.Warn("extending tso window", "err", err)
			continue
		}
		s.oracle.SetLimit(next)
	}
}

// followerLoop tracks whether this node, as a follower, has caught up with the primary, and
// keeps this member's addresses recorded in the metadata.
func (s *Server) followerLoop(ctx context.Context) {
	obsCh := make(chan raft.Observation, 16)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	// A follower is caught up once it has applied a commit index of the primary's term: after
	// a whole group restarts, the commit index a new primary first sends is stale (it has not
	// committed in its term yet), and the members would claim to be ready with their logs
	// still to apply.
	var (
		target uint64
		inTerm bool // target is a commit index of the current term
	)
	recheck := func() {
		s.caughtUp.Store(false)
		target, inTerm = s.raft.CommitIndex(), false
	}
	recheck()
	for {
		var changed <-chan struct{}
		if !s.caughtUp.Load() {
			if ci := s.raft.CommitIndex(); !inTerm && s.group.CommittedInTerm(ci) {
				target, inTerm = max(target, ci), true
			}
			if pos := s.fsm.Position(); inTerm && pos.AppliedIndex >= target {
				if _, id := s.raft.LeaderWithID(); id != "" {
					s.caughtUp.Store(true)
					if err := s.registerSelf(ctx); err != nil {
						s.log.Debug("recording member", "err", err)
					}
				}
			}
			changed = s.fsm.Changed()
		}
		select {
		case <-ctx.Done():
			return
		case o := <-obsCh:
			recheck()
			if lo, ok := o.Data.(raft.LeaderObservation); ok {
				if lo.LeaderID == "" {
					s.events.observe("primary", s.cfg.Name+" sees no primary", time.Now())
				} else {
					s.events.observe("primary", s.cfg.Name+" sees "+string(lo.LeaderID)+" as primary", time.Now())
				}
			}
		case <-changed:
		case <-tick.C:
			if _, id := s.raft.LeaderWithID(); id == "" {
				s.caughtUp.Store(false)
			} else if s.State() == pcspb.NodeState_NODE_STATE_RUNNING {
				if err := s.registerSelf(ctx); err != nil {
					s.log.Debug("recording member", "err", err)
				}
			}
		}
	}
}

// registerSelf records this node's addresses in the metadata if they are not there yet.
func (s *Server) registerSelf(ctx context.Context) error {
	me := &pcspb.Member{Name: s.cfg.Name, PeerAddr: s.PeerAddr(), ClientAddr: s.ClientAddr(), HttpAddr: s.HTTPAddr()}
	if m := s.fsm.Members()[s.cfg.Name]; m != nil && m.PeerAddr == me.PeerAddr && m.ClientAddr == me.ClientAddr && m.HttpAddr == me.HttpAddr {
		return nil
	}
	if !s.inConfiguration() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	cmd := &pcspb.Command{Op: &pcspb.Command_SetMember{SetMember: &pcspb.CmdSetMember{Member: me}}}
	if s.raft.State() == raft.Leader {
		_, err := s.apply(ctx, cmd)
		return err
	}
	// A follower cannot propose; ask the primary through the internal member write.
	return s.forwardSetMember(ctx, me)
}

func (s *Server) inConfiguration() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == s.cfg.Name {
			return true
		}
	}
	return false
}

// apply proposes a command on the primary and waits for its result.
func (s *Server) apply(ctx context.Context, cmd *pcspb.Command) (res *meta.Result, err error) {
	ctx, span := s.span(ctx, "pcs.raft.apply", attribute.String("command", commandName(cmd)))
	defer func() { endSpan(span, err) }()
	cmd.ProposedAtMs = uint64(max(s.clk.WallMs(), 0))
	data, err := meta.EncodeCommand(cmd, s.fsm.ClusterVersion())
	if err != nil {
		return nil, err
	}
	timeout := s.cfg.WriteTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	start := time.Now()
	f := s.raft.Apply(data, timeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := waitFuture(wctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, s.notPrimary()
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		case wctx.Err() != nil:
			// Proposed, not yet committed: it may still be.
			return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return nil, err
	}
	s.metrics.proposeSeconds.Observe(time.Since(start).Seconds())
	res = f.Response().(*meta.Result)
	if res.Duplicate {
		s.metrics.duplicates.Inc()
	}
	return res, res.Err
}

// join asks a running cluster to add this node, retrying until it is added or ctx ends.
func (s *Server) join(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		err := s.requestJoin(ctx)
		if err == nil {
			s.log.Info("joined cluster")
			return
		}
		s.log.Warn("join failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
