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
	ids            *prometheus.CounterVec
	failovers      prometheus.Counter
	duplicates     prometheus.Counter
	// Scheduling.
	operators         *prometheus.GaugeVec   // by kind and state (queued, running)
	operatorsFinished *prometheus.CounterVec // by kind and final state
	limitWaits        *prometheus.GaugeVec   // operators waiting for the controller's budget, by kind
	balanceScore      *prometheus.GaugeVec   // by node
	stepSeconds       *prometheus.HistogramVec
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
		grpcSeconds:   rpcmetrics.Histogram("pcs_grpc_request_duration_seconds", "gRPC request latency by method and code (streams: whole stream)."),
		tsoRequests:   prometheus.NewCounter(prometheus.CounterOpts{Name: "pcs_tso_requests_total", Help: "TSO batches served."}),
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
		balanceScore: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pcs_schedule_balance_score",
			Help: "Each up data node's balance score: mean deviation of its replica count and bytes from its capacity share (0 = balanced)."}, []string{"node"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.applySeconds, m.proposeSeconds, m.grpcSeconds, m.tsoRequests, m.tsoTimestamps, m.ids, m.failovers, m.duplicates,
		m.operators, m.operatorsFinished, m.limitWaits, m.balanceScore, m.stepSeconds,
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
		gauge("pcs_revision", "Cluster revision of the local metadata.", func() float64 { return float64(s.fsm.Position().Revision) }),
	)
	return m
}

func (m *metrics) observeApply(d time.Duration) { m.applySeconds.Observe(d.Seconds()) }

// observeSchedule publishes the coordinator's state after a tick.
func (m *metrics) observeSchedule(c *schedule.Coordinator, v *view.Cluster) {
	m.operators.Reset()
	m.limitWaits.Reset()
	byShard := map[uint64]*operator.Operator{}
	for _, op := range c.Operators(false) {
		m.operators.WithLabelValues(op.Kind.String(), op.State.String()).Inc()
		if op.State == operator.Queued {
			m.limitWaits.WithLabelValues(op.Kind.String()).Inc()
		}
		byShard[op.Shard] = op
	}
	m.balanceScore.Reset()
	for id, sc := range loadScores(v, byShard) {
		m.balanceScore.WithLabelValues(strconv.FormatUint(id, 10)).Set(sc)
	}
}
