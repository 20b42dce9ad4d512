package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/nodeconf"
	"github.com/postdb/pcs/internal/rpclimits"
	"github.com/postdb/pcs/internal/rpcmetrics"
	"github.com/postdb/pcs/internal/tso"
	"github.com/postdb/pcs/version"
)

// Limits of the gRPC surface.
const (
	maxMsgSize    = 4 << 20
	defaultRange  = 1000
	maxRange      = 10_000
	maxWatchBatch = 1000
	// watchProgressEvery: how often a watch reports revisions that matched none of its keys.
	watchProgressEvery = 100 * time.Millisecond
	maxIDsPerCall      = 1 << 20
	maxMemberChange    = 30 * time.Second
)

type service struct {
	pcspb.UnimplementedPCSServer
	s *Server
}

func newGRPCServer(s *Server) *grpc.Server {
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize)},
		rpcmetrics.ServerOptions(s.metrics.grpcSeconds)...)
	opts = append(opts, s.tlsServerOptions()...)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := s.checkClusterID(ctx); err != nil {
				return nil, toStatus(err)
			}
			resp, err := handler(ctx, req)
			if err == nil && s.cfg.loseReply != nil && s.cfg.loseReply(info.FullMethod) {
				return nil, status.Error(codes.Unavailable, "test: the reply was lost")
			}
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := s.checkClusterID(ss.Context()); err != nil {
				return toStatus(err)
			}
			return handler(srv, ss)
		}))
	opts = append(opts, s.cfg.Tracing.ServerOption())
	g := grpc.NewServer(append(opts, rpclimits.GRPC()...)...)
	pcspb.RegisterPCSServer(g, &service{s: s})
	return g
}

// checkClusterID refuses a caller that says it belongs to another cluster (a data node or
// client that was registered elsewhere).
func (s *Server) checkClusterID(ctx context.Context) error {
	vals := metadata.ValueFromIncomingContext(ctx, pcspb.ClusterIDHeader)
	if len(vals) == 0 || vals[0] == "" || s.ClusterID() == "" || vals[0] == s.ClusterID() {
		return nil
	}
	return fmt.Errorf("%w: the caller belongs to cluster %s; this is cluster %s", ErrClusterMismatch, vals[0], s.ClusterID())
}

// forwarded sends req, with forwarding switched off, to the primary through call.
func forwarded[Req proto.Message, Resp any](ctx context.Context, req Req, set func(Req), call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	r := proto.Clone(req).(Req)
	set(r)
	return call(ctx, r)
}

func (v *service) Status(ctx context.Context, req *pcspb.StatusRequest) (*pcspb.StatusResponse, error) {
	return v.s.status(req.WithDigest), nil
}

func (s *Server) status(withDigest bool) *pcspb.StatusResponse {
	stats := s.raft.Stats()
	name, addr := s.primary()
	resp := &pcspb.StatusResponse{
		Name:           s.cfg.Name,
		State:          s.State(),
		RaftState:      s.raft.State().String(),
		Term:           parseUint(stats["term"]),
		PrimaryName:    name,
		PrimaryAddr:    addr,
		CommitIndex:    s.raft.CommitIndex(),
		LastIndex:      s.raft.LastIndex(),
		ClientAddr:     s.ClientAddr(),
		PeerAddr:       s.PeerAddr(),
		HttpAddr:       s.HTTPAddr(),
		LastContactMs:  s.lastContactMs(),
		Version:        version.Get().String(),
		ClusterId:      s.ClusterID(),
		CommandVersion: s.commandVersion(),
		ClusterVersion: s.fsm.ClusterVersion(),
		Tracing: map[string]string{nodeconf.TraceRatio: nodeconf.FormatRatio(s.cfg.Tracing.Ratio()),
			nodeconf.TraceExporter: s.cfg.Tracing.Exporter()},
	}
	var pos meta.Position
	if withDigest {
		resp.Digest, pos = s.fsm.Digest()
	} else {
		pos = s.fsm.Position()
	}
	resp.Revision, resp.AppliedIndex = pos.Revision, pos.AppliedIndex
	return resp
}

func parseUint(s string) uint64 {
	var v uint64
	fmt.Sscan(s, &v)
	return v
}

func (s *Server) lastContactMs() int64 {
	if s.raft.State() == raft.Leader {
		return 0
	}
	lc := s.raft.LastContact()
	if lc.IsZero() {
		return -1
	}
	return time.Since(lc).Milliseconds()
}

// ---- reads ------------------------------------------------------------------------------------

// readIndex returns an index that covers every write acknowledged before the call: the
// primary's commit index, taken while its leadership is confirmed (by lease or a quorum round).
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	cli, err := s.route(ctx, true)
	if err != nil {
		var np *notPrimaryError
		if !errors.As(err, &np) || np.addr == "" {
			return 0, err
		}
		cli, err = s.peers.get(np.addr)
		if err != nil {
			return 0, err
		}
	}
	if cli != nil {
		resp, err := cli.ReadIndex(ctx, &pcspb.ReadIndexRequest{})
		if err != nil {
			return 0, err
		}
		return resp.Index, nil
	}
	idx := s.raft.CommitIndex()
	if !s.leaseValid() {
		if err := s.renewLease(); err != nil {
			return 0, s.notPrimary()
		}
	}
	return idx, nil
}

// readAt makes the local state fit for a read at the given consistency and returns its header.
func (s *Server) readAt(ctx context.Context, c pcspb.Consistency) (*pcspb.ReadHeader, error) {
	switch c {
	case pcspb.Consistency_CONSISTENCY_LINEARIZABLE:
		idx, err := s.readIndex(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := s.fsm.WaitApplied(ctx, idx); err != nil {
			return nil, err
		}
	case pcspb.Consistency_CONSISTENCY_STALE:
	default:
		return nil, fmt.Errorf("%w: unknown consistency %d", ErrInvalid, c)
	}
	return &pcspb.ReadHeader{ServedBy: s.cfg.Name, LastContactMs: s.lastContactMs()}, nil
}

func (v *service) ReadIndex(ctx context.Context, _ *pcspb.ReadIndexRequest) (*pcspb.ReadIndexResponse, error) {
	if !v.s.isPrimary() {
		return nil, toStatus(v.s.notPrimary())
	}
	idx, err := v.s.readIndex(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.ReadIndexResponse{Index: idx}, nil
}

func (v *service) Get(ctx context.Context, req *pcspb.GetRequest) (*pcspb.GetResponse, error) {
	if err := meta.ValidateKey(req.Key); err != nil {
		return nil, toStatus(err)
	}
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	kv, pos := v.s.fsm.Get(req.Key)
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.GetResponse{Header: h, Kv: kv}, nil
}

func (v *service) Range(ctx context.Context, req *pcspb.RangeRequest) (*pcspb.RangeResponse, error) {
	if len(req.Prefix) > meta.MaxKeySize || len(req.After) > meta.MaxKeySize {
		return nil, toStatus(fmt.Errorf("%w: prefix or start key longer than %d bytes", ErrInvalid, meta.MaxKeySize))
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = defaultRange
	}
	if limit > maxRange {
		return nil, toStatus(fmt.Errorf("%w: limit %d exceeds %d", ErrInvalid, limit, maxRange))
	}
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	kvs, more, pos := v.s.fsm.Range(req.Prefix, req.After, limit)
	if req.KeysOnly {
		for i, kv := range kvs {
			kvs[i] = &pcspb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}
		}
	}
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.RangeResponse{Header: h, Kvs: kvs, More: more}, nil
}

func (v *service) Watch(req *pcspb.WatchRequest, stream pcspb.PCS_WatchServer) error {
	if len(req.Prefix) > meta.MaxKeySize {
		return toStatus(fmt.Errorf("%w: prefix longer than %d bytes", ErrInvalid, meta.MaxKeySize))
	}
	ctx := stream.Context()
	fsm := v.s.fsm
	from := req.StartRevision
	if from == 0 {
		from = fsm.Position().Revision + 1
	}
	// The first message confirms the watch and where it starts.
	if err := stream.Send(&pcspb.WatchResponse{Revision: from - 1}); err != nil {
		return err
	}
	// Revisions that matched nothing are reported too, at most every watchProgressEvery, so a
	// watcher knows how far the stream has got even when its prefix is quiet (etcd's progress
	// notifications): a checker waiting for "every write up to revision R" is not left waiting
	// on writes to other keys.
	var progress uint64 // a revision caught up to and not yet reported
	var progressDue <-chan time.Time
	for {
		changed := fsm.Changed()
		evs, through, err := fsm.Events(from, req.Prefix, maxWatchBatch)
		if err != nil {
			return toStatus(err)
		}
		if through >= from {
			if len(evs) > 0 {
				if err := sendEvents(stream, evs, through); err != nil {
					return err
				}
				progress, progressDue = 0, nil
			} else {
				progress = through
				if progressDue == nil {
					progressDue = time.After(watchProgressEvery)
				}
			}
			from = through + 1
		}
		if len(evs) == maxWatchBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-progressDue:
			if err := stream.Send(&pcspb.WatchResponse{Revision: progress}); err != nil {
				return err
			}
			progress, progressDue = 0, nil
		}
	}
}

// maxWatchMessage bounds the bytes of events in one watch message, well below the 4 MiB a
// gRPC client accepts by default; one revision's events larger than that go alone.
const maxWatchMessage = 1 << 20

// sendEvents sends events (of revisions up to through) in messages of at most maxWatchMessage
// bytes, cut only between revisions: each message's revision is the last it covers, so a
// watch resumed from it misses nothing.
func sendEvents(stream pcspb.PCS_WatchServer, evs []*pcspb.Event, through uint64) error {
	start, size := 0, 0
	for i, ev := range evs {
		n := proto.Size(ev)
		if i > start && size+n > maxWatchMessage && ev.Kv.GetModRevision() != evs[i-1].Kv.GetModRevision() {
			if err := stream.Send(&pcspb.WatchResponse{Events: evs[start:i], Revision: evs[i-1].Kv.GetModRevision()}); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	return stream.Send(&pcspb.WatchResponse{Events: evs[start:], Revision: through})
}

func (v *service) MemberList(ctx context.Context, req *pcspb.MemberListRequest) (*pcspb.MemberListResponse, error) {
	h, err := v.s.readAt(ctx, req.Consistency)
	if err != nil {
		return nil, toStatus(err)
	}
	members, err := v.s.members()
	if err != nil {
		return nil, toStatus(err)
	}
	pos := v.s.fsm.Position()
	h.Revision, h.AppliedIndex = pos.Revision, pos.AppliedIndex
	return &pcspb.MemberListResponse{Header: h, Members: members}, nil
}

// member returns the member called name (ErrMemberNotFound if there is none).
func (s *Server) member(name string) (*pcspb.Member, error) {
	members, err := s.members()
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.Name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrMemberNotFound, name)
}

// members merges the Raft configuration (who is a member) with the recorded addresses.
func (s *Server) members() ([]*pcspb.Member, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	recorded := s.fsm.Members()
	_, leader := s.raft.LeaderWithID()
	var out []*pcspb.Member
	for _, srv := range f.Configuration().Servers {
		m := &pcspb.Member{Name: string(srv.ID), PeerAddr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Primary: srv.ID == leader}
		if r := recorded[m.Name]; r != nil {
			m.ClientAddr, m.HttpAddr = r.ClientAddr, r.HttpAddr
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ---- writes -----------------------------------------------------------------------------------

// validateUserKey refuses keys of the reserved 0x00 prefix (catalog events).
func validateUserKey(key []byte) error {
	if len(key) > 0 && key[0] == 0 {
		return fmt.Errorf("%w: keys starting with 0x00 are reserved", ErrInvalid)
	}
	return meta.ValidateKey(key)
}

func (v *service) Put(ctx context.Context, req *pcspb.PutRequest) (*pcspb.PutResponse, error) {
	if err := errors.Join(validateUserKey(req.Key), meta.ValidateValue(req.Value)); err != nil {
		return nil, toStatus(err)
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.PutRequest) { r.NoForward = true }, cli.Put)
	}
	if used, quota := v.s.fsm.KVBytes(), v.s.cfg.QuotaBytes; quota > 0 && used+int64(len(req.Key)+len(req.Value)) > quota {
		return nil, toStatus(fmt.Errorf("%w: %d of %d bytes used; delete keys to make room", ErrNoSpace, used, quota))
	}
	res, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: req.Key, Value: req.Value, ExpectedVersion: req.ExpectedVersion}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.PutResponse{Header: &pcspb.WriteHeader{Revision: res.Revision, Index: res.Index}, Kv: res.KV}, nil
}

func (v *service) Delete(ctx context.Context, req *pcspb.DeleteRequest) (*pcspb.DeleteResponse, error) {
	if err := validateUserKey(req.Key); err != nil {
		return nil, toStatus(err)
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.DeleteRequest) { r.NoForward = true }, cli.Delete)
	}
	res, err := v.s.applyRequest(ctx, &pcspb.Command{Op: &pcspb.Command_Delete{Delete: &pcspb.CmdDelete{Key: req.Key, ExpectedVersion: req.ExpectedVersion}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.DeleteResponse{Header: &pcspb.WriteHeader{Revision: res.Revision, Index: res.Index}, Deleted: res.Deleted}, nil
}

func (v *service) AllocIDs(ctx context.Context, req *pcspb.AllocIDsRequest) (*pcspb.AllocIDsResponse, error) {
	if err := meta.ValidateKind(req.Kind); err != nil {
		return nil, toStatus(err)
	}
	if req.Count == 0 || req.Count > maxIDsPerCall {
		return nil, toStatus(fmt.Errorf("%w: count %d (1..%d)", ErrInvalid, req.Count, maxIDsPerCall))
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.AllocIDsRequest) { r.NoForward = true }, cli.AllocIDs)
	}
	first, err := v.s.allocIDs(ctx, req.Kind, uint64(req.Count))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.AllocIDsResponse{First: first, Count: req.Count}, nil
}

// allocIDs hands out count ids of kind from the in-memory block, reserving a new block through
// Raft when it runs short. Blocks are disjoint, so no id is handed out twice, even by a
// deposed primary.
func (s *Server) allocIDs(ctx context.Context, kind string, count uint64) (uint64, error) {
	s.ids.Lock()
	defer s.ids.Unlock()
	b := s.ids.blocks[kind]
	if b == nil || b.end-b.next < count {
		size := max(count, s.cfg.IDBlock)
		res, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_AllocIds{AllocIds: &pcspb.CmdAllocIDs{Kind: kind, Count: size}}})
		if err != nil {
			return 0, err
		}
		b = &idBlock{next: res.First, end: res.First + size}
		s.ids.blocks[kind] = b
	}
	first := b.next
	b.next += count
	s.metrics.ids.WithLabelValues(kind).Add(float64(count))
	return first, nil
}

func (v *service) Tso(stream pcspb.PCS_TsoServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		start := time.Now()
		first, err := v.s.nextTS(ctx, req.Count)
		if err != nil {
			return toStatus(err)
		}
		v.s.metrics.tsoSeconds.Observe(time.Since(start).Seconds())
		if err := stream.Send(&pcspb.TsoResponse{First: first, Count: req.Count}); err != nil {
			return err
		}
	}
}

// nextTS serves count timestamps on the primary while its lease holds.
func (s *Server) nextTS(ctx context.Context, count uint32) (uint64, error) {
	if count == 0 || count > tso.MaxBatch {
		return 0, fmt.Errorf("%w: %d (1..%d)", tso.ErrBadCount, count, tso.MaxBatch)
	}
	for {
		if s.transferring.Load() || !s.isPrimary() {
			if _, err := s.route(ctx, true); err != nil {
				return 0, err
			}
			if s.transferring.Load() {
				return 0, s.notPrimary()
			}
			continue
		}
		if !s.leaseValid() {
			if err := s.renewLease(); err != nil {
				return 0, s.notPrimary()
			}
		}
		first, err := s.oracle.Next(count)
		switch {
		case err == nil:
			s.metrics.tsoRequests.Inc()
			s.metrics.tsoTimestamps.Add(float64(count))
			return first, nil
		case errors.Is(err, tso.ErrLogicalOverflow):
			time.Sleep(100 * time.Microsecond)
		case errors.Is(err, tso.ErrWindowExhausted):
			select {
			case s.extendCh <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		case errors.Is(err, tso.ErrNotServing):
			// Lost office between the check and the call: route again.
		default:
			return 0, err
		}
	}
}

// ---- membership -------------------------------------------------------------------------------

func (v *service) MemberAdd(ctx context.Context, req *pcspb.MemberAddRequest) (*pcspb.MemberAddResponse, error) {
	if err := meta.ValidateMember(&pcspb.Member{Name: req.Name, PeerAddr: req.PeerAddr}); err != nil {
		return nil, toStatus(err)
	}
	if err := validatePeerAddr(req.PeerAddr); err != nil {
		return nil, toStatus(err)
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.MemberAddRequest) { r.NoForward = true }, cli.MemberAdd)
	}
	s := v.s
	if req.ClusterId != "" && req.ClusterId != s.ClusterID() {
		return nil, toStatus(fmt.Errorf("%w: %q holds data of cluster %s; this is cluster %s (start it with an empty data dir to join)",
			ErrClusterMismatch, req.Name, req.ClusterId, s.ClusterID()))
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, toStatus(err)
	}
	present := false
	for _, srv := range f.Configuration().Servers {
		sameID, sameAddr := string(srv.ID) == req.Name, string(srv.Address) == req.PeerAddr
		if sameID && sameAddr {
			// Already added (a join retried after a lost answer): go on to the promotion if one
			// is asked for and not done yet.
			present = true
			if srv.Suffrage == raft.Voter || req.NonVoter {
				members, err := s.members()
				return &pcspb.MemberAddResponse{Members: members}, toStatus(err)
			}
			continue
		}
		if sameID || sameAddr {
			return nil, toStatus(fmt.Errorf("%w: %s at %s", ErrMemberExists, srv.ID, srv.Address))
		}
	}
	if !present {
		// Every new member starts as a non-voter: one that never comes up cannot cost a quorum.
		fut := s.raft.AddNonvoter(raft.ServerID(req.Name), raft.ServerAddress(req.PeerAddr), 0, maxMemberChange)
		if err := waitFuture(ctx, fut); err != nil {
			return nil, toStatus(err)
		}
		s.log.Info("member added as non-voter", "member", req.Name, "peer_addr", req.PeerAddr, "promote", !req.NonVoter)
	}
	resp := &pcspb.MemberAddResponse{}
	if !req.NonVoter {
		// Leave time to answer before the caller's deadline: a member not caught up by then is
		// reported as pending, not as a timeout.
		pctx, cancel := context.WithTimeout(ctx, maxMemberChange)
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			pctx, cancel = context.WithTimeout(ctx, left-min(left/4, time.Second))
		}
		err := s.promote(pctx, req.Name, req.PeerAddr, req.Force)
		cancel()
		if err != nil {
			if !errors.Is(err, ErrNotCaughtUp) && !errors.Is(err, ErrQuorumAtRisk) {
				return nil, toStatus(err)
			}
			s.log.Warn("member stays a non-voter", "member", req.Name, "err", err)
			resp.PromotionPending = true
		}
	}
	resp.Members, err = s.members()
	return resp, toStatus(err)
}

func (v *service) MemberRemove(ctx context.Context, req *pcspb.MemberRemoveRequest) (*pcspb.MemberRemoveResponse, error) {
	if req.Name == "" {
		return nil, toStatus(fmt.Errorf("%w: member name is required", ErrInvalid))
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.MemberRemoveRequest) { r.NoForward = true }, cli.MemberRemove)
	}
	s := v.s
	target, err := s.member(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if target.Voter && !req.Force {
		if err := s.checkQuorum(ctx, "", req.Name); err != nil {
			return nil, toStatus(err)
		}
	}
	if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_RemoveMember{RemoveMember: &pcspb.CmdRemoveMember{Name: req.Name}}}); err != nil {
		return nil, toStatus(err)
	}
	if err := waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(req.Name), 0, maxMemberChange)); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("member removed", "member", req.Name)
	members, err := s.members()
	return &pcspb.MemberRemoveResponse{Members: members}, toStatus(err)
}

func (v *service) MemberTransfer(ctx context.Context, req *pcspb.MemberTransferRequest) (*pcspb.MemberTransferResponse, error) {
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.MemberTransferRequest) { r.NoForward = true }, cli.MemberTransfer)
	}
	s := v.s
	var fut raft.Future
	if req.Name != "" {
		target, err := s.member(req.Name)
		switch {
		case err != nil:
			return nil, toStatus(err)
		case !target.Voter:
			return nil, toStatus(fmt.Errorf("%w: %q is a non-voter and cannot become primary", ErrInvalid, req.Name))
		case target.Name == s.cfg.Name:
			return &pcspb.MemberTransferResponse{PrimaryName: s.cfg.Name}, nil
		}
		s.transferring.Store(true)
		fut = s.raft.LeadershipTransferToServer(raft.ServerID(target.Name), raft.ServerAddress(target.PeerAddr))
	} else {
		s.transferring.Store(true)
		fut = s.raft.LeadershipTransfer()
	}
	if err := fut.Error(); err != nil {
		s.transferring.Store(false)
		return nil, toStatus(fmt.Errorf("transferring the primary role: %w", err))
	}
	// The target has won its election; wait until this node has heard from it.
	for {
		if _, id := s.raft.LeaderWithID(); id != "" && string(id) != s.cfg.Name {
			return &pcspb.MemberTransferResponse{PrimaryName: string(id)}, nil
		}
		select {
		case <-ctx.Done():
			return nil, toStatus(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func (v *service) MemberUpdate(ctx context.Context, req *pcspb.MemberUpdateRequest) (*pcspb.MemberUpdateResponse, error) {
	if err := meta.ValidateMember(req.Member); err != nil {
		return nil, toStatus(err)
	}
	if !v.s.isPrimary() {
		return nil, toStatus(v.s.notPrimary())
	}
	if _, err := v.s.member(req.Member.Name); err != nil {
		return nil, toStatus(err)
	}
	if _, err := v.s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_SetMember{SetMember: &pcspb.CmdSetMember{Member: req.Member}}}); err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.MemberUpdateResponse{}, nil
}

// ---- admin ------------------------------------------------------------------------------------

func (v *service) GetLogLevel(context.Context, *pcspb.GetLogLevelRequest) (*pcspb.GetLogLevelResponse, error) {
	return &pcspb.GetLogLevelResponse{Level: strings.ToLower(v.s.logLevel().String())}, nil
}

func (v *service) SetLogLevel(_ context.Context, req *pcspb.SetLogLevelRequest) (*pcspb.SetLogLevelResponse, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(req.Level)); err != nil {
		return nil, toStatus(fmt.Errorf("%w: log level %q: want debug, info, warn or error", ErrInvalid, req.Level))
	}
	if v.s.cfg.LogLevel == nil {
		return nil, toStatus(fmt.Errorf("%w: this node's log level is fixed", ErrInvalid))
	}
	v.s.cfg.LogLevel.Set(l)
	v.s.group.SetLogLevel(l)
	v.s.log.Info("log level changed", "level", l)
	return &pcspb.SetLogLevelResponse{Level: strings.ToLower(l.String())}, nil
}

func (s *Server) logLevel() slog.Level {
	if s.cfg.LogLevel == nil {
		return slog.LevelInfo
	}
	return s.cfg.LogLevel.Level()
}
