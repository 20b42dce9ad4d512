package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/api/pcspb"
)

// Membership changes that cannot hurt the group (etcd's strict reconfiguration): a new member
// joins as a non-voter and is promoted only once it has caught up; no change is made after
// which the live voters would not form a quorum, unless forced.

var (
	// ErrQuorumAtRisk: the change would leave the live voters without a quorum.
	ErrQuorumAtRisk = errors.New("membership change would lose quorum")
	// ErrNotCaughtUp: a non-voter has not caught up with the primary yet.
	ErrNotCaughtUp = errors.New("member has not caught up")
)

// validatePeerAddr checks a host:port address.
func validatePeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errInvalidf("peer address %q: %v", addr, err)
	}
	if host == "" {
		return errInvalidf("peer address %q has no host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errInvalidf("peer address %q: port must be 1..65535", addr)
	}
	return nil
}

// memberStatuses asks every other member of the configuration for its status, in parallel,
// within timeout: the answers by member (a member that does not answer, answers under another
// name, or never recorded its address is absent), and the configuration asked.
func (s *Server) memberStatuses(ctx context.Context, timeout time.Duration) (map[raft.ServerID]*pcspb.StatusResponse, []raft.Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, nil, err
	}
	servers := f.Configuration().Servers
	recorded := s.fsm.Members()
	type answer struct {
		id raft.ServerID
		st *pcspb.StatusResponse
	}
	answers := make(chan answer, len(servers))
	pending := 0
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, srv := range servers {
		m := recorded[string(srv.ID)]
		if string(srv.ID) == s.cfg.Name || m == nil || m.ClientAddr == "" {
			continue
		}
		pending++
		go func(id raft.ServerID, addr string) {
			var st *pcspb.StatusResponse
			if cli, err := s.peers.get(addr); err == nil {
				if got, err := cli.Status(sctx, &pcspb.StatusRequest{}); err == nil && got.Name == string(id) {
					st = got
				}
			}
			answers <- answer{id, st}
		}(srv.ID, m.ClientAddr)
	}
	out := make(map[raft.ServerID]*pcspb.StatusResponse, pending)
	for ; pending > 0; pending-- {
		if a := <-answers; a.st != nil {
			out[a.id] = a.st
		}
	}
	return out, servers, nil
}

// liveVoters returns the voters of the configuration and which of them answer now: this node,
// and every other voter whose Status answers within a heartbeat-ish timeout and which hears
// from a primary.
func (s *Server) liveVoters(ctx context.Context) (voters []raft.Server, live map[raft.ServerID]bool, err error) {
	statuses, servers, err := s.memberStatuses(ctx, max(500*time.Millisecond, 2*s.cfg.Raft.ElectionTimeout))
	if err != nil {
		return nil, nil, err
	}
	live = map[raft.ServerID]bool{}
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters = append(voters, srv)
		st := statuses[srv.ID]
		live[srv.ID] = string(srv.ID) == s.cfg.Name || st != nil && st.LastContactMs >= 0 &&
			time.Duration(st.LastContactMs)*time.Millisecond < 2*s.cfg.Raft.ElectionTimeout
	}
	return voters, live, nil
}

// checkQuorum refuses a change of the voter set (adding `add`, removing `remove`; either may be
// "") after which the live voters would not be a majority.
func (s *Server) checkQuorum(ctx context.Context, add, remove string) error {
	voters, live, err := s.liveVoters(ctx)
	if err != nil {
		return err
	}
	total, alive := 0, 0
	var down []string
	for _, v := range voters {
		if string(v.ID) == remove {
			continue
		}
		total++
		if live[v.ID] {
			alive++
		} else {
			down = append(down, string(v.ID))
		}
	}
	if add != "" {
		total++
		alive++ // promoted only once caught up: live
	}
	if need := total/2 + 1; alive < need {
		return fmt.Errorf("%w: %d voters after the change, %d live (need %d); not answering: %v (use --force to change anyway)",
			ErrQuorumAtRisk, total, alive, need, down)
	}
	return nil
}

// waitCaughtUp waits until non-voter name has applied everything the primary had committed
// when the check began.
func (s *Server) waitCaughtUp(ctx context.Context, name string) error {
	target := s.raft.CommitIndex()
	for {
		m := s.fsm.Members()[name]
		if m != nil && m.ClientAddr != "" {
			if cli, err := s.peers.get(m.ClientAddr); err == nil {
				sctx, cancel := context.WithTimeout(ctx, time.Second)
				st, err := cli.Status(sctx, &pcspb.StatusRequest{})
				cancel()
				if err == nil && st.Name == name && st.AppliedIndex >= target {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %q has not applied index %d yet (%v)", ErrNotCaughtUp, name, target, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// promote makes a caught-up non-voter a voter.
func (s *Server) promote(ctx context.Context, name, peerAddr string, force bool) error {
	if err := s.waitCaughtUp(ctx, name); err != nil {
		return err
	}
	if !force {
		if err := s.checkQuorum(ctx, name, ""); err != nil {
			return err
		}
	}
	fut := s.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(peerAddr), 0, maxMemberChange)
	if err := waitFuture(ctx, fut); err != nil {
		return fmt.Errorf("promoting %q: %w", name, err)
	}
	s.log.Info("member promoted to voter", "member", name)
	return nil
}

func (v *service) MemberPromote(ctx context.Context, req *pcspb.MemberPromoteRequest) (*pcspb.MemberPromoteResponse, error) {
	if req.Name == "" {
		return nil, toStatus(errInvalidf("member name is required"))
	}
	cli, err := v.s.route(ctx, req.NoForward)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return forwarded(ctx, req, func(r *pcspb.MemberPromoteRequest) { r.NoForward = true }, cli.MemberPromote)
	}
	s := v.s
	target, err := s.member(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if !target.Voter {
		if err := s.promote(ctx, target.Name, target.PeerAddr, req.Force); err != nil {
			return nil, toStatus(err)
		}
	}
	members, err := s.members()
	return &pcspb.MemberPromoteResponse{Members: members}, toStatus(err)
}
