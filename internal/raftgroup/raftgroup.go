// Package raftgroup wires hashicorp/raft for PCS: a raft-wal log and stable store, file
// snapshots, and a TCP transport, with timeouts tuned for a LAN.
//
// The Raft log is the PCS WAL: every metadata write is a command appended here, replicated to a
// quorum and persisted (fsync) before it is applied. Snapshots bound the log; on start, raft
// restores the newest valid snapshot and replays the log tail.
package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/postdb/pcs/internal/netaddr"
)

// Config configures a Raft group member. Durations are wall durations.
type Config struct {
	// Name is this member's server id. Required.
	Name string
	// Dir holds the log (Dir/wal) and snapshots (Dir/snapshots). Required.
	Dir string
	// PeerAddr is the TCP address Raft binds and advertises. Port 0 picks a free port.
	PeerAddr string
	// PeerListener, if set, is used instead of binding PeerAddr (tests, embedding).
	PeerListener net.Listener
	// AdvertisePeerAddr, if set, is the address peers are told to dial (and that goes into the
	// group's configuration) instead of the bound one.
	AdvertisePeerAddr string

	// HeartbeatTimeout: a follower starts an election after this long without the leader
	// (randomised up to twice as long). Default 200ms.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate restarts its election after this long. Default 200ms.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: the leader steps down after this long without a quorum. Default 150ms.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest a follower waits to learn a new commit index when there is no
	// new entry to carry it. Default 5ms.
	CommitTimeout time.Duration
	// SnapshotInterval: how often the snapshot threshold is checked. Default 30s.
	SnapshotInterval time.Duration
	// SnapshotThreshold: log entries since the last snapshot that trigger a new one. Default 8192.
	SnapshotThreshold uint64
	// SnapshotBytes: command bytes applied since the last snapshot that trigger a new one, or an
	// eighth of the newest snapshot's size if that is larger; checked as entries are applied.
	// It bounds the log replayed at start when entries are large. 0: entries only. Default 64 MiB.
	SnapshotBytes uint64
	// TrailingLogs: entries kept after a snapshot for slow followers. Default 10240.
	TrailingLogs uint64
	// SnapshotsRetained: snapshots kept on disk. Default 2.
	SnapshotsRetained int
	// SegmentSize is the size in bytes of a log segment file; compaction frees whole segments.
	// Default 64 MiB.
	SegmentSize int

	// Logger receives Raft's own logs; nil discards them.
	Logger *slog.Logger
	// ForceNewCluster makes the member, at start, replace the group's configuration by one of
	// itself alone, keeping its data (etcd's --force-new-cluster): the way back when a quorum
	// is lost for good. Other members must be re-added.
	ForceNewCluster bool
	// Bootstrap, if set, makes Open bootstrap a new group with the configuration it returns
	// (given this member's transport address), before Raft starts: a member whose peers formed
	// a quorum and reached it first must not find its log already written and refuse.
	Bootstrap func(local raft.ServerAddress) raft.Configuration
	// Identity, if set, makes every Raft connection open with a handshake of cluster ids: a
	// peer of another cluster is refused (and logged) before any Raft message passes.
	Identity *Identity
	// TLS, if set, runs Raft over mutual TLS: a plaintext or unknown peer is refused (and
	// logged) before any Raft message passes.
	TLS *TLS
	// LogStall, if set, is called before each batch of entries is written (and fsynced) to the
	// log: the chaos suite's disk-stall hook. Nil in production.
	LogStall func()
}

// DefaultConfig returns the LAN defaults; Name, Dir and PeerAddr are left for the caller.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotBytes:      64 << 20,
		TrailingLogs:       10240,
		SnapshotsRetained:  2,
		SegmentSize:        64 << 20,
	}
}

// Validate reports the first invalid field. It does not change the Config.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("raftgroup: name is required")
	case c.Dir == "":
		return errors.New("raftgroup: data dir is required")
	case c.PeerAddr == "" && c.PeerListener == nil:
		return errors.New("raftgroup: peer address is required")
	case c.PeerListener == nil && netaddr.Check("peer address", c.PeerAddr, c.AdvertisePeerAddr) != nil:
		return fmt.Errorf("raftgroup: %w", netaddr.Check("peer address", c.PeerAddr, c.AdvertisePeerAddr))
	case c.PeerListener != nil && c.AdvertisePeerAddr != "" && netaddr.Check("peer address", "", c.AdvertisePeerAddr) != nil:
		return fmt.Errorf("raftgroup: %w", netaddr.Check("peer address", "", c.AdvertisePeerAddr))
	case c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < 5*time.Millisecond:
		return errors.New("raftgroup: heartbeat and election timeouts must be at least 5ms")
	case c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("raftgroup: leader lease timeout must be positive and at most the heartbeat timeout")
	case c.CommitTimeout <= 0:
		return errors.New("raftgroup: commit timeout must be positive")
	case c.SnapshotThreshold == 0 || c.SnapshotInterval <= 0:
		return errors.New("raftgroup: snapshot threshold and interval must be positive")
	case c.SegmentSize < 4096:
		return errors.New("raftgroup: log segment size must be at least 4096 bytes")
	case c.SnapshotsRetained < 1:
		return errors.New("raftgroup: at least one snapshot must be retained")
	}
	return nil
}

// Group is an open Raft member.
type Group struct {
	Raft      *raft.Raft
	Transport *raft.NetworkTransport
	Snapshots *raft.FileSnapshotStore
	wal       *wal.WAL
	meta      *metadb.BoltMetaDB
	hlog      hclog.Logger
	bound     string
	sized     *sizedFSM
	sizerStop chan struct{} // closed by Close: stop snapshotting by log size
	sizerDone chan struct{} // closed when that loop has returned
}

// Open opens (or creates) the member's storage and starts Raft with fsm. It does not bootstrap.
func Open(cfg Config, fsm raft.FSM) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hlog := newHCLogger(cfg.Logger)
	walDir := filepath.Join(cfg.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("raftgroup: %w", err)
	}
	logs, meta, err := openWAL(walDir, cfg.SegmentSize)
	if err != nil {
		return nil, err
	}
	closeLogs := func() { logs.Close(); meta.Close() }
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotsRetained, hlog)
	if err != nil {
		closeLogs()
		return nil, fmt.Errorf("raftgroup: opening snapshots: %w", err)
	}
	ln := cfg.PeerListener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.PeerAddr); err != nil {
			closeLogs()
			return nil, fmt.Errorf("raftgroup: listening on peer address %s: %w", cfg.PeerAddr, err)
		}
	}
	var stream raft.StreamLayer = &tcpStream{ln: ln, advertise: cfg.AdvertisePeerAddr}
	log := cfg.Logger
	if cfg.TLS != nil {
		stream = &tlsStream{StreamLayer: stream, tls: cfg.TLS, onFail: func(err error) {
			if log != nil {
				log.Warn("refused a raft connection", "err", err)
			}
		}}
	}
	if cfg.Identity != nil {
		stream = &idStream{StreamLayer: stream, ident: cfg.Identity, onFail: func(err error) {
			if log != nil && errors.Is(err, ErrClusterMismatch) {
				log.Error("refused a raft peer", "err", err)
			}
		}}
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 4,
		Timeout: 5 * time.Second,
		Logger:  hlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Name)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 512
	rc.Logger = hlog
	if cfg.ForceNewCluster {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.RecoverCluster(rc, fsm, logs, logs, snaps, trans, conf); err != nil {
			trans.Close()
			closeLogs()
			return nil, fmt.Errorf("raftgroup: forcing a new cluster: %w", err)
		}
	}
	if cfg.Bootstrap != nil {
		if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, cfg.Bootstrap(trans.LocalAddr())); err != nil {
			trans.Close()
			closeLogs()
			return nil, fmt.Errorf("raftgroup: bootstrap: %w", err)
		}
	}
	sized := newSizedFSM(fsm, cfg.SnapshotBytes)
	var store raft.LogStore = logs
	if cfg.LogStall != nil {
		store = stalledLog{LogStore: logs, stall: cfg.LogStall}
	}
	r, err := raft.NewRaft(rc, sized, store, logs, snaps, trans)
	if err != nil {
		trans.Close()
		closeLogs()
		return nil, fmt.Errorf("raftgroup: starting raft: %w", err)
	}
	g := &Group{Raft: r, Transport: trans, Snapshots: snaps, wal: logs, meta: meta, hlog: hlog, bound: ln.Addr().String(),
		sized: sized, sizerStop: make(chan struct{}), sizerDone: make(chan struct{})}
	if cfg.SnapshotBytes > 0 {
		go g.snapshotBySize(cfg.SnapshotBytes)
	} else {
		close(g.sizerDone)
	}
	return g, nil
}

// HasState reports whether dir holds Raft state from an earlier run.
func HasState(dir string) (bool, error) {
	walDir := filepath.Join(dir, "wal")
	if _, err := os.Stat(walDir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	logs, meta, err := openWAL(walDir, DefaultConfig().SegmentSize)
	if err != nil {
		return false, err
	}
	defer func() { logs.Close(); meta.Close() }()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.NewNullLogger())
	if err != nil {
		return false, err
	}
	return raft.HasExistingState(logs, logs, snaps)
}

// FirstIndex is the first index still in the log (it rises as snapshots compact the log).
func (g *Group) FirstIndex() (uint64, error) { return g.wal.FirstIndex() }

// CommittedInTerm reports whether the entry at index (the commit index, say) is of the current
// term. A new leader's commit index is stale until it commits its first entry: a follower that
// learns a commit index of the current term has learnt one covering everything committed before.
func (g *Group) CommittedInTerm(index uint64) bool {
	var l raft.Log
	if index == 0 || g.wal.GetLog(index, &l) != nil {
		return false
	}
	return l.Term == g.Raft.CurrentTerm()
}

// LocalAddr is the advertised peer address.
func (g *Group) LocalAddr() string { return string(g.Transport.LocalAddr()) }

// BoundAddr is the address the Raft listener is bound to.
func (g *Group) BoundAddr() string { return g.bound }

// SetLogLevel changes the level of Raft's own logs.
func (g *Group) SetLogLevel(l slog.Level) { g.hlog.SetLevel(hclogLevel(l)) }

// Close shuts Raft down and closes the storage.
func (g *Group) Close() error {
	close(g.sizerStop)
	err := g.Raft.Shutdown().Error()
	<-g.sizerDone
	if cerr := g.wal.Close(); err == nil {
		err = cerr
	}
	if cerr := g.meta.Close(); err == nil {
		err = cerr
	}
	return err
}

// openWAL opens the log with a metadata store that we close ourselves: raft-wal v0.4.0's
// Close leaves its metadata database (and its file lock) open.
func openWAL(dir string, segmentSize int) (*wal.WAL, *metadb.BoltMetaDB, error) {
	meta := &metadb.BoltMetaDB{}
	logs, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentSize(segmentSize))
	if err != nil {
		meta.Close()
		return nil, nil, fmt.Errorf("raftgroup: opening log in %s: %w", dir, err)
	}
	return logs, meta, nil
}

// stalledLog calls stall before each write of the log (fault injection).
type stalledLog struct {
	raft.LogStore
	stall func()
}

func (l stalledLog) StoreLog(e *raft.Log) error {
	l.stall()
	return l.LogStore.StoreLog(e)
}

func (l stalledLog) StoreLogs(es []*raft.Log) error {
	l.stall()
	return l.LogStore.StoreLogs(es)
}

// tcpStream is raft's StreamLayer over an already bound listener; Addr, which raft puts in
// the configuration, is the advertised address if there is one.
type tcpStream struct {
	ln        net.Listener
	advertise string
}

func (t *tcpStream) Accept() (net.Conn, error) { return t.ln.Accept() }
func (t *tcpStream) Close() error              { return t.ln.Close() }
func (t *tcpStream) Addr() net.Addr {
	if t.advertise != "" {
		return netaddr.Addr(t.advertise)
	}
	return t.ln.Addr()
}
func (t *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err == nil {
		_ = c.(*net.TCPConn).SetNoDelay(true)
	}
	return c, err
}

// newHCLogger adapts slog for raft: raft logs through hclog, which writes lines into slog.
func newHCLogger(l *slog.Logger) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:        "raft",
		Level:       hclog.Info,
		Output:      slogWriter{l.With("component", "raft")},
		DisableTime: true,
	})
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

// slogWriter turns each hclog line ("[WARN]  raft: message: k=v") into one slog record at the
// line's level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[TRACE]": slog.LevelDebug - 4, "[DEBUG]": slog.LevelDebug,
		"[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERROR]": slog.LevelError} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			msg, level = strings.TrimSpace(rest), l
			break
		}
	}
	msg = strings.TrimPrefix(msg, "raft: ")
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

var _ io.Writer = slogWriter{}
