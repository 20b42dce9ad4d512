// Command pcs runs a PCS node. With no flags it runs a single-node PCS on 127.0.0.1 with its
// data in ./pcs-data.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/postdb/pcs/version"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/postdb/pcs/internal/clock"
	"github.com/postdb/pcs/internal/faults"
	"github.com/postdb/pcs/internal/netaddr"
	"github.com/postdb/pcs/pcstls"
	"github.com/postdb/pcs/server"
)

// fileConfig holds the flag values; a config file sets the same keys (see loadFile).
type fileConfig struct {
	Name               string        `yaml:"name"`
	DataDir            string        `yaml:"data-dir"`
	PeerAddr           string        `yaml:"peer-addr"`
	ClientAddr         string        `yaml:"client-addr"`
	HTTPAddr           string        `yaml:"http-addr"`
	InitialCluster     string        `yaml:"initial-cluster"`
	Join               string        `yaml:"join"`
	JoinAsNonVoter     bool          `yaml:"join-as-non-voter"`
	ForceNewCluster    bool          `yaml:"force-new-cluster"`
	LogLevel           string        `yaml:"log-level"`
	LogFormat          string        `yaml:"log-format"`
	HeartbeatTimeout   time.Duration `yaml:"heartbeat-timeout"`
	ElectionTimeout    time.Duration `yaml:"election-timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader-lease-timeout"`
	CommitTimeout      time.Duration `yaml:"commit-timeout"`
	SnapshotThreshold  uint64        `yaml:"snapshot-threshold"`
	SnapshotInterval   time.Duration `yaml:"snapshot-interval"`
	SnapshotBytes      uint64        `yaml:"snapshot-bytes"`
	TrailingLogs       uint64        `yaml:"trailing-logs"`
	TSOWindow          time.Duration `yaml:"tso-window"`
	HeatmapInterval    time.Duration `yaml:"heatmap-interval"`
	NodeDisconnect     time.Duration
	NodeDown           time.Duration
	NodeWarmup         time.Duration
	NodeLease          time.Duration
	NodeLeaseMargin    time.Duration
	QuotaBytes         int64
	DebugFaultsAddr    string `yaml:"debug-faults-addr"`
	AdvertiseClient    string
	AdvertisePeer      string
	AdvertiseHTTP      string
	TLSCA              string
	TLSCert            string
	TLSKey             string
	TLSAllowedPeers    string
	TLSAllowedNodes    string
	TLSAllowedClients  string
	TLSAllowedAdmins   string
	TLSAllowAnyOfCA    bool
}

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcs:", err)
		os.Exit(1)
	}
}

func defaults() fileConfig {
	d := server.DefaultConfig()
	return fileConfig{
		Name: d.Name, DataDir: d.DataDir, PeerAddr: d.Raft.PeerAddr, ClientAddr: d.ClientAddr, HTTPAddr: d.HTTPAddr,
		LogLevel: "info", LogFormat: "text",
		HeartbeatTimeout: d.Raft.HeartbeatTimeout, ElectionTimeout: d.Raft.ElectionTimeout,
		LeaderLeaseTimeout: d.Raft.LeaderLeaseTimeout, CommitTimeout: d.Raft.CommitTimeout,
		SnapshotThreshold: d.Raft.SnapshotThreshold, SnapshotInterval: d.Raft.SnapshotInterval, SnapshotBytes: d.Raft.SnapshotBytes,
		TrailingLogs: d.Raft.TrailingLogs, TSOWindow: d.TSOWindow, HeatmapInterval: d.HeatmapInterval,
		NodeDisconnect: d.Nodes.DisconnectAfter, NodeDown: d.Nodes.DownAfter, NodeWarmup: d.Nodes.Warmup, NodeLease: d.NodeLease, NodeLeaseMargin: d.NodeLeaseMargin, QuotaBytes: d.QuotaBytes,
	}
}

func newRootCmd() *cobra.Command {
	fc := defaults()
	var configPath string
	cmd := &cobra.Command{
		Use:     "pcs",
		Version: version.Get().String(),
		Short:   "PCS, the postdb cluster service: a replicated metadata group with TSO and ids",
		Long: `pcs runs one node of a PCS group.

With no flags it runs a single-node PCS on 127.0.0.1 (gRPC 3379, Raft 3380, HTTP 3381) with its
data in ./pcs-data. Restarting on the same data dir recovers every acknowledged write.

A three-node group:
  pcs --name a --data-dir a --client-addr 127.0.0.1:3379 --peer-addr 127.0.0.1:3380 --http-addr 127.0.0.1:3381 \
      --initial-cluster a=127.0.0.1:3380,b=127.0.0.1:4380,c=127.0.0.1:5380
  (and likewise for b and c)
A fourth node joins a running group with --join 127.0.0.1:3379 and an empty data dir.

Recovery: a member started with --force-new-cluster forms a one-member group from its own data
(when a quorum is lost for good); 'pcs restore FILE' prepares a data dir from a snapshot saved
with 'pcsctl snapshot save FILE', for a new cluster.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				if err := loadFile(configPath, cmd); err != nil {
					return err
				}
			}
			return run(cmd.Context(), fc)
		},
	}
	cmd.AddCommand(playgroundCmd(), restoreCmd())
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file; its keys are the flag names; flags given on the command line win")
	f.StringVar(&fc.Name, "name", fc.Name, "member name, unique in the group")
	f.StringVar(&fc.DataDir, "data-dir", fc.DataDir, "directory of the Raft log and snapshots")
	f.StringVar(&fc.PeerAddr, "peer-addr", fc.PeerAddr, "Raft (peer) address to bind and advertise")
	f.StringVar(&fc.ClientAddr, "client-addr", fc.ClientAddr, "gRPC address for clients, pcsctl and peers")
	f.StringVar(&fc.HTTPAddr, "http-addr", fc.HTTPAddr, "HTTP address for /health, /ready, /status, /metrics, /debug/pprof (empty: off)")
	f.StringVar(&fc.AdvertiseClient, "advertise-client-addr", "", "gRPC address clients, data nodes and peers dial, if not --client-addr (NAT, containers, a 0.0.0.0 bind)")
	f.StringVar(&fc.AdvertisePeer, "advertise-peer-addr", "", "Raft address peers dial, if not --peer-addr; --initial-cluster names this one")
	f.StringVar(&fc.AdvertiseHTTP, "advertise-http-addr", "", "HTTP address shown to others, if not --http-addr")
	f.StringVar(&fc.InitialCluster, "initial-cluster", fc.InitialCluster, "bootstrap members name=peer-addr,... (first start only)")
	f.StringVar(&fc.Join, "join", fc.Join, "client addresses of a running group to join, comma-separated (first start only)")
	f.BoolVar(&fc.JoinAsNonVoter, "join-as-non-voter", fc.JoinAsNonVoter, "join as a non-voter")
	f.BoolVar(&fc.ForceNewCluster, "force-new-cluster", fc.ForceNewCluster, "start a one-member group from this node's data, dropping the other members (quorum lost for good)")
	f.StringVar(&fc.LogLevel, "log-level", fc.LogLevel, "debug, info, warn or error (changeable at runtime: pcsctl log-level set)")
	f.StringVar(&fc.LogFormat, "log-format", fc.LogFormat, "text or json")
	f.DurationVar(&fc.HeartbeatTimeout, "heartbeat-timeout", fc.HeartbeatTimeout, "Raft heartbeat timeout (failure detection)")
	f.DurationVar(&fc.ElectionTimeout, "election-timeout", fc.ElectionTimeout, "Raft election timeout")
	f.DurationVar(&fc.LeaderLeaseTimeout, "leader-lease-timeout", fc.LeaderLeaseTimeout, "Raft leader lease (at most the heartbeat timeout)")
	f.DurationVar(&fc.CommitTimeout, "commit-timeout", fc.CommitTimeout, "longest delay before followers learn a commit")
	f.Uint64Var(&fc.SnapshotThreshold, "snapshot-threshold", fc.SnapshotThreshold, "log entries between snapshots")
	f.DurationVar(&fc.SnapshotInterval, "snapshot-interval", fc.SnapshotInterval, "how often the snapshot threshold is checked")
	f.Uint64Var(&fc.SnapshotBytes, "snapshot-bytes", fc.SnapshotBytes, "log bytes between snapshots, or an eighth of the last snapshot if more (bounds the log replayed at start; 0: by entries only)")
	f.Uint64Var(&fc.TrailingLogs, "trailing-logs", fc.TrailingLogs, "log entries kept after a snapshot")
	f.DurationVar(&fc.TSOWindow, "tso-window", fc.TSOWindow, "how far ahead the TSO window is persisted")
	f.DurationVar(&fc.HeatmapInterval, "heatmap-interval", fc.HeatmapInterval, "how often the primary samples shard load for the console's key heatmap (it keeps 360 samples)")
	f.DurationVar(&fc.NodeDisconnect, "node-disconnect-after", fc.NodeDisconnect, "a data node silent this long is disconnected (no new replicas; at most the down time)")
	f.DurationVar(&fc.NodeDown, "node-down-after", fc.NodeDown, "a data node silent this long is down: its shard primaries move and its replicas are replaced; never less than --node-lease + --node-lease-margin (0: that)")
	f.DurationVar(&fc.NodeWarmup, "node-warmup", fc.NodeWarmup, "after a primary change, declare no data node down and plan nothing for this long")
	f.DurationVar(&fc.NodeLease, "node-lease", fc.NodeLease, "lease a heartbeat answer grants a data node")
	f.DurationVar(&fc.NodeLeaseMargin, "node-lease-margin", fc.NodeLeaseMargin, "margin for clock-rate drift: a data node is down no sooner than its lease plus this")
	f.Int64Var(&fc.QuotaBytes, "quota-bytes", fc.QuotaBytes, "bytes of keys and values the system key-value namespace may hold; past it puts fail with no space (deletes work); 0: no quota")
	f.StringVar(&fc.TLSCA, "tls-ca", "", "CA bundle that signs every certificate of the cluster: mutual TLS on every port (with --tls-cert and --tls-key)")
	f.StringVar(&fc.TLSCert, "tls-cert", "", "this member's certificate (server and client auth; names its addresses); re-read when it changes")
	f.StringVar(&fc.TLSKey, "tls-key", "", "this member's private key")
	f.StringVar(&fc.TLSAllowedPeers, "tls-allowed-peers", "", "identities (CN, DNS or IP SAN; globs) allowed as PCS members, comma-separated; every list must name someone unless --tls-allow-any-of-ca")
	f.StringVar(&fc.TLSAllowedNodes, "tls-allowed-nodes", "", "identities allowed to register and heartbeat as data nodes")
	f.StringVar(&fc.TLSAllowedClients, "tls-allowed-clients", "", "identities allowed as clients: keys, rows, TSO, ids, DDL")
	f.StringVar(&fc.TLSAllowedAdmins, "tls-allowed-admins", "", "identities allowed as admins: membership, transfer, log level, snapshots, scheduling, node states, pprof (and what clients may)")
	f.BoolVar(&fc.TLSAllowAnyOfCA, "tls-allow-any-of-ca", false, "let every certificate the CA signed act in every role where a --tls-allowed-* list is empty (a CA of one's own only)")
	f.StringVar(&fc.DebugFaultsAddr, "debug-faults-addr", "", "serve the chaos suite's fault hooks (wall-clock skew, Raft log stalls) here; only in builds with -tags chaos")
	return cmd
}

// loadFile applies a YAML config file: each key is a flag name and its scalar value is parsed
// as that flag's would be. Flags given on the command line win. Unknown keys are errors.
func loadFile(path string, cmd *cobra.Command) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var kv map[string]yaml.Node
	if err := yaml.Unmarshal(data, &kv); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for key, node := range kv {
		fl := cmd.Flags().Lookup(key)
		if fl == nil || key == "config" {
			return fmt.Errorf("config file %s: unknown key %q", path, key)
		}
		if node.Kind != yaml.ScalarNode {
			return fmt.Errorf("config file %s: key %q: want a single value", path, key)
		}
		if fl.Changed {
			continue
		}
		if err := cmd.Flags().Set(key, node.Value); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

func run(ctx context.Context, fc fileConfig) error {
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(fc.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", fc.LogLevel)
	}
	var h slog.Handler
	switch fc.LogFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	case "json":
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	default:
		return fmt.Errorf("--log-format %q: want text or json", fc.LogFormat)
	}
	cfg := server.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.ClientAddr, cfg.HTTPAddr = fc.Name, fc.DataDir, fc.ClientAddr, fc.HTTPAddr
	cfg.Raft.PeerAddr = fc.PeerAddr
	cfg.AdvertiseClientAddr, cfg.AdvertiseHTTPAddr, cfg.Raft.AdvertisePeerAddr = fc.AdvertiseClient, fc.AdvertiseHTTP, fc.AdvertisePeer
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout = fc.HeartbeatTimeout, fc.ElectionTimeout
	cfg.Raft.LeaderLeaseTimeout, cfg.Raft.CommitTimeout = fc.LeaderLeaseTimeout, fc.CommitTimeout
	cfg.Raft.SnapshotThreshold, cfg.Raft.SnapshotInterval, cfg.Raft.TrailingLogs = fc.SnapshotThreshold, fc.SnapshotInterval, fc.TrailingLogs
	cfg.Raft.SnapshotBytes = fc.SnapshotBytes
	cfg.TSOWindow = fc.TSOWindow
	cfg.HeatmapInterval = fc.HeatmapInterval
	cfg.Nodes.DisconnectAfter, cfg.Nodes.DownAfter, cfg.Nodes.Warmup = fc.NodeDisconnect, fc.NodeDown, fc.NodeWarmup
	cfg.NodeLease = fc.NodeLease
	cfg.NodeLeaseMargin = fc.NodeLeaseMargin
	cfg.QuotaBytes = fc.QuotaBytes
	cfg.JoinAsNonVoter = fc.JoinAsNonVoter
	cfg.ForceNewCluster = fc.ForceNewCluster
	var err error
	if cfg.InitialCluster, err = server.ParseInitialCluster(fc.InitialCluster); err != nil {
		return fmt.Errorf("--initial-cluster: %w", err)
	}
	for _, j := range strings.Split(fc.Join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	cfg.Logger = slog.New(h)
	cfg.LogLevel = level
	if cfg.TLS, err = tlsConfig(fc, cfg.Logger); err != nil {
		return err
	}
	if cfg.TLS == nil {
		for _, a := range []string{fc.ClientAddr, fc.PeerAddr, fc.HTTPAddr, fc.AdvertiseClient, fc.AdvertisePeer} {
			if a != "" && !netaddr.Loopback(a) {
				cfg.Logger.Warn("serving plaintext on a non-loopback address: anyone who reaches it can read and change the cluster; start with --tls-ca, --tls-cert and --tls-key", "addr", a)
			}
		}
	}

	if fc.DebugFaultsAddr != "" {
		clk, stalls := faults.NewClock(clock.NewReal()), faults.NewStalls()
		stopFaults, err := faults.Serve(fc.DebugFaultsAddr, clk, stalls)
		if err != nil {
			return fmt.Errorf("--debug-faults-addr: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = stopFaults(sctx)
		}()
		cfg.Clock, cfg.Raft.LogStall = clk, stalls.Hook(faults.RaftLog)
		cfg.Logger.Warn("fault hooks on: this process's wall clock and Raft log can be skewed and stalled from outside", "addr", fc.DebugFaultsAddr)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

func restoreCmd() *cobra.Command {
	d := server.DefaultConfig()
	name, dir, peer := d.Name, d.DataDir, d.Raft.PeerAddr
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Prepare an empty data dir to start a new one-member cluster from a snapshot file",
		Long: `restore verifies a snapshot saved with 'pcsctl snapshot save FILE' and installs it in an
empty data dir as the first state of a new one-member cluster (with a new cluster id). Then
start pcs on that data dir with the same --name and --peer-addr; add members with --join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, err := server.Restore(args[0], dir, name, peer)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored revision %d (raft index %d) into %s as member %s at %s; start: pcs --data-dir %s --name %s --peer-addr %s\n",
				pos.Revision, pos.AppliedIndex, dir, name, peer, dir, name, peer)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", name, "member name of the new cluster's first member")
	cmd.Flags().StringVar(&dir, "data-dir", dir, "empty data directory to prepare")
	cmd.Flags().StringVar(&peer, "peer-addr", peer, "Raft address the member will bind")
	return cmd
}

// tlsConfig builds the member's mutual TLS from the --tls-* flags; nil when they name no file.
func tlsConfig(fc fileConfig, log *slog.Logger) (*server.TLSConfig, error) {
	files := pcstls.Files{CA: fc.TLSCA, Cert: fc.TLSCert, Key: fc.TLSKey}
	if err := files.Validate(); err != nil {
		return nil, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
	}
	if !files.Enabled() {
		if fc.TLSAllowedPeers+fc.TLSAllowedNodes+fc.TLSAllowedClients+fc.TLSAllowedAdmins != "" || fc.TLSAllowAnyOfCA {
			return nil, errors.New("--tls-allowed-*: needs --tls-ca, --tls-cert and --tls-key")
		}
		return nil, nil
	}
	src, err := pcstls.NewSource(files, pcstls.WithReloadLog(log))
	if err != nil {
		return nil, err
	}
	t := &server.TLSConfig{Source: src, AllowAnyOfCA: fc.TLSAllowAnyOfCA}
	for _, l := range []struct {
		flag, kind, val string
		dst             **pcstls.Allow
	}{{"--tls-allowed-peers", "peers", fc.TLSAllowedPeers, &t.AllowedPeers},
		{"--tls-allowed-nodes", "nodes", fc.TLSAllowedNodes, &t.AllowedNodes},
		{"--tls-allowed-clients", "clients", fc.TLSAllowedClients, &t.AllowedClients},
		{"--tls-allowed-admins", "admins", fc.TLSAllowedAdmins, &t.AllowedAdmins}} {
		if *l.dst, err = pcstls.NewAllow(l.kind, strings.Split(l.val, ",")); err != nil {
			return nil, fmt.Errorf("%s: %w", l.flag, err)
		}
	}
	return t, t.Validate()
}
