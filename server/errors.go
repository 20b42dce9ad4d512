package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/placement"
	"github.com/postdb/pcs/internal/raftgroup"
	"github.com/postdb/pcs/internal/schedule"
	"github.com/postdb/pcs/internal/tso"
)

// Errors of the server. toStatus maps them, and those of meta and tso, to gRPC codes; this is
// the only place that does.
var (
	// ErrNotPrimary: the request needs the primary and this node is not it (or not ready).
	ErrNotPrimary = errors.New("not the primary")
	// ErrNotReady: the node is not in the running state.
	ErrNotReady = errors.New("not ready")
	// ErrOutcomeUnknown: leadership was lost while a write was in flight; it may or may not
	// have been applied.
	ErrOutcomeUnknown = errors.New("leadership lost, write outcome unknown")
	// ErrMemberExists: a member with this name or peer address exists.
	ErrMemberExists = errors.New("member exists")
	// ErrMemberNotFound: no member has this name.
	ErrMemberNotFound = errors.New("member not found")
	// ErrOperatorNotFound: no queued or running operator has this id.
	ErrOperatorNotFound = errors.New("operator not found")
	// ErrInvalid: a malformed request.
	ErrInvalid = errors.New("invalid request")
	// ErrClusterMismatch: the caller belongs to another cluster.
	ErrClusterMismatch = errors.New("cluster id mismatch")
	// ErrShardGuard: a shard command would leave the shard in a wrong shape (a move onto a node
	// that holds a replica, from one that holds none, or below the table's replica count).
	ErrShardGuard = errors.New("shard command refused")
	// ErrLeaseExpired: a data node asked for something only a node with a live lease may ask
	// (PCS has not heard from it within its lease).
	ErrLeaseExpired = errors.New("node lease expired")
	// ErrNoSpace: the system key-value namespace is at its quota; delete keys to make room.
	ErrNoSpace = errors.New("no space: the key-value quota is used up")
	// ErrPermissionDenied: the caller's certificate may not act as asked (another data node's
	// id, a shard it does not lead).
	ErrPermissionDenied = errors.New("permission denied")
)

// notPrimaryError carries where the primary is.
type notPrimaryError struct {
	name, addr string
}

func (e *notPrimaryError) Error() string {
	if e.addr == "" {
		return "not the primary; no primary known"
	}
	return fmt.Sprintf("not the primary; the primary is %s at %s", e.name, e.addr)
}

func (e *notPrimaryError) Unwrap() error { return ErrNotPrimary }

// toStatus converts an error to a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var np *notPrimaryError
	switch {
	case errors.As(err, &np):
		st, derr := status.New(codes.Unavailable, err.Error()).WithDetails(&pcspb.NotPrimary{PrimaryName: np.name, PrimaryAddr: np.addr})
		if derr != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		return st.Err()
	case errors.Is(err, ErrNotPrimary), errors.Is(err, ErrNotReady), errors.Is(err, ErrOutcomeUnknown),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, tso.ErrNotServing):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, meta.ErrStaleEpoch):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, meta.ErrVersionMismatch):
		return withReason(codes.FailedPrecondition, pcspb.ReasonVersionMismatch, err)
	case errors.Is(err, ErrLeaseExpired):
		return withReason(codes.FailedPrecondition, pcspb.ReasonLeaseExpired, err)
	case errors.Is(err, meta.ErrOutcomeUnknown):
		return withReason(codes.FailedPrecondition, pcspb.ReasonOutcomeUnknown, err)
	case errors.Is(err, meta.ErrSessionExpired):
		return withReason(codes.FailedPrecondition, pcspb.ReasonSessionExpired, err)
	case errors.Is(err, meta.ErrTableExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, meta.ErrTableNotFound), errors.Is(err, meta.ErrShardNotFound), errors.Is(err, meta.ErrNodeNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, catalog.ErrInvalidSpec), errors.Is(err, placement.ErrInvalidPolicy):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, placement.ErrNotEnoughNodes):
		return withReason(codes.FailedPrecondition, pcspb.ReasonNotEnoughNodes, err)
	case errors.Is(err, meta.ErrAlterInProgress):
		return withReason(codes.FailedPrecondition, pcspb.ReasonAlterInProgress, err)
	case errors.Is(err, meta.ErrTableNotPublic):
		return withReason(codes.FailedPrecondition, pcspb.ReasonTableNotPublic, err)
	case errors.Is(err, meta.ErrCompacted):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, meta.ErrInvalid), errors.Is(err, meta.ErrBadCommand), errors.Is(err, ErrInvalid),
		errors.Is(err, tso.ErrBadCount):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrClusterMismatch), errors.Is(err, raftgroup.ErrClusterMismatch):
		return withReason(codes.FailedPrecondition, pcspb.ReasonClusterMismatch, err)
	case errors.Is(err, schedule.ErrBusy):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrPermissionDenied), errors.Is(err, meta.ErrIdentity):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrNoSpace):
		return withReason(codes.ResourceExhausted, pcspb.ReasonNoSpace, err)
	case errors.Is(err, meta.ErrNotEnoughReplicas):
		return withReason(codes.FailedPrecondition, pcspb.ReasonNotEnoughReplicas, err)
	case errors.Is(err, ErrShardGuard):
		return withReason(codes.FailedPrecondition, pcspb.ReasonShardGuard, err)
	case errors.Is(err, ErrQuorumAtRisk):
		return withReason(codes.FailedPrecondition, pcspb.ReasonQuorumAtRisk, err)
	case errors.Is(err, ErrNotCaughtUp):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrMemberExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrMemberNotFound), errors.Is(err, ErrOperatorNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, raft.ErrEnqueueTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func withReason(code codes.Code, reason string, err error) error {
	return pcspb.ReasonError(code, reason, err.Error())
}

func errInvalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func errNotFoundf(sentinel error, id uint64) error { return fmt.Errorf("%w: id %d", sentinel, id) }
