package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/schedule"
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Reserved keys (0x00 prefix: clients cannot write them) of the scheduler's replicated state.
var (
	opPrefix          = []byte("\x00pcs/schedule/op/")
	scheduleConfigKey = []byte("\x00pcs/schedule/config")
)

func opKey(id uint64) []byte { return fmt.Appendf(slices.Clone(opPrefix), "%020d", id) }

// scheduling is the primary's coordinator, behind a lock: the loop ticks it, handlers submit
// and cancel operators.
type scheduling struct {
	mu struct {
		sync.Mutex
		coord *schedule.Coordinator // nil when this node is not the primary
	}
	origin    time.Time
	observed  time.Time // last metrics update; the loop's own
	configRev uint64    // revision of the config the coordinator has; the loop's own
}

func (sc *scheduling) now() time.Duration { return time.Since(sc.origin) }

// with runs f on the coordinator, or fails if this node does not run one.
func (s *Server) withCoordinator(f func(c *schedule.Coordinator) error) error {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	if s.sched.mu.coord == nil {
		return s.notPrimary()
	}
	return f(s.sched.mu.coord)
}

// scheduleConfig reads the runtime config from the replicated state (defaults if unset).
func (s *Server) scheduleConfig() schedule.Config {
	kv, _ := s.fsm.Get(scheduleConfigKey)
	return s.parseScheduleConfig(kv)
}

func (s *Server) parseScheduleConfig(kv *pcspb.KeyValue) schedule.Config {
	cfg := schedule.DefaultConfig()
	if kv == nil {
		return cfg
	}
	var set map[string]string
	if err := json.Unmarshal(kv.Value, &set); err != nil {
		s.log.Warn("schedule config unreadable; defaults in force", "err", err)
		return cfg
	}
	keys := slices.Clone(schedule.Settings)
	for k := range set {
		if strings.HasPrefix(k, schedule.PrimaryPolicyPrefix) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if v, ok := set[k]; ok {
			if err := cfg.Set(k, v); err != nil {
				s.log.Warn("schedule setting ignored", "key", k, "value", v, "err", err)
			}
		}
	}
	return cfg
}

// scheduleLoop runs the coordinator on the primary: it resumes the persisted operators, then
// ticks every DDLInterval, applying the configuration changes of the operators' steps and
// persisting the operators.
func (s *Server) scheduleLoop(ctx context.Context) {
	s.sched.mu.Lock()
	if s.sched.origin.IsZero() {
		s.sched.origin = time.Now()
	}
	coord := schedule.New(s.scheduleConfig(), func(kind string) uint64 {
		id, err := s.allocIDs(ctx, kind, 1)
		if err != nil {
			return 0
		}
		return id
	})
	var resumed []*operator.Operator
	kvs, _, _ := s.fsm.Range(opPrefix, nil, 1_000_000)
	for _, kv := range kvs {
		p := &pcspb.Operator{}
		if err := proto.Unmarshal(kv.Value, p); err != nil {
			s.log.Warn("persisted operator unreadable; dropped", "key", string(kv.Key), "err", err)
			continue
		}
		op, err := operator.FromProto(p)
		if err != nil {
			s.log.Warn("persisted operator invalid; dropped", "key", string(kv.Key), "err", err)
			continue
		}
		resumed = append(resumed, op)
	}
	coord.Resume(resumed, s.sched.now())
	s.sched.mu.coord = coord
	s.sched.mu.Unlock()
	if len(resumed) > 0 {
		s.log.Info("operators resumed", "count", len(resumed))
	}
	defer func() {
		s.sched.mu.Lock()
		s.sched.mu.coord = nil
		s.sched.mu.Unlock()
		s.shardReq.set(nil, nil)
		s.metrics.clearCluster()
	}()
	t := time.NewTicker(s.cfg.DDLInterval)
	defer t.Stop()
	nodeStates := map[uint64]cluster.State{} // for the event log
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.live.WarmedUp() {
			// During the warm-up, only shard primaries on nodes silent for lease + margin since
			// this primary took office move (DESIGN §6): their leases have lapsed whoever
			// granted them. Everything that declares nodes down waits for the warm-up.
			v, err := s.scheduleView(ctx)
			if err != nil {
				return
			}
			s.sched.mu.Lock()
			fo := coord.WarmupFailover(v)
			s.sched.mu.Unlock()
			s.applyFailovers(ctx, fo)
			continue
		}
		start := time.Now()
		s.scheduleTick(ctx)
		s.metrics.tickSeconds.Observe(time.Since(start).Seconds())
		s.noteNodeStates(nodeStates)
		// A tick reads every shard: at millions of them it takes a while, and the loop then
		// keeps to a quarter of one core (the patrol paces itself by the time between ticks).
		if rest := 3*time.Since(start) - s.cfg.DDLInterval; rest > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(rest):
			}
		}
	}
}

// noteNodeStates puts a data node's liveness changes, as this primary sees them, in the event
// log; seen holds the states of the previous call.
func (s *Server) noteNodeStates(seen map[uint64]cluster.State) {
	for _, n := range s.fsm.DataNodes() {
		if n.Tombstone {
			continue
		}
		st := s.live.State(n.Id)
		if old, ok := seen[n.Id]; ok && old != st {
			s.events.observe("node", fmt.Sprintf("node %d is %s (was %s)", n.Id, st, old), time.Now())
		}
		seen[n.Id] = st
	}
}

func (s *Server) scheduleTick(ctx context.Context) {
	v, err := s.scheduleView(ctx)
	if err != nil {
		return // the term or the server ended while the view was read: act on nothing
	}
	s.sched.mu.Lock()
	coord := s.sched.mu.coord
	if kv, _ := s.fsm.Get(scheduleConfigKey); kv.GetModRevision() != s.sched.configRev {
		s.sched.configRev = kv.GetModRevision() // parsed again only when it changes
		coord.SetConfig(s.parseScheduleConfig(kv))
	}
	act := coord.Tick(s.sched.now(), v)
	if time.Since(s.sched.observed) >= time.Second {
		s.sched.observed = time.Now()
		s.metrics.observeSchedule(coord, v)
		s.observeLoad()
	}
	// Copies taken under the lock: handlers may cancel an operator while this loop saves it.
	saves := make([]*pcspb.Operator, 0, len(act.Save))
	for _, op := range act.Save {
		saves = append(saves, op.ToProto())
	}
	finished := make([]*pcspb.Operator, 0, len(act.Finished))
	for _, op := range act.Finished {
		finished = append(finished, op.ToProto())
	}
	s.sched.mu.Unlock()
	if len(saves)+len(finished)+len(act.Failovers) > 0 {
		var span trace.Span
		ctx, span = s.span(ctx, "pcs.schedule", attribute.Int("operators.saved", len(saves)), attribute.Int("operators.finished", len(finished)),
			attribute.Int("failovers", len(act.Failovers)))
		defer span.End()
	}
	s.applyFailovers(ctx, act.Failovers)
	s.shardReq.set(act.Splits, act.Merges)
	for _, st := range act.StepsDone {
		s.metrics.stepSeconds.WithLabelValues(st.Kind.String()).Observe(st.Took.Seconds())
	}
	for _, op := range saves {
		if op.Id == 0 {
			continue
		}
		if err := s.saveOperator(ctx, op); err != nil {
			s.log.Warn("persisting operator", "op", op.Id, "err", err)
		}
	}
	for _, op := range finished {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_Delete{Delete: &pcspb.CmdDelete{Key: opKey(op.Id)}}}); err != nil {
			s.log.Warn("removing finished operator", "op", op.Id, "err", err)
		}
		s.metrics.operatorsFinished.WithLabelValues(op.Kind, op.State).Inc()
		if op.State == operator.Done.String() && slices.ContainsFunc(op.Steps, func(st *pcspb.OperatorStep) bool { return st.ByLoad }) {
			s.metrics.loadSplits.Inc()
		}
		s.log.Info("operator finished", "op", op.Id, "kind", op.Kind, "shard", op.ShardId, "state", op.State, "reason", op.Reason)
		s.events.observe("operator", fmt.Sprintf("operator %d (%s) on shard %d %s: %s", op.Id, op.Kind, op.ShardId, op.State, op.Reason), time.Now())
	}
	for _, ch := range act.Changes {
		_, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_ChangeReplicas{ChangeReplicas: ch.Cmd}})
		s.sched.mu.Lock()
		coord.Applied(ch, err, s.sched.now())
		s.sched.mu.Unlock()
		if err != nil {
			s.log.Warn("operator step refused", "op", ch.Op.ID, "shard", ch.Cmd.ShardId, "change", ch.Cmd.String(), "err", err)
			continue
		}
		s.log.Info("operator step", "op", ch.Op.ID, "kind", ch.Op.Kind.String(), "shard", ch.Cmd.ShardId, "change", ch.Cmd.String())
	}
}

func (s *Server) saveOperator(ctx context.Context, op *pcspb.Operator) error {
	b, err := proto.Marshal(op)
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: opKey(op.Id), Value: b}}})
	return err
}

// scheduleView builds the coordinator's picture from the catalog and the nodes' reports. At
// millions of shards that takes seconds: it stops between tables when ctx ends (a term or the
// server ending need not wait for it) and returns ctx's error, never a partial picture.
func (s *Server) scheduleView(ctx context.Context) (*view.Cluster, error) {
	v := &view.Cluster{Tables: map[uint64]*view.Table{}, CanMerge: s.fsm.ClusterVersion() >= meta.VersionMerge, Linked: true}
	warm := s.live.WarmedUp()
	for _, n := range s.fsm.DataNodes() {
		nv := &view.Node{ID: n.Id, Labels: n.Labels, Capacity: n.CapacityBytes, Heard: s.live.Heard(n.Id)}
		switch {
		case n.Tombstone:
			nv.State = view.Tombstone
		case s.nodeLost(n.Id), !nv.Heard && warm:
			nv.State = view.Down // lost: silent past its lease and the margin (or never heard since the warm-up)
		case n.Offline:
			nv.State = view.Offline
		}
		v.Nodes = append(v.Nodes, nv)
	}
	slices.SortFunc(v.Nodes, func(a, b *view.Node) int { return cmpU64(a.ID, b.ID) })
	for _, t := range s.fsm.Tables() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		v.Tables[t.Id] = &view.Table{ID: t.Id, Name: t.Name, Group: t.ShardGroup, Replicas: int(t.Replicas), IsolationLabel: t.IsolationLabel, Nodes: t.Nodes,
			Public: t.State == pcspb.TableState_TABLE_STATE_PUBLIC}
		// One allocation each for the table's shards, their keys and their in-line lists: at
		// millions of shards, a tick's view is built in a fraction of the time and garbage.
		shards := s.fsm.TableShards(t.Id) // in key order
		ar := viewArena{shards: make([]view.Shard, len(shards)), inLine: make([]uint64, 0, 3*len(shards)), keys: tableKeys(shards)}
		s.live.Read(func(q cluster.Reader) {
			for i, sh := range shards {
				fillViewShard(&ar.shards[i], sh, q, &ar)
			}
		})
		var prev *view.Shard
		for i, sh := range shards {
			vs := &ar.shards[i]
			if v.State(sh.Primary) == view.Down {
				vs.Positions = s.replicaPositions(sh)
			}
			if prev != nil && prev.Partition == vs.Partition && prev.End == vs.Start && prev.End != "" {
				prev.Right = vs
			}
			prev = vs
			v.Shards = append(v.Shards, vs)
		}
	}
	slices.SortFunc(v.Shards, func(a, b *view.Shard) int { return cmpU64(a.ID, b.ID) })
	return v, nil
}

// replicaPositions returns the log position each replica of sh that is heartbeating now
// reports it holds (failover promotes the furthest ahead).
func (s *Server) replicaPositions(sh *pcspb.Shard) map[uint64]uint64 {
	out := map[uint64]uint64{}
	for _, r := range sh.Replicas {
		if s.live.State(r) != cluster.Up {
			continue
		}
		if st := s.live.ShardStats(r, sh.Id); st != nil {
			out[r] = st.ReplicaPositions[r]
		}
	}
	return out
}

// applyFailovers applies the coordinator's failovers: at once, each on the configuration it was
// decided on (a change since refuses it; the next tick decides again).
func (s *Server) applyFailovers(ctx context.Context, cmds []*pcspb.CmdChangePrimary) {
	for _, cmd := range cmds {
		if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_ChangePrimary{ChangePrimary: cmd}}); err != nil {
			s.log.Warn("changing shard primary", "shard", cmd.ShardId, "err", err)
			continue
		}
		s.log.Info("shard primary changed", "shard", cmd.ShardId, "primary", cmd.NewPrimary, "lost_node", cmd.RemoveNode, "term", cmd.Term+1)
	}
}

// viewShard is the scheduler's picture of one shard: the catalog's configuration, the size its
// primary reports and the replicas the primary reports in line (same term and configuration,
// the primary's own position, and the replica's node holding it).
func (s *Server) viewShard(sh *pcspb.Shard) *view.Shard {
	vs := &view.Shard{}
	s.live.Read(func(q cluster.Reader) { fillViewShard(vs, sh, q, nil) })
	return vs
}

// viewArena holds one table's view shards, keys and in-line lists in a few allocations.
type viewArena struct {
	shards []view.Shard
	inLine []uint64 // appended to; each shard's list is a slice of it
	keys   string   // the table's shards' start and end keys, end to end
	off    int
}

// tableKeys returns every shard's start and end key, in order, as one string.
func tableKeys(shards []*pcspb.Shard) string {
	n := 0
	for _, sh := range shards {
		n += len(sh.Start) + len(sh.End)
	}
	var b strings.Builder
	b.Grow(n)
	for _, sh := range shards {
		b.Write(sh.Start)
		b.Write(sh.End)
	}
	return b.String()
}

// key returns the next n bytes of the arena's keys (a copy of k, made once for the table).
func (a *viewArena) key(k []byte) string {
	out := a.keys[a.off : a.off+len(k)]
	a.off += len(k)
	return out
}

// fillViewShard sets vs to sh's picture (see viewShard); ar, if set, provides the memory.
func fillViewShard(vs *view.Shard, sh *pcspb.Shard, q cluster.Reader, ar *viewArena) {
	*vs = view.Shard{ID: sh.Id, Table: sh.TableId, MinInSync: int(sh.MinInSyncOrOne()), Version: sh.Epoch.GetVersion(), ConfVer: sh.Epoch.GetConfVer(), Term: sh.Term,
		Primary: sh.Primary, Replicas: sh.Replicas, Learners: sh.Learners, Partition: sh.Partition}
	if ar != nil {
		vs.Start, vs.End = ar.key(sh.Start), ar.key(sh.End)
	} else {
		vs.Start, vs.End = string(sh.Start), string(sh.End)
	}
	ld := q.ShardLoad(sh.Id)
	vs.Load = view.Load{Reads: ld.Reads, Writes: ld.Writes, ReadBytes: ld.ReadBytes, WriteBytes: ld.WriteBytes}
	st := q.ShardStats(sh.Primary, sh.Id)
	if st == nil {
		return
	}
	vs.Size = st.SizeBytes
	own, ok := st.ReplicaPositions[sh.Primary]
	if !ok || st.Term != sh.Term || st.ConfVer != sh.Epoch.GetConfVer() {
		return
	}
	var inLine []uint64
	if ar != nil {
		inLine = ar.inLine[len(ar.inLine):len(ar.inLine)]
	}
	for _, list := range [2][]uint64{sh.Replicas, sh.Learners} {
		for _, r := range list {
			if pos, ok := st.ReplicaPositions[r]; ok && pos == own && q.Holds(r, sh.Id) {
				inLine = append(inLine, r)
			}
		}
	}
	if ar != nil && len(inLine) <= cap(ar.inLine)-len(ar.inLine) { // written in the arena: claim it
		ar.inLine = ar.inLine[:len(ar.inLine)+len(inLine)]
	}
	vs.InLine = inLine[:len(inLine):len(inLine)]
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// submit queues an operator built from the current catalog and persists it before answering
// (under the coordinator's lock, so no later save of it by the loop can land first). It
// returns a copy: the operator itself belongs to the coordinator.
func (s *Server) submit(ctx context.Context, sh *pcspb.Shard, kind operator.Kind, reason string, steps ...operator.Step) (*pcspb.Operator, error) {
	op := operator.New(kind, s.viewShard(sh), reason, steps...)
	var p *pcspb.Operator
	err := s.withCoordinator(func(c *schedule.Coordinator) error {
		if err := c.Submit(op, s.sched.now()); err != nil {
			return err
		}
		p = op.ToProto()
		if err := s.saveOperator(ctx, p); err != nil {
			_, _ = c.Cancel(op.ID, s.sched.now())
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (v *service) ListOperators(ctx context.Context, req *pcspb.ListOperatorsRequest) (*pcspb.ListOperatorsResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.ListOperators(ctx, req)
	}
	resp := &pcspb.ListOperatorsResponse{}
	err = v.s.withCoordinator(func(c *schedule.Coordinator) error {
		for _, op := range c.Operators(req.Finished) {
			if req.ShardId == 0 || op.Shard == req.ShardId {
				resp.Operators = append(resp.Operators, op.ToProto())
			}
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func (v *service) AddOperator(ctx context.Context, req *pcspb.AddOperatorRequest) (*pcspb.AddOperatorResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.AddOperator(ctx, req)
	}
	sh, _, err := s.fsm.ShardByID(req.ShardId)
	if err != nil {
		return nil, toStatus(err)
	}
	for _, n := range []uint64{req.FromNode, req.ToNode} {
		if n != 0 {
			if _, err := s.dataNode(n); err != nil {
				return nil, toStatus(err)
			}
		}
	}
	if req.Kind == "move" && req.FromNode != 0 && req.ToNode != 0 && req.FromNode != req.ToNode {
		if err := s.checkMove(sh, req.FromNode, req.ToNode); err != nil {
			return nil, toStatus(err)
		}
	}
	steps, err := operator.AdminSteps(&view.Shard{ID: sh.Id, Primary: sh.Primary, Replicas: sh.Replicas, Learners: sh.Learners}, req.Kind, req.FromNode, req.ToNode)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	op, err := s.submit(ctx, sh, operator.Admin, "asked: "+req.Kind, steps...)
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("operator submitted", "op", op.Id, "shard", sh.Id, "kind", req.Kind, "from", req.FromNode, "to", req.ToNode)
	return &pcspb.AddOperatorResponse{Operator: op}, nil
}

func (v *service) CancelOperator(ctx context.Context, req *pcspb.CancelOperatorRequest) (*pcspb.CancelOperatorResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.CancelOperator(ctx, req)
	}
	var op *operator.Operator
	err = v.s.withCoordinator(func(c *schedule.Coordinator) error {
		var err error
		op, err = c.Cancel(req.Id, v.s.sched.now())
		return err
	})
	if errors.Is(err, schedule.ErrNoOperator) {
		return nil, toStatus(fmt.Errorf("%w: operator %d is not queued or running", ErrOperatorNotFound, req.Id))
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := v.s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_Delete{Delete: &pcspb.CmdDelete{Key: opKey(op.ID)}}}); err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.CancelOperatorResponse{}, nil
}

func (v *service) GetScheduleConfig(ctx context.Context, req *pcspb.ScheduleConfigRequest) (*pcspb.ScheduleConfigResponse, error) {
	return v.s.scheduleConfigResponse(), nil
}

func (s *Server) scheduleConfigResponse() *pcspb.ScheduleConfigResponse {
	cfg := s.scheduleConfig()
	resp := &pcspb.ScheduleConfigResponse{Config: cfg.Get()}
	for _, n := range schedule.SchedulerNames() {
		resp.Schedulers = append(resp.Schedulers, &pcspb.SchedulerInfo{Name: n, Paused: cfg.Paused[n]})
	}
	return resp
}

func (v *service) SetScheduleConfig(ctx context.Context, req *pcspb.SetScheduleConfigRequest) (*pcspb.ScheduleConfigResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.SetScheduleConfig(ctx, req)
	}
	if table, ok := strings.CutPrefix(req.Key, schedule.PrimaryPolicyPrefix); ok && table != "" {
		if _, _, err := s.fsm.Table(table); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := s.updateScheduleConfig(ctx, func(cfg *schedule.Config) error { return cfg.Set(req.Key, req.Value) }); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("schedule setting changed", "key", req.Key, "value", req.Value)
	return s.scheduleConfigResponse(), nil
}

func (v *service) EvictPrimaries(ctx context.Context, req *pcspb.EvictPrimariesRequest) (*pcspb.ScheduleConfigResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.EvictPrimaries(ctx, req)
	}
	known := false
	for _, n := range s.fsm.DataNodes() {
		known = known || (n.Id == req.NodeId && !n.Tombstone)
	}
	if !known && !req.Undo {
		return nil, toStatus(fmt.Errorf("%w: data node %d", meta.ErrNodeNotFound, req.NodeId))
	}
	err = s.updateScheduleConfig(ctx, func(cfg *schedule.Config) error {
		ids := []string{}
		for id, on := range cfg.EvictPrimaries {
			if on && id != req.NodeId {
				ids = append(ids, strconv.FormatUint(id, 10))
			}
		}
		if !req.Undo {
			ids = append(ids, strconv.FormatUint(req.NodeId, 10))
		}
		return cfg.Set("evict-primaries", strings.Join(ids, ","))
	})
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("evict-primaries changed", "node", req.NodeId, "undo", req.Undo)
	return s.scheduleConfigResponse(), nil
}

// updateScheduleConfig changes the replicated runtime configuration by a compare-and-swap of
// its key, retried a few times if another change lands in between (so concurrent changes of
// different settings both take effect).
func (s *Server) updateScheduleConfig(ctx context.Context, change func(*schedule.Config) error) error {
	return s.updateSystemKey(ctx, scheduleConfigKey, s.applyRequest, func(kv *pcspb.KeyValue) ([]byte, error) {
		cfg := s.parseScheduleConfig(kv)
		if err := change(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return json.Marshal(cfg.Get())
	})
}

// updateSystemKey rewrites a system key from its current value (next builds the new one) with a
// compare-and-put on its version, again from the new current value if another change won.
func (s *Server) updateSystemKey(ctx context.Context, key []byte, apply func(context.Context, *pcspb.Command) (*meta.Result, error),
	next func(*pcspb.KeyValue) ([]byte, error)) error {
	for attempt := 0; ; attempt++ {
		kv, _ := s.fsm.Get(key)
		b, err := next(kv)
		if err != nil {
			return err
		}
		version := kv.GetVersion()
		_, err = apply(ctx, &pcspb.Command{Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: key, Value: b, ExpectedVersion: &version}}})
		if !errors.Is(err, meta.ErrVersionMismatch) || attempt == 4 {
			return err
		}
	}
}

// nodeLoads is every up node's load as the balancer sees it, with the operators under way
// projected.
func (s *Server) nodeLoads() *scheduler.Loads {
	v, _ := s.scheduleView(context.Background()) // (cannot fail without a deadline)
	ops := map[uint64]*operator.Operator{}
	_ = s.withCoordinator(func(c *schedule.Coordinator) error {
		for _, op := range c.Operators(false) {
			ops[op.Shard] = op
		}
		return nil
	})
	return scheduler.Compute(v, ops)
}

// observeLoad gathers what observeLoad of the metrics publishes: DDL jobs by kind, each data
// node's read and write rates, and the most entries a replica is behind its shard's primary.
func (s *Server) observeLoad() {
	jobs := map[string]int{}
	var maxLag uint64
	for _, t := range s.fsm.Tables() {
		if j := s.jobOf(t); j != nil {
			jobs[j.Kind]++
		}
		for _, sh := range s.fsm.TableShards(t.Id) {
			// Each replica's position as it reports it (shardLoad's, without building it).
			ps := s.live.ShardStats(sh.Primary, sh.Id)
			head, ok := ps.GetReplicaPositions()[sh.Primary]
			if !ok {
				continue
			}
			lag := func(r uint64) {
				if r == sh.Primary {
					return
				}
				if pos, ok := s.live.ShardStats(r, sh.Id).GetReplicaPositions()[r]; ok {
					maxLag = max(maxLag, head-min(pos, head))
				}
			}
			for _, r := range sh.Replicas {
				lag(r)
			}
			for _, r := range sh.Learners {
				lag(r)
			}
		}
	}
	rates := map[uint64][2]float64{}
	for _, n := range s.fsm.DataNodes() {
		r, w := s.live.NodeLoad(n.Id)
		rates[n.Id] = [2]float64{r, w}
	}
	s.metrics.observeLoad(jobs, rates, maxLag)
}
