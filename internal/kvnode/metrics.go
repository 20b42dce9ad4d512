package kvnode

import (
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/postdb/pcs/internal/rpcmetrics"
)

// metrics are a data node's Prometheus metrics, in a registry of their own.
type metrics struct {
	reg               *prometheus.Registry
	entrySeconds      prometheus.Histogram
	entryWrites       prometheus.Histogram
	grpcSeconds       *prometheus.HistogramVec
	snapshotsSent     prometheus.Counter
	snapshotBytes     prometheus.Counter
	snapshotsSkipped  prometheus.Counter
	snapshotsReceived prometheus.Counter
	duplicates        prometheus.Counter
	replicasRemoved   prometheus.Counter
	notEnoughReplicas prometheus.Counter
	splits            prometheus.Counter
	replicaReads      *prometheus.CounterVec
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		reg: reg,
		entrySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcsnode_log_entry_duration_seconds", Help: "Time for a primary to persist one log entry locally and on every replica.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
		}),
		entryWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcsnode_log_entry_writes", Help: "Client writes committed together in one log entry (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		grpcSeconds:       rpcmetrics.Histogram("pcsnode_grpc_request_duration_seconds", "KV service request latency by method and code (streams: whole stream)."),
		snapshotsSent:     counter("pcsnode_snapshots_sent_total", "Snapshots a primary sent to replicas and learners."),
		snapshotBytes:     counter("pcsnode_snapshot_sent_bytes_total", "Bytes of keys and values in the snapshots sent."),
		snapshotsSkipped:  counter("pcsnode_snapshots_skipped_total", "Replicas a new primary found at its own position (no snapshot needed)."),
		snapshotsReceived: counter("pcsnode_snapshots_installed_total", "Snapshots this node installed as a replica or learner."),
		duplicates:        counter("pcsnode_requests_deduplicated_total", "Retried row writes this node, as primary, answered from their record instead of applying them again."),
		replicasRemoved:   counter("pcsnode_replicas_removed_total", "Replicas taken out of a configuration at this primary's request (unreachable or too slow)."),
		notEnoughReplicas: counter("pcsnode_writes_not_enough_replicas_total", "Writes refused because fewer replicas than the shard's min-in-sync could persist them."),
		splits:            counter("pcsnode_splits_total", "Shard splits this node made as primary."),
		replicaReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pcsnode_replica_reads_total",
			Help: "Reads this node served as a replica that is not the primary, by consistency (follower, stale)."}, []string{"consistency"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.entrySeconds, m.entryWrites, m.grpcSeconds, m.snapshotsSent, m.snapshotBytes, m.snapshotsSkipped,
		m.snapshotsReceived, m.duplicates, m.replicasRemoved, m.notEnoughReplicas, m.splits, m.replicaReads,
		gauge("pcsnode_shard_replicas", "Shard replicas this node holds.", func() float64 { return float64(len(n.store.Held())) }),
		gauge("pcsnode_shard_primaries", "Shards this node is the primary of.", func() float64 {
			led := 0
			for _, id := range n.store.Held() {
				if sh, ok := n.store.Replica(id); ok && sh.Primary == n.self() {
					led++
				}
			}
			return float64(led)
		}),
		shardCollector{n},
		gauge("pcsnode_lease_valid", "1 while the node holds its lease from PCS.", func() float64 {
			if n.grants.LeaseValid() {
				return 1
			}
			return 0
		}),
	)
	return m
}

// Registry is the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.metrics.reg }

// shardCollector exports per-shard series while the shard-metrics node setting is on; off, it
// exports nothing (a node may hold many thousands of shards).
type shardCollector struct{ n *Node }

var shardDescs = struct{ size, lsn, reads, writes *prometheus.Desc }{
	size:   prometheus.NewDesc("pcsnode_shard_size_bytes", "Disk bytes of a shard replica, an estimate (shard-metrics on).", []string{"shard"}, nil),
	lsn:    prometheus.NewDesc("pcsnode_shard_lsn", "Log position of a shard replica (shard-metrics on).", []string{"shard"}, nil),
	reads:  prometheus.NewDesc("pcsnode_shard_reads_per_second", "Reads/s this node served of a shard (moving average; shard-metrics on).", []string{"shard"}, nil),
	writes: prometheus.NewDesc("pcsnode_shard_writes_per_second", "Writes/s this node applied to a shard (moving average; shard-metrics on).", []string{"shard"}, nil),
}

func (c shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- shardDescs.size
	ch <- shardDescs.lsn
	ch <- shardDescs.reads
	ch <- shardDescs.writes
}

func (c shardCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if !n.shardMetrics.Load() {
		return
	}
	for _, id := range n.store.Held() {
		label := strconv.FormatUint(id, 10)
		r := n.load.rate(id)
		ch <- prometheus.MustNewConstMetric(shardDescs.size, prometheus.GaugeValue, float64(n.store.Size(id)), label)
		ch <- prometheus.MustNewConstMetric(shardDescs.lsn, prometheus.GaugeValue, float64(n.store.LSN(id)), label)
		ch <- prometheus.MustNewConstMetric(shardDescs.reads, prometheus.GaugeValue, r.reads, label)
		ch <- prometheus.MustNewConstMetric(shardDescs.writes, prometheus.GaugeValue, r.writes, label)
	}
}

// pprofHandler serves Go's profiling endpoints while the pprof node setting is on.
func (n *Node) pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.pprof.Load() {
			http.Error(w, "profiling is off on this node (pcsctl node config set pprof on)", http.StatusNotFound)
			return
		}
		mux.ServeHTTP(w, r)
	})
}
