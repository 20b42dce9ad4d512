package kvnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/nodeconf"
	"github.com/postdb/pcs/internal/tracing"
)

// Limits of the KV service.
const (
	MaxKeySize   = 4 << 10
	MaxValueSize = 1 << 20
	MaxBatchOps  = 10_000
	MaxScan      = 10_000
	// MaxEntryBytes bounds the keys and values of one log entry (a write, or a group of
	// writes committed together), well below MaxMessageBytes so that a Replicate message,
	// with its request records, is always one a replica accepts. A single write larger than
	// this is refused; it is never split across entries.
	MaxEntryBytes = 8 << 20
	// MaxMessageBytes is the largest gRPC message a data node receives.
	MaxMessageBytes = 16 << 20
)

// Node serves a store: the gRPC KV service and the nodeagent.Handler.
type Node struct {
	pcspb.UnimplementedKVServer
	store *Store
	log   *slog.Logger
	// self is this node's id (0 until registered); grants are PCS's grants to serve shards as
	// primary.
	self   func() uint64
	grants Grants

	// peer returns the KV client of another data node, for replication.
	peer Peer
	// pcs (nil: none) is asked for a shard's metadata when a request is routed with a newer
	// epoch than this replica has heard of — a new primary learns of its promotion from the
	// first client that was told, rather than from its next heartbeat — and, by a primary, to
	// remove replicas that do not persist its writes.
	pcs      Manager
	fetching sync.Map // shard id -> chan struct{} closed when the fetch in flight ends
	queues   sync.Map // shard id -> *writeQueue
	// readIndexes: shard id -> *readIndexBatch, the follower reads waiting for the primary's
	// position (replicaread.go).
	readIndexes sync.Map

	metrics *metrics
	// Monitoring switches PCS sets (nodeconf): per-shard metric series, profiling endpoints.
	shardMetrics, pprof atomic.Bool
	load                *shardLoad
	res                 *resources // the process's CPU, memory and IO, for heartbeats
	// replicateTimeout is ReplicateTimeout unless the node's Config says otherwise.
	replicateTimeout time.Duration

	mu      sync.Mutex
	schemas map[uint64]uint64
	locks   map[uint64]*sync.Mutex // per shard: orders its requests as primary, and its log on a replica
	repl    map[uint64]*replState  // per shard this node is primary of
	gcAt    map[uint64]time.Time   // per shard: when its expired request records were last looked for
	trimmed map[[2]uint64]uint64   // (shard, client) -> the acked_below its records were last trimmed to
	views   map[uint64]*readView   // per shard this node is a replica of: its read view (replicaread.go)

	// logLevel (nil: fixed) is the level PCS's log-level setting changes.
	logLevel *slog.LevelVar
	// tracing (nil: none) is changed by PCS's trace-ratio and trace-exporter settings.
	tracing *tracing.Tracing
}

// Grants is what a node knows of PCS's grants (nodeagent.Agent implements it). A node serves
// shard S as primary at term T only while Granted(S, T): PCS grants it only to the node its
// catalog names S's primary at T, once no earlier primary of S may hold a grant (see the
// package doc).
type Grants interface {
	// Granted reports whether this node may serve shard as primary at term now.
	Granted(shard, term uint64) bool
	// LeaseValid reports whether PCS counts this node alive (metrics only).
	LeaseValid() bool
	// Kick asks for a heartbeat now: a new primary need not wait a whole interval for its
	// grant.
	Kick()
}

// NewNode serves store. self and grants come from the node's agent; peer reaches the other
// data nodes. log may be nil.
func NewNode(store *Store, self func() uint64, grants Grants, peer Peer, log *slog.Logger) *Node {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{store: store, log: log, self: self, grants: grants, peer: peer, schemas: map[uint64]uint64{},
		locks: map[uint64]*sync.Mutex{}, repl: map[uint64]*replState{}, views: map[uint64]*readView{}, load: newShardLoad(time.Now), replicateTimeout: ReplicateTimeout, res: newResources()}
	n.metrics = newMetrics(n)
	return n
}

func (n *Node) shardLock(id uint64) *sync.Mutex {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, ok := n.locks[id]
	if !ok {
		l = &sync.Mutex{}
		n.locks[id] = l
	}
	return l
}

// ---- nodeagent.Handler ------------------------------------------------------------------------

// CreateReplica records a replica, or takes PCS's newer metadata for one it holds (keeping its
// data). A replica that split ahead of the catalog keeps its narrower range and newer version.
func (n *Node) CreateReplica(_ context.Context, sh *pcspb.Shard) error {
	l := n.shardLock(sh.Id)
	l.Lock()
	defer l.Unlock()
	return n.adoptLocked(sh)
}

// adoptLocked creates a replica or takes newer metadata for it (keeping a newer range and
// version it has split to). The caller holds the shard's lock.
func (n *Node) adoptLocked(sh *pcspb.Shard) error {
	cur, ok := n.store.Replica(sh.Id)
	if !ok {
		if r := n.store.Covering(sh); r != nil {
			// PCS's catalog has not recorded a merge (or split) this node made: creating the
			// replica would serve an empty copy of rows the node holds elsewhere.
			return fmt.Errorf("%w: shard %d [%x, %x) at version %d overlaps replica %d [%x, %x) at version %d",
				ErrReplicaOverlaps, sh.Id, sh.Start, sh.End, sh.Epoch.GetVersion(), r.Id, r.Start, r.End, r.Epoch.GetVersion())
		}
	}
	if ok && (sh.Term < cur.Term || (sh.Term == cur.Term && sh.Epoch.GetConfVer() < cur.Epoch.GetConfVer())) {
		// Metadata older than this replica's (a command that waited in a queue): a record
		// never goes back to an earlier term, where this node may have been primary.
		return nil
	}
	if ok && cur.Epoch.GetVersion() > sh.Epoch.GetVersion() {
		sh = proto.Clone(sh).(*pcspb.Shard)
		sh.Start, sh.End = cur.Start, cur.End
		sh.Epoch = &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: cur.Epoch.GetVersion()}
	}
	if ok && proto.Equal(cur, sh) {
		return nil
	}
	return n.store.PutReplica(sh)
}

// DropReplica deletes a replica and its data.
func (n *Node) DropReplica(_ context.Context, id uint64) error {
	l := n.shardLock(id)
	l.Lock()
	defer l.Unlock()
	if _, ok := n.store.Replica(id); !ok {
		return nil
	}
	n.mu.Lock()
	delete(n.repl, id)
	n.load.forget(id)
	n.mu.Unlock()
	n.dropView(id)
	return n.store.DropReplica(id)
}

// LoadSchema records the schema version (the reference node stores untyped values).
func (n *Node) LoadSchema(_ context.Context, ref *pcspb.SchemaVersionRef) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.schemas[ref.TableId] = max(n.schemas[ref.TableId], ref.Version)
	return nil
}

// SetConfig applies node settings PCS carries (see the nodeconf package); the node reports
// what is in force in its stats. A setting it cannot apply is an error (PCS sends it again).
func (n *Node) SetConfig(_ context.Context, settings map[string]string) error {
	var errs []error
	for k, v := range settings {
		switch k {
		case nodeconf.LogLevel:
			if n.logLevel == nil {
				errs = append(errs, errors.New("kvnode: this node's log level is fixed"))
				continue
			}
			var l slog.Level
			if err := l.UnmarshalText([]byte(v)); err != nil {
				errs = append(errs, fmt.Errorf("kvnode: log-level %q: %w", v, err))
				continue
			}
			n.logLevel.Set(l)
			n.log.Info("log level set by PCS", "level", v)
		case nodeconf.TraceRatio, nodeconf.TraceExporter:
			if n.tracing == nil {
				errs = append(errs, errors.New("kvnode: this node has no tracing"))
				continue
			}
			if k == nodeconf.TraceExporter {
				if err := n.tracing.SetExporter(context.Background(), v); err != nil {
					errs = append(errs, err)
					continue
				}
			} else if r, err := strconv.ParseFloat(v, 64); err == nil {
				n.tracing.SetRatio(r)
			} else {
				errs = append(errs, fmt.Errorf("kvnode: trace-ratio %q: %w", v, err))
				continue
			}
			n.log.Info("tracing set by PCS", k, v)
		case nodeconf.ShardMetrics, nodeconf.Pprof:
			on, err := nodeconf.Canonical(k, v)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if k == nodeconf.ShardMetrics {
				n.shardMetrics.Store(on == "on")
			} else {
				n.pprof.Store(on == "on")
			}
			n.log.Info("monitoring set by PCS", k, on)
		default:
			errs = append(errs, fmt.Errorf("kvnode: unknown node setting %q", k))
		}
	}
	return errors.Join(errs...)
}

// config reports the node settings in force.
func (n *Node) config() map[string]string {
	out := map[string]string{}
	if n.logLevel != nil {
		out[nodeconf.LogLevel] = strings.ToLower(n.logLevel.Level().String())
	}
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	out[nodeconf.ShardMetrics] = onOff(n.shardMetrics.Load())
	out[nodeconf.Pprof] = onOff(n.pprof.Load())
	if n.tracing != nil {
		out[nodeconf.TraceRatio] = nodeconf.FormatRatio(n.tracing.Ratio())
		out[nodeconf.TraceExporter] = n.tracing.Exporter()
	}
	return out
}

// tracer starts the node's own spans (a no-op without tracing).
func (n *Node) tracer() trace.Tracer {
	if n.tracing == nil {
		return noop.NewTracerProvider().Tracer("")
	}
	return n.tracing.Tracer()
}

// HeldShards lists the replicas.
func (n *Node) HeldShards() []uint64 { return n.store.Held() }

// Stats reports the replica count, and per shard the disk usage.
func (n *Node) Stats() (*pcspb.NodeStats, []*pcspb.ShardStats) {
	held := n.store.Held()
	ns := &pcspb.NodeStats{ShardCount: uint64(len(held)), SchemaVersions: map[uint64]uint64{}, DiskFree: n.store.DiskFree()}
	ns.Cpu, ns.MemoryBytes, ns.IoBytesPerSec = n.res.sample(time.Now())
	n.mu.Lock()
	for k, v := range n.schemas {
		ns.SchemaVersions[k] = v
	}
	n.mu.Unlock()
	ns.Config = n.config()
	var ss []*pcspb.ShardStats
	for _, id := range held {
		size := n.store.Size(id)
		ns.BytesUsed += size
		lsn := n.store.LSN(id)
		st := &pcspb.ShardStats{ShardId: id, SizeBytes: size, ReplicaPositions: map[uint64]uint64{n.self(): lsn}, SplitFrom: n.store.Parent(id)}
		if m := n.store.Merged(id); m.Shard != 0 {
			st.MergedFrom, st.MergedFromVersion = m.Shard, m.Version
		}
		r := n.load.rate(id)
		st.ReadPerSec, st.WritePerSec, st.ReadBytesPerSec, st.WriteBytesPerSec = r.reads, r.writes, r.readBytes, r.writeBytes
		if sh, ok := n.store.Replica(id); ok {
			st.Term, st.ConfVer, st.Version, st.Start, st.End = sh.Term, sh.Epoch.GetConfVer(), sh.Epoch.GetVersion(), sh.Start, sh.End
			st.Primary = sh.Primary == n.self()
			if sh.Primary == n.self() {
				// The replicas and learners in line have every position this primary has.
				n.mu.Lock()
				if rs := n.repl[id]; rs != nil && rs.term == sh.Term && rs.confVer == sh.Epoch.GetConfVer() {
					for r, ok := range rs.inSync {
						if ok {
							st.ReplicaPositions[r] = lsn
						}
					}
				}
				n.mu.Unlock()
			}
		}
		ss = append(ss, st)
	}
	return ns, ss
}

// endSpan ends span, marking it failed with err, if any.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
