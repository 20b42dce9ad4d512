package server

import (
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/postdb/pcs/internal/rpcmetrics"
	"github.com/postdb/pcs/internal/schedule"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// metrics are the node's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	applySeconds   prometheus.Histogram
	proposeSeconds prometheus.Histogram
	grpcSeconds    *prometheus.HistogramVec
	tsoRequests    prometheus.Counter
	tsoTimestamps  prometheus.Counter
	tsoSeconds     prometheus.Histogram
	ids            *prometheus.CounterVec
	failovers      prometheus.Counter
	duplicates     prometheus.Counter
	// Scheduling.
	operators         *prometheus.GaugeVec   // by kind and state (queued, running)
	operatorsFinished *prometheus.CounterVec // by kind and final state
	limitWaits        *prometheus.GaugeVec   // operators waiting for the controller's budget, by kind
	balanceScore      *prometheus.GaugeVec   // by node
	stepSeconds       *prometheus.HistogramVec
	tickSeconds       prometheus.Histogram // a scheduling tick: the view of every shard and the coordinator's pass
	// The cluster as the primary sees it (published by the primary only; cleared when it
	// steps down, so that a sum over every PCS counts it once).
	clusterNodes           *prometheus.GaugeVec // data nodes by state
	clusterShards          prometheus.Gauge
	clusterUnderReplicated prometheus.Gauge
	clusterBelowMinInSync  prometheus.Gauge
	nodeCapacity, nodeUsed *prometheus.GaugeVec // bytes, by node
	nodeReads, nodeWrites  *prometheus.GaugeVec // keys per second, by node
	nodeLeadKeys           *prometheus.GaugeVec // keys per second of the shards a node leads
	hotNodes               prometheus.Gauge
	loadSplits             prometheus.Counter
	merges                 prometheus.Counter
	replicaLagMax          prometheus.Gauge
	ddlJobs                *prometheus.GaugeVec // by kind
}

func newMetrics(s *Server) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcs_fsm_apply_duration_seconds", Help: "Time to apply one command to the metadata state machine.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}),
		proposeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcs_raft_apply_duration_seconds", Help: "Time from proposing a command on the primary to its application (replicated, persisted, applied).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		grpcSeconds: rpcmetrics.Histogram("pcs_grpc_request_duration_seconds", "gRPC request latency by method and code (streams: whole stream)."),
		tsoRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_tso_requests_total", Help: "TSO batches served."}),
		tsoSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pcs_tso_batch_duration_seconds",
			Help: "Time to serve one TSO batch on the primary (lease renewal and window extension included).", Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18)}),
		tsoTimestamps: prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_tso_timestamps_total", Help: "Timestamps served."}),
		ids:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pcs_ids_allocated_total", Help: "Ids handed out, by kind."}, []string{"kind"}),
		failovers:     prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_primary_takeovers_total", Help: "Times this node completed a takeover as primary."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_requests_deduplicated_total",
			Help: "Retried client requests this node, as primary, answered with the recorded outcome instead of applying them again."}),
		operators: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_schedule_operators",
			Help: "Operators queued or running on the primary, by kind and state."}, []string{"kind", "state"}),
		operatorsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pcs_schedule_operators_finished_total",
			Help: "Operators finished, by kind and final state (done, cancelled, timeout)."}, []string{"kind", "state"}),
		limitWaits: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_schedule_limit_waits",
			Help: "Operators waiting in the queue for the controller's budget, by kind."}, []string{"kind"}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pcs_schedule_step_duration_seconds",
			Help:    "Time from an operator step's start (admission or the previous step) to the catalog and the nodes showing it done, by step.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"step"}),
		tickSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pcs_schedule_tick_duration_seconds",
			Help:    "Time of one scheduling tick on the primary: reading every shard into a view and the checkers' and schedulers' pass over it (the patrol).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		clusterNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_cluster_nodes",
			Help: "Data nodes by state (up, down, offline, tombstone), as the primary sees them; 0 on the other members."}, []string{"state"}),
		clusterShards: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pcs_cluster_shards",
			Help: "Shards of every table (published by the primary)."}),
		clusterBelowMinInSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pcs_cluster_shards_below_min_in_sync",
			Help: "Shards with fewer live replicas in their configuration than their min-in-sync: they acknowledge no write (primary only)."}),
		clusterUnderReplicated: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pcs_cluster_shards_under_replicated",
			Help: "Shards of public tables with fewer live replicas (on nodes not down) than their table asks (published by the primary)."}),
		nodeCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_cluster_node_capacity_bytes",
			Help: "A data node's capacity as it reports it, by node (published by the primary; 0: unknown)."}, []string{"node"}),
		nodeUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_cluster_node_used_bytes",
			Help: "Bytes of the shards a data node holds, from their primaries' reports, by node (published by the primary)."}, []string{"node"}),
		nodeReads: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_cluster_node_read_keys_per_second",
			Help: "Keys a data node read per second over its replicas, as it last reported (primary only)."}, []string{"node"}),
		nodeWrites: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_cluster_node_write_keys_per_second",
			Help: "Keys a data node wrote per second over its replicas (primaries and followers), as it last reported (primary only)."}, []string{"node"}),
		nodeLeadKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_schedule_node_lead_keys_per_second",
			Help: "Keys read and written per second of the shards a data node leads, moving averages: the load hot scheduling balances, by node (primary only)."}, []string{"node"}),
		hotNodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pcs_schedule_hot_nodes",
			Help: "Data nodes leading more than the mean load x (1 + hot-ratio) (primary only)."}),
		loadSplits: prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_schedule_load_splits_total",
			Help: "Shards split by load by the hot scheduler (this member, while primary)."}),
		merges: prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_schedule_merges_total",
			Help: "Shard merges recorded in the catalog (this member, while primary)."}),
		replicaLagMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pcs_cluster_replica_lag_max_entries",
			Help: "The most log entries any shard replica is behind its primary, from the replicas' last reports (primary only)."}),
		ddlJobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_ddl_jobs",
			Help: "DDL jobs under way, by kind: create, drop, alter (primary only)."}, []string{"kind"}),
		balanceScore: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_schedule_balance_score",
			Help: "Each up data node's balance score: mean deviation of its replica count and bytes from its capacity share (0 = balanced)."}, []string{"node"}),
	}
	// Every kind, state and step is exported from the start (at 0), so dashboards and alerts
	// see series, not gaps, before the first operator.
	for _, k := range operator.Kinds {
		for _, st := range []operator.State{operator.Done, operator.Cancelled, operator.TimedOut} {
			m.operatorsFinished.WithLabelValues(k.String(), st.String())
		}
	}
	for k := operator.AddLearner; k <= operator.Split; k++ {
		m.stepSeconds.WithLabelValues(k.String())
	}
	m.zeroSchedule()
	m.zeroJobs()
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.applySeconds, m.proposeSeconds, m.grpcSeconds, m.tsoRequests, m.tsoTimestamps, m.tsoSeconds, m.ids, m.failovers, m.duplicates,
		m.operators, m.operatorsFinished, m.limitWaits, m.balanceScore, m.stepSeconds, m.tickSeconds,
		m.clusterNodes, m.clusterShards, m.clusterUnderReplicated, m.clusterBelowMinInSync, m.nodeCapacity, m.nodeUsed,
		m.nodeReads, m.nodeWrites, m.nodeLeadKeys, m.hotNodes, m.loadSplits, m.merges, m.replicaLagMax, m.ddlJobs,
		gauge("pcs_node_state", "Node state: 1 election, 2 recovery, 3 running.", func() float64 { return float64(s.State()) }),
		gauge("pcs_raft_state", "Raft role: 0 follower, 1 candidate, 2 leader, 3 shutdown.", func() float64 { return float64(s.raft.State()) }),
		gauge("pcs_raft_is_primary", "1 if this node is the primary.", func() float64 {
			if s.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("pcs_raft_term", "Current Raft term.", func() float64 { return float64(parseUint(s.raft.Stats()["term"])) }),
		gauge("pcs_raft_commit_index", "Raft commit index.", func() float64 { return float64(s.raft.CommitIndex()) }),
		gauge("pcs_raft_applied_index", "Raft index applied to the metadata.", func() float64 { return float64(s.fsm.Position().AppliedIndex) }),
		gauge("pcs_raft_last_index", "Last Raft log index.", func() float64 { return float64(s.raft.LastIndex()) }),
		gauge("pcs_meta_revision", "Cluster revision of the local metadata.", func() float64 { return float64(s.fsm.Position().Revision) }),
		gauge("pcs_meta_kv_bytes", "Bytes of keys and values in the system key-value namespace.", func() float64 { return float64(s.fsm.KVBytes()) }),
		gauge("pcs_meta_quota_bytes", "The quota of the system key-value namespace (0: none).", func() float64 { return float64(s.cfg.QuotaBytes) }),
		gauge("pcs_meta_sessions", "Client sessions the metadata keeps for exactly-once writes.", func() float64 { n, _ := s.fsm.SessionSize(); return float64(n) }),
		gauge("pcs_meta_session_bytes", "Bytes the client sessions hold, about.", func() float64 { _, b := s.fsm.SessionSize(); return float64(b) }),
	)
	return m
}

func (m *metrics) observeApply(d time.Duration) { m.applySeconds.Observe(d.Seconds()) }

// observeSchedule publishes the coordinator's state after a tick.
func (m *metrics) observeSchedule(c *schedule.Coordinator, v *view.Cluster) {
	m.zeroSchedule()
	byShard := map[uint64]*operator.Operator{}
	for _, op := range c.Operators(false) {
		m.operators.WithLabelValues(op.Kind.String(), op.State.String()).Inc()
		if op.State == operator.Queued {
			m.limitWaits.WithLabelValues(op.Kind.String()).Inc()
		}
		byShard[op.Shard] = op
	}
	// One load model for both: scores with the operators under way projected, the led load
	// as it is now.
	l := scheduler.Compute(v, byShard)
	m.balanceScore.Reset()
	m.nodeLeadKeys.Reset()
	for _, ld := range l.List {
		id := strconv.FormatUint(ld.Node.ID, 10)
		m.balanceScore.WithLabelValues(id).Set(l.Score(ld))
		m.nodeLeadKeys.WithLabelValues(id).Set(ld.KeysNow)
	}
	m.hotNodes.Set(float64(len(c.HotSince())))
	m.observeCluster(v)
}

// observeCluster publishes node states, capacity and use, and under-replicated shards.
func (m *metrics) observeCluster(v *view.Cluster) {
	m.clusterNodes.Reset()
	m.nodeCapacity.Reset()
	m.nodeUsed.Reset()
	down := map[uint64]bool{}
	for _, st := range []view.NodeState{view.Up, view.Down, view.Offline, view.Tombstone} {
		m.clusterNodes.WithLabelValues(st.String()).Set(0)
	}
	used := map[uint64]uint64{}
	for _, n := range v.Nodes {
		m.clusterNodes.WithLabelValues(n.State.String()).Inc()
		down[n.ID] = n.State == view.Down || n.State == view.Tombstone
		used[n.ID] = 0
		if n.State != view.Tombstone {
			m.nodeCapacity.WithLabelValues(strconv.FormatUint(n.ID, 10)).Set(float64(n.Capacity))
		}
	}
	under, belowFloor := 0, 0
	for _, sh := range v.Shards {
		live := 0
		for _, r := range sh.Replicas {
			used[r] += sh.Size
			if !down[r] {
				live++
			}
		}
		if t := v.Tables[sh.Table]; t != nil && t.Public && live < t.Replicas {
			under++
		}
		if live < sh.MinInSync {
			belowFloor++
		}
	}
	for id, b := range used {
		if !down[id] || b > 0 {
			m.nodeUsed.WithLabelValues(strconv.FormatUint(id, 10)).Set(float64(b))
		}
	}
	m.clusterShards.Set(float64(len(v.Shards)))
	m.clusterUnderReplicated.Set(float64(under))
	m.clusterBelowMinInSync.Set(float64(belowFloor))
}

// zeroSchedule sets the operator gauges of every kind and state to 0.
func (m *metrics) zeroSchedule() {
	m.operators.Reset()
	m.limitWaits.Reset()
	for _, k := range operator.Kinds {
		m.operators.WithLabelValues(k.String(), operator.Queued.String()).Set(0)
		m.operators.WithLabelValues(k.String(), operator.Running.String()).Set(0)
		m.limitWaits.WithLabelValues(k.String()).Set(0)
	}
}

// ddlKinds are the kinds of DDL job.
var ddlKinds = []string{"create", "drop", "alter"}

func (m *metrics) zeroJobs() {
	for _, k := range ddlKinds {
		m.ddlJobs.WithLabelValues(k).Set(0)
	}
}

// observeLoad publishes DDL jobs under way, the nodes' read and write rates and the largest
// replica lag.
func (m *metrics) observeLoad(jobs map[string]int, rates map[uint64][2]float64, maxLag uint64) {
	m.zeroJobs()
	for k, n := range jobs {
		m.ddlJobs.WithLabelValues(k).Set(float64(n))
	}
	m.nodeReads.Reset()
	m.nodeWrites.Reset()
	for id, r := range rates {
		m.nodeReads.WithLabelValues(strconv.FormatUint(id, 10)).Set(r[0])
		m.nodeWrites.WithLabelValues(strconv.FormatUint(id, 10)).Set(r[1])
	}
	m.replicaLagMax.Set(float64(maxLag))
}

// clearCluster drops what only the primary publishes (it stepped down).
func (m *metrics) clearCluster() {
	m.zeroSchedule()
	m.zeroJobs()
	m.nodeReads.Reset()
	m.nodeWrites.Reset()
	m.nodeLeadKeys.Reset()
	m.hotNodes.Set(0)
	m.replicaLagMax.Set(0)
	m.balanceScore.Reset()
	m.clusterNodes.Reset()
	m.nodeCapacity.Reset()
	m.nodeUsed.Reset()
	m.clusterShards.Set(0)
	m.clusterUnderReplicated.Set(0)
	m.clusterBelowMinInSync.Set(0)
}
