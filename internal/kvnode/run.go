package kvnode

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/netaddr"
	"github.com/postdb/pcs/internal/raftgroup"
	"github.com/postdb/pcs/internal/roles"
	"github.com/postdb/pcs/internal/rpclimits"
	"github.com/postdb/pcs/internal/rpcmetrics"
	"github.com/postdb/pcs/internal/tracing"
	"github.com/postdb/pcs/nodeagent"
	"github.com/postdb/pcs/pcstls"
)

// Config configures a running data node.
type Config struct {
	// DataDir holds the Pebble database.
	DataDir string
	// Addr is the KV service's listen address; it is also the node's identity at PCS.
	Addr string
	// AdvertiseAddr, if set, is the address PCS, clients and other nodes dial (and the node's
	// identity at PCS) instead of the bound one.
	AdvertiseAddr string
	// Listener, if set, is used instead of binding Addr.
	Listener net.Listener
	// Endpoints are PCS client addresses.
	Endpoints []string
	Labels    map[string]string
	// CapacityBytes is the storage the node offers PCS (balance weighs nodes by it). Default:
	// the size of the disk holding DataDir.
	CapacityBytes uint64
	// HeartbeatInterval, default nodeagent.DefaultInterval.
	HeartbeatInterval time.Duration
	// SplitSize: a shard this node leads whose live keys and values take more bytes than this is
	// split (the node asks PCS for the new shard's id, then splits at the middle of its data).
	// Default 64 MiB; checked every SplitCheckInterval (default 10s).
	SplitSize          uint64
	SplitCheckInterval time.Duration
	Logger             *slog.Logger
	// LogLevel, if set, is the level of Logger's handler: PCS may change it (node setting
	// log-level).
	LogLevel *slog.LevelVar
	// Tracing (nil: the node's own, off until PCS's trace-ratio setting turns it on) traces
	// KV requests, replication and log writes.
	Tracing *tracing.Tracing
	// HTTPAddr, if set, serves /metrics (Prometheus) there.
	HTTPAddr string
	// WrapPeer, if set, wraps how the node reaches other data nodes (fault injection in tests).
	WrapPeer func(Peer) Peer
	// WrapManager, if set, wraps how the node asks PCS for shard metadata and configuration
	// changes (fault injection in tests; the heartbeats are the agent's).
	WrapManager func(Manager) Manager
	// ReplicateTimeout bounds how long this node, as a primary, waits for a replica to persist
	// a write before it has PCS take the replica out. Default ReplicateTimeout.
	ReplicateTimeout time.Duration
	// SyncStall, if set, is called before every fsync of the Pebble database: the chaos
	// suite's disk-stall hook. Nil in production.
	SyncStall func()
	// TLS, if set, turns mutual TLS on for the KV service, HTTP and the node's calls to PCS and
	// to other data nodes. Nil is plaintext.
	TLS *TLS
}

// TLS is a data node's mutual TLS: its identity, and who may connect. AllowedNodes may
// replicate to this node (and read and write rows); AllowedClients may read and write rows.
// HTTP's /metrics takes either; /health needs no certificate. An empty list permits every
// certificate of the CA.
type TLS struct {
	Source                       *pcstls.Source
	AllowedNodes, AllowedClients *pcstls.Allow
	// AllowedAdmins (optional) may read and write rows and metrics as clients may.
	AllowedAdmins *pcstls.Allow
	// AllowAnyOfCA lets any certificate of the CA act as node and client; otherwise both
	// lists must name someone.
	AllowAnyOfCA bool
	// PCSNames are the identities PCS members' certificates must name (default
	// client.DefaultPCSNames).
	PCSNames []string
}

// Validate checks that both lists name someone, or that any certificate of the CA was allowed
// explicitly.
func (t *TLS) Validate() error {
	if t.AllowAnyOfCA {
		return nil
	}
	if t.AllowedNodes == nil || len(t.AllowedNodes.Patterns) == 0 || t.AllowedClients == nil || len(t.AllowedClients.Patterns) == 0 {
		return errors.New("kvnode: tls: --tls-allowed-nodes and --tls-allowed-clients must name identities, or say --tls-allow-any-of-ca to let every certificate of the CA act in every role")
	}
	return nil
}

// lists are the node's allow lists by role (internal/roles): admins and peers have no call here.
func (t *TLS) lists() roles.Lists {
	l := roles.Lists{Client: t.AllowedClients, Node: t.AllowedNodes, Admin: t.AllowedAdmins}
	if t.AllowAnyOfCA {
		l.Client, l.Node = cmp.Or(l.Client, &pcstls.Allow{Kind: "clients"}), cmp.Or(l.Node, &pcstls.Allow{Kind: "nodes"})
	}
	return l
}

// serverOptions are the gRPC server's TLS credentials and the interceptors that check who calls.
func (t *TLS) serverOptions(log *slog.Logger) []grpc.ServerOption {
	if t == nil {
		return nil
	}
	unary, stream := t.lists().Interceptors("KV")
	return []grpc.ServerOption{
		grpc.Creds(t.Source.ServerCredentials(func(remote net.Addr, err error) {
			if log != nil {
				log.Warn("refused a client connection", "remote", remote.String(), "err", err)
			}
		})),
		grpc.ChainUnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream),
	}
}

// Peer returns the KV client of another data node.
type Peer func(ctx context.Context, node uint64) (pcspb.KVClient, error)

// Manager is what a node asks of PCS directly, besides its heartbeats.
type Manager interface {
	// Shard returns a shard's current metadata.
	Shard(ctx context.Context, id uint64) (*pcspb.Shard, error)
	// RemoveReplicas asks, as a shard's primary, to take replicas that did not persist a write
	// out of its configuration, and returns the new one.
	RemoveReplicas(ctx context.Context, req *pcspb.RemoveReplicasRequest) (*pcspb.Shard, error)
}

// pcsManager is the Manager of a PCS client.
type pcsManager struct{ c *client.Client }

func (m pcsManager) Shard(ctx context.Context, id uint64) (*pcspb.Shard, error) {
	resp, err := m.c.GetShardByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return resp.Shard, nil
}

func (m pcsManager) RemoveReplicas(ctx context.Context, req *pcspb.RemoveReplicasRequest) (*pcspb.Shard, error) {
	return m.c.RemoveReplicas(ctx, req)
}

func tlsSource(t *TLS) *pcstls.Source {
	if t == nil {
		return nil
	}
	return t.Source
}

// DefaultSplitSize is the default size at which a node splits a shard.
const DefaultSplitSize = 64 << 20

// Server is a running data node: store, KV service and agent.
type Server struct {
	cfg    Config
	Store  *Store
	Node   *Node
	Agent  *nodeagent.Agent
	grpc   *grpc.Server
	ln     net.Listener
	http   *http.Server // nil: no HTTP
	httpLn net.Listener
	pcs    *client.Client // reaches PCS, and the other data nodes for replication
	wg     sync.WaitGroup
	stop   context.CancelFunc

	splitChecks atomic.Uint64 // rounds of splitLoop, for tests

	closeOnce sync.Once
	closeErr  error
}

func pcsNames(t *TLS) []string {
	if t == nil {
		return nil
	}
	return t.PCSNames
}

// agentGrants reads the grants of the agent made after the node (which needs the node).
type agentGrants struct{ a **nodeagent.Agent }

func (g agentGrants) Granted(shard, term uint64) bool {
	return *g.a != nil && (*g.a).Granted(shard, term)
}
func (g agentGrants) LeaseValid() bool { return *g.a != nil && (*g.a).LeaseValid() }
func (g agentGrants) Kick() {
	if *g.a != nil {
		(*g.a).Kick()
	}
}

// Start opens the store, serves the KV service and starts the agent.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" || len(cfg.Endpoints) == 0 {
		return nil, errors.New("kvnode: data dir and PCS endpoints are required")
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.Validate(); err != nil {
			return nil, err
		}
	}
	if cfg.Listener == nil {
		if err := netaddr.Check("address", cfg.Addr, cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("kvnode: %w", err)
		}
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("kvnode: listening on %s: %w", cfg.Addr, err)
		}
	}
	store, err := open(cfg.DataDir, cfg.Logger, cfg.SyncStall)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, Store: store, ln: ln}
	var copts []client.Option
	if t := cfg.TLS; t != nil {
		// Other data nodes are whom this node lets replicate to it.
		var nodes []string
		if t.AllowedNodes != nil {
			nodes = t.AllowedNodes.Patterns
		}
		copts = append(copts, client.WithTLS(t.Source), client.WithServerNames(t.PCSNames, nodes))
	}
	if cfg.Tracing == nil {
		cfg.Tracing = tracing.New("pcsnode")
	}
	copts = append(copts, client.WithTracing(cfg.Tracing.Provider(), cfg.Tracing.Propagator()))
	pcs, err := client.New(cfg.Endpoints, copts...)
	if err != nil {
		store.Close()
		ln.Close()
		return nil, err
	}
	s.pcs = pcs
	// The cluster this node registered in, kept with its data (as a PCS member keeps its own).
	ident, err := raftgroup.OpenIdentity(cfg.DataDir)
	if err != nil {
		store.Close()
		ln.Close()
		return nil, err
	}
	clusterID := raftgroup.FormatClusterID(ident.ID())
	pcs.SetClusterID(clusterID)
	var agent *nodeagent.Agent
	peer := Peer(pcs.NodeKV)
	if cfg.WrapPeer != nil {
		peer = cfg.WrapPeer(peer)
	}
	s.Node = NewNode(store, func() uint64 { return agent.NodeID() }, agentGrants{&agent}, peer, cfg.Logger)
	if cfg.ReplicateTimeout > 0 {
		s.Node.replicateTimeout = cfg.ReplicateTimeout
	}
	var mgr Manager = pcsManager{pcs}
	if cfg.WrapManager != nil {
		mgr = cfg.WrapManager(mgr)
	}
	s.Node.pcs = mgr
	s.Node.logLevel = cfg.LogLevel
	s.Node.tracing = cfg.Tracing
	advertise := ln.Addr().String()
	if cfg.AdvertiseAddr != "" {
		advertise = cfg.AdvertiseAddr
	}
	capacity := cfg.CapacityBytes
	if capacity == 0 {
		capacity = store.DiskTotal()
	}
	agent, err = nodeagent.New(nodeagent.Config{Endpoints: cfg.Endpoints, Address: advertise, Labels: cfg.Labels, CapacityBytes: capacity,
		Interval: cfg.HeartbeatInterval, Logger: cfg.Logger, ClusterID: clusterID, TLS: tlsSource(cfg.TLS), PCSNames: pcsNames(cfg.TLS),
		OnClusterID: func(id string) error {
			parsed, err := raftgroup.ParseClusterID(id)
			if err != nil {
				return err
			}
			pcs.SetClusterID(id)
			return ident.Adopt(parsed)
		}}, s.Node)
	if err != nil {
		store.Close()
		ln.Close()
		return nil, err
	}
	s.Agent = agent
	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			store.Close()
			ln.Close()
			return nil, fmt.Errorf("kvnode: listening on %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.Node.Registry(), promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
		mux.Handle("/debug/pprof/", s.Node.pprofHandler())
		var h http.Handler = mux
		if t := cfg.TLS; t != nil {
			hl, h = pcstls.HTTP(hl, h, t.Source, t.lists().HTTPCheck("HTTP pcsnode"))
		}
		s.http = rpclimits.HTTP(h)
		s.httpLn = hl
	}
	gopts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes)}, rpcmetrics.ServerOptions(s.Node.metrics.grpcSeconds)...)
	gopts = append(gopts, rpclimits.GRPC()...)
	gopts = append(gopts, cfg.Tracing.ServerOption())
	s.grpc = grpc.NewServer(append(gopts, cfg.TLS.serverOptions(cfg.Logger)...)...)
	pcspb.RegisterKVServer(s.grpc, s.Node)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if cfg.SplitSize == 0 {
		cfg.SplitSize = DefaultSplitSize
	}
	if cfg.SplitCheckInterval <= 0 {
		cfg.SplitCheckInterval = 10 * time.Second
	}
	if s.http != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.http.Serve(s.httpLn) }()
	}
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.catchUpLoop(ctx) }()
	go func() { defer s.wg.Done(); s.grpc.Serve(ln) }()
	go func() {
		defer s.wg.Done()
		if err := agent.Run(ctx); err != nil && ctx.Err() == nil && cfg.Logger != nil {
			cfg.Logger.Error("the node agent stopped: this node is not part of the cluster", "err", err)
		}
	}()
	go func() { defer s.wg.Done(); s.splitLoop(ctx, cfg.SplitSize, cfg.SplitCheckInterval, cfg.Logger) }()
	return s, nil
}

// catchUpLoop keeps the replicas and learners of the shards this node leads in line.
func (s *Server) catchUpLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Node.CatchUp(ctx)
		}
	}
}

// splitLoop splits the shards this node leads that have grown beyond size. Like TiKV's split
// check, a scan of the shard's live data decides, and it runs only when worth it: each time an
// eighth of size has been written to the shard since its last scan (a split counts the rows it
// gives the new shard as written to it), and for a shard first seen whose disk-usage estimate
// passes an eighth of size (the estimate is compressed, blind to the memtable, and still counts
// data deleted but not yet compacted away, so it is only a hint).
func (s *Server) splitLoop(ctx context.Context, size uint64, every time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	scanned := map[uint64]uint64{} // shard → its Written when it was last scanned
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held := s.Store.Held()
		if len(scanned) > len(held) {
			keep := make(map[uint64]uint64, len(held))
			for _, id := range held {
				if w, ok := scanned[id]; ok {
					keep[id] = w
				}
			}
			scanned = keep
		}
		for _, id := range held {
			sh, ok := s.Store.Replica(id)
			if !ok || sh.Primary != s.Agent.NodeID() {
				// Forgotten while another node leads it: a shard led again (primaries move
				// with balancing) is looked at afresh, since its last leader may have stopped
				// short of a split it needed.
				delete(scanned, id)
				continue
			}
			written := s.Store.Written(id)
			last, seen := scanned[id] // 0 if not seen: every byte written since the store opened counts
			if written-last < size/8 && (seen || s.Store.Size(id) < size/8) {
				if !seen {
					scanned[id] = 0 // seen, and small: from now on only what is written counts
				}
				continue
			}
			scanned[id] = written
			live, key, err := s.Store.SplitPoint(id)
			if err != nil {
				log.Warn("sizing a shard", "shard", id, "err", err)
				continue
			}
			if live <= size || key == nil {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			newID, err := s.Agent.AskSplit(actx, id, sh.Epoch)
			if err == nil {
				err = s.Node.SplitShard(actx, &pcspb.SplitShardCommand{ShardId: id, Version: sh.Epoch.GetVersion(), NewShardId: newID, SplitKey: key})
			}
			cancel()
			if err != nil {
				delete(scanned, id) // try again at the next round
				log.Warn("splitting a large shard", "shard", id, "err", err)
				continue
			}
			log.Info("split a large shard", "shard", id, "new_shard", newID, "live_bytes", live)
			s.Agent.Kick()
		}
		s.splitChecks.Add(1)
	}
}

// HTTPAddr is the address /metrics is served on ("" if none).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Addr is the KV service's address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the agent and the service and closes the store. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	s.stop()
	if s.http != nil {
		s.http.Close()
	}
	// Wait for the requests in flight (and their replication) before the store closes.
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
		<-stopped
	}
	s.wg.Wait()
	s.pcs.Close()
	s.Node.closeViews()
	if t := s.Node.tracing; t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t.Shutdown(ctx)
		cancel()
	}
	return s.Store.Close()
}
