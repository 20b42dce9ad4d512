package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/postdb/pcs/internal/tracing"

	"github.com/postdb/pcs/internal/clock"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/netaddr"
	"github.com/postdb/pcs/internal/raftgroup"
	"github.com/postdb/pcs/internal/roles"
	"github.com/postdb/pcs/pcstls"
)

// Default addresses of a PCS node with no flags.
const (
	DefaultClientAddr = "127.0.0.1:3379"
	DefaultPeerAddr   = "127.0.0.1:3380"
	DefaultHTTPAddr   = "127.0.0.1:3381"
	DefaultDataDir    = "pcs-data"
	DefaultName       = "pcs-1"
)

// Peer is one member of the initial cluster.
type Peer struct {
	Name     string
	PeerAddr string
}

// Config configures a PCS node. The zero value is not valid; start from DefaultConfig.
type Config struct {
	// Tracing (nil: the member's own, off until the trace-ratio node setting turns it on)
	// traces the PCS service and forwarded calls.
	Tracing *tracing.Tracing
	// Name is the member name (Raft server id). Default "pcs-1".
	Name string
	// DataDir holds the Raft log and snapshots. Default "./pcs-data".
	DataDir string
	// ClientAddr is the gRPC listen address. Port 0 picks a free port. Default 127.0.0.1:3379.
	ClientAddr string
	// HTTPAddr is the HTTP listen address (/health, /ready, /status, /metrics, /debug/pprof).
	// Empty disables HTTP. Default 127.0.0.1:3381.
	HTTPAddr string
	// AdvertiseClientAddr and AdvertiseHTTPAddr, if set, are the addresses others are told to
	// dial (member list, forwarding, primary discovery) instead of the bound ones: behind NAT,
	// in a container, or with a wildcard bind. The Raft one is Raft.AdvertisePeerAddr.
	AdvertiseClientAddr, AdvertiseHTTPAddr string
	// ClientListener and HTTPListener, if set, are used instead of binding ClientAddr and
	// HTTPAddr (tests, embedding); Raft.PeerListener likewise for the peer address.
	ClientListener, HTTPListener net.Listener

	// InitialCluster bootstraps a new cluster with these voters; it must name this node. Used
	// only when DataDir holds no state. Empty (and no Join) bootstraps a single-node cluster.
	InitialCluster []Peer
	// Join lists client addresses of a running cluster to join as a new voter (or non-voter
	// with JoinAsNonVoter). Used only when DataDir holds no state.
	Join []string
	// JoinAsNonVoter joins as a non-voter.
	JoinAsNonVoter bool
	// CommandVersion is the newest command format this node says it reads; default (0) this
	// build's. The cluster version — the format the primary writes — rises only to what every
	// member reports, so lowering it keeps a cluster on an older format (e.g. before adding a
	// member of an older build).
	CommandVersion uint32
	// ForceNewCluster starts a one-member group from this node's data, dropping every other
	// member from the configuration (recovery from a quorum lost for good).
	ForceNewCluster bool

	// Raft holds the Raft member settings: PeerAddr and the timeouts.
	Raft raftgroup.Config

	// LeaseRatio is the primary's read and TSO lease as a fraction of Raft's heartbeat timeout:
	// a primary serves timestamps and lease reads only until its last quorum-confirmed round
	// started plus this fraction of the timeout. Must be in (0, 1). Default 0.6.
	LeaseRatio float64
	// TSOWindow is how far ahead of the clock the primary persists the TSO window. Default 3s.
	TSOWindow time.Duration
	// IDBlock is how many ids the primary reserves per kind in one Raft write. Default 1000.
	IDBlock uint64
	// WriteTimeout bounds a single Raft write when the caller's context has no deadline. Default 5s.
	WriteTimeout time.Duration
	// QuotaBytes bounds the system key-value namespace (keys and values, as etcd's
	// --quota-backend-bytes): past it puts fail with ErrNoSpace and the alarm metric is 1;
	// deletes still work. Default DefaultQuotaBytes; 0: no quota.
	QuotaBytes int64
	// History is the number of key-value events kept for watches. Default 100000.
	History int
	// HeatmapInterval is how often the primary samples every shard's load for the console's
	// key heatmap, which keeps the last heatmapColumns samples. Default 10s.
	HeatmapInterval time.Duration

	// Nodes holds the data-node liveness timeouts (disconnected, down, warm-up). Down is at
	// least NodeLease + NodeLeaseMargin (the default): a down node's primaries are failed over
	// and its replicas replaced, which must wait for its lease to lapse.
	Nodes cluster.Config
	// NodeLease is the lease a heartbeat answer grants a data node. Default 1s (with data
	// nodes heartbeating every 250ms, four heartbeats may be lost before a lease lapses).
	NodeLease time.Duration
	// NodeLeaseMargin is added to NodeLease before a silent node's shard primaries are moved
	// (clock-rate drift between PCS and the node). Default 500ms.
	NodeLeaseMargin time.Duration
	// DDLInterval is how often the primary plans DDL steps. Default 100ms.
	DDLInterval time.Duration

	// TLS, if set, turns mutual TLS on for every port of this node (client gRPC, Raft, HTTP)
	// and for its calls to other members. Nil is plaintext.
	TLS *TLSConfig

	// Clock, if set, is the node's clock instead of the system's (the chaos suite skews its
	// wall reading; TSO physical time and the proposer's clock in entries come from it).
	Clock clock.Clock

	// Logger for the node; nil discards. LogLevel, if set, is the variable behind the
	// logger's level so that it can be changed at runtime.
	Logger   *slog.Logger
	LogLevel *slog.LevelVar

	// loseReply, if set (tests), is asked after each unary call is served whether to lose its
	// reply: the caller gets Unavailable as if the connection broke after the server acted.
	loseReply func(method string) bool
}

// TLSConfig is a PCS node's mutual TLS: its identity and who may connect, by role (the role
// table is internal/roles). AllowedPeers may use the Raft port and call anything (members
// forward their callers' calls); AllowedAdmins may change membership, log levels, scheduling,
// take snapshots and read pprof, besides what a client may; AllowedNodes may register and
// heartbeat as data nodes; AllowedClients may use keys, rows, TSO, ids and DDL. Every list must
// name someone unless AllowAnyOfCA is set, which lets any certificate the CA signed act in every
// role (a test CA of one's own only).
type TLSConfig struct {
	Source                                                    *pcstls.Source
	AllowedPeers, AllowedNodes, AllowedClients, AllowedAdmins *pcstls.Allow
	AllowAnyOfCA                                              bool
}

// Validate checks that every role's list names someone, or that any certificate of the CA was
// allowed explicitly.
func (t *TLSConfig) Validate() error {
	if t.Source == nil {
		return errors.New("tls: no certificate source")
	}
	if t.AllowAnyOfCA {
		return nil
	}
	for _, l := range []struct {
		flag string
		a    *pcstls.Allow
	}{{"--tls-allowed-peers", t.AllowedPeers}, {"--tls-allowed-nodes", t.AllowedNodes}, {"--tls-allowed-clients", t.AllowedClients}, {"--tls-allowed-admins", t.AllowedAdmins}} {
		if l.a == nil || len(l.a.Patterns) == 0 {
			return fmt.Errorf("tls: %s is empty: name the identities allowed, or say --tls-allow-any-of-ca to let every certificate of the CA act in every role", l.flag)
		}
	}
	return nil
}

// lists are the allow lists by role; with AllowAnyOfCA, an empty list admits any certificate
// of the CA.
func (t *TLSConfig) lists() roles.Lists {
	any := func(a *pcstls.Allow, kind string) *pcstls.Allow {
		if a == nil && t.AllowAnyOfCA {
			return &pcstls.Allow{Kind: kind}
		}
		return a
	}
	return roles.Lists{Client: any(t.AllowedClients, "clients"), Admin: any(t.AllowedAdmins, "admins"),
		Node: any(t.AllowedNodes, "nodes"), Peer: any(t.AllowedPeers, "peers")}
}

// DefaultQuotaBytes is the default bound of the system key-value namespace: 2 GiB.
const DefaultQuotaBytes = 2 << 30

// DefaultConfig returns the single-node defaults.
func DefaultConfig() Config {
	rc := raftgroup.DefaultConfig()
	rc.PeerAddr = DefaultPeerAddr
	return Config{
		Name:            DefaultName,
		DataDir:         DefaultDataDir,
		ClientAddr:      DefaultClientAddr,
		HTTPAddr:        DefaultHTTPAddr,
		Raft:            rc,
		LeaseRatio:      0.6,
		TSOWindow:       3 * time.Second,
		IDBlock:         1000,
		WriteTimeout:    5 * time.Second,
		History:         100_000,
		HeatmapInterval: 10 * time.Second,
		Nodes:           cluster.Config{DisconnectAfter: time.Second, Warmup: 10 * time.Second}, // down: lease + margin
		QuotaBytes:      DefaultQuotaBytes,
		NodeLease:       time.Second,
		NodeLeaseMargin: 300 * time.Millisecond,
		DDLInterval:     100 * time.Millisecond,
	}
}

// Validate reports the first invalid field. It does not change the Config.
func (c Config) Validate() error {
	rc := c.Raft
	rc.Name, rc.Dir = c.Name, c.DataDir
	if err := rc.Validate(); err != nil {
		return err
	}
	switch {
	case c.ClientAddr == "" && c.ClientListener == nil:
		return errors.New("client address is required")
	case c.LeaseRatio <= 0 || c.LeaseRatio >= 1:
		return fmt.Errorf("lease ratio %v must be in (0, 1)", c.LeaseRatio)
	case c.TSOWindow < 100*time.Millisecond:
		return fmt.Errorf("tso window %v must be at least 100ms", c.TSOWindow)
	case c.IDBlock == 0:
		return errors.New("id block must be positive")
	case c.Nodes.DisconnectAfter <= 0 || c.Nodes.DownAfter < 0 || c.Nodes.Warmup < 0 ||
		c.Nodes.DisconnectAfter > max(c.Nodes.DownAfter, c.NodeLease+c.NodeLeaseMargin):
		return errors.New("node timeouts: disconnect-after must be positive and at most down-after (at least node lease + margin); warm-up not negative")
	case c.NodeLease <= 0 || c.DDLInterval <= 0 || c.NodeLeaseMargin < 0:
		return errors.New("node lease and DDL interval must be positive")
	case c.QuotaBytes < 0:
		return errors.New("quota bytes must not be negative")
	case c.WriteTimeout <= 0:
		return errors.New("write timeout must be positive")
	case c.HeatmapInterval < 100*time.Millisecond:
		return fmt.Errorf("heatmap interval %v must be at least 100ms", c.HeatmapInterval)
	case netaddr.Check("client address", c.ClientAddr, c.AdvertiseClientAddr) != nil && c.ClientListener == nil:
		return netaddr.Check("client address", c.ClientAddr, c.AdvertiseClientAddr)
	case netaddr.Check("http address", c.HTTPAddr, c.AdvertiseHTTPAddr) != nil && c.HTTPListener == nil:
		return netaddr.Check("http address", c.HTTPAddr, c.AdvertiseHTTPAddr)
	case c.TLS != nil && c.TLS.Validate() != nil:
		return c.TLS.Validate()
	case len(c.InitialCluster) > 0 && len(c.Join) > 0:
		return errors.New("initial cluster and join are exclusive")
	}
	if len(c.InitialCluster) > 0 {
		seen := map[string]bool{}
		self := false
		for _, p := range c.InitialCluster {
			if p.Name == "" || p.PeerAddr == "" {
				return fmt.Errorf("initial cluster member %q=%q: name and peer address are required", p.Name, p.PeerAddr)
			}
			if seen[p.Name] || seen["@"+p.PeerAddr] {
				return fmt.Errorf("initial cluster names %q or %q twice", p.Name, p.PeerAddr)
			}
			seen[p.Name], seen["@"+p.PeerAddr] = true, true
			self = self || p.Name == c.Name
		}
		if !self {
			return fmt.Errorf("initial cluster does not name this node %q", c.Name)
		}
	}
	return nil
}

// ParseInitialCluster parses "name=peer-addr,name=peer-addr".
func ParseInitialCluster(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Peer
	for _, part := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want name=peer-addr", part)
		}
		out = append(out, Peer{Name: name, PeerAddr: addr})
	}
	return out, nil
}
