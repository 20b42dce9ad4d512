package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// Errors returned by the client; test them with errors.Is. The server's gRPC codes are mapped
// back to these in one place, fromStatus.
var (
	// ErrUnavailable: no PCS node could serve the request within the retry budget (no primary,
	// nodes down, leadership lost mid-write).
	ErrUnavailable = errors.New("pcs: unavailable")
	// ErrNotPrimary: the node is not the primary and was asked not to forward.
	ErrNotPrimary = errors.New("pcs: not the primary")
	// ErrVersionMismatch: a compare-and-swap found another version.
	ErrVersionMismatch = errors.New("pcs: version mismatch")
	// ErrCompacted: a watch asked for a revision older than the retained history.
	ErrCompacted = errors.New("pcs: revision compacted")
	// ErrInvalidArgument: the request was malformed or out of bounds.
	ErrInvalidArgument = errors.New("pcs: invalid argument")
	// ErrNotFound: an unknown member (or other named object).
	ErrNotFound = errors.New("pcs: not found")
	// ErrAlreadyExists: a member with this name or address exists.
	ErrAlreadyExists = errors.New("pcs: already exists")
	// ErrNotEnoughNodes: placement found too few suitable data nodes; nothing was created.
	ErrNotEnoughNodes = errors.New("pcs: not enough suitable nodes")
	// ErrAlterInProgress: an earlier ALTER of the table has not finished.
	ErrAlterInProgress = errors.New("pcs: alter in progress")
	// ErrTableNotPublic: the table is being created or dropped.
	ErrTableNotPublic = errors.New("pcs: table is not public")
	// ErrStaleEpoch: a shard change was decided on metadata that has changed since (another
	// change came first); read the shard again and decide again.
	ErrStaleEpoch = errors.New("pcs: stale shard epoch")
	// ErrInternal: the server failed unexpectedly.
	ErrInternal = errors.New("pcs: internal error")
	// ErrOutcomeUnknown: a write may or may not have been applied. The client retries a write
	// across failovers (the server applies each request once), so this is returned only when
	// the deadline ran out while an attempt may have been applied, or when the server no
	// longer holds the record of an earlier attempt.
	ErrOutcomeUnknown = errors.New("pcs: outcome unknown")
	// ErrLeaseExpired: a data node asked for something only a node with a live lease may ask.
	ErrLeaseExpired = errors.New("pcs: node lease expired")
	// ErrFailedPrecondition: the cluster is not in a state where the request can be served.
	ErrFailedPrecondition = errors.New("pcs: failed precondition")
	// ErrClusterMismatch: the node belongs to another cluster.
	ErrClusterMismatch = errors.New("pcs: cluster id mismatch")
	// ErrQuorumAtRisk: a membership change would leave the live voters without a quorum.
	ErrQuorumAtRisk = errors.New("pcs: change would lose quorum")
	// ErrNotEnoughReplicas: a row write could not be persisted on as many replicas as its
	// shard's min-in-sync (or a replica removal would leave fewer). The write was not
	// acknowledged; it may be on some replicas. Retrying is safe (the data node applies a
	// request once); the client retries it while its deadline allows.
	ErrNotEnoughReplicas = errors.New("pcs: not enough in-sync replicas")
	// ErrNoSpace: the system key-value namespace is at its quota (pcs --quota-bytes); deletes
	// still work. Not retried.
	ErrNoSpace = errors.New("pcs: no space")
	// ErrSessionExpired: PCS dropped this client's session (to make room) and refused a first
	// attempt of it without applying it; the client takes a new client id and sends it again,
	// so this reaches the caller only if that fails too.
	ErrSessionExpired = errors.New("pcs: client session expired")
	// ErrShardGuard: a shard command would leave the shard in a wrong shape.
	ErrShardGuard = errors.New("pcs: shard command refused")
	// ErrTLS: the TLS handshake failed — no certificate or one the server's CA did not sign,
	// a server certificate this client's CA did not sign or that does not name the address
	// dialled, an expired certificate. Not retried.
	ErrTLS = errors.New("pcs: tls handshake failed")
	// ErrPermissionDenied: the caller's certificate is not allowed to make this call.
	ErrPermissionDenied = errors.New("pcs: permission denied")
)

// fromStatus maps a gRPC error to the client's errors, keeping the server's message.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	switch st.Code() {
	case codes.Unavailable:
		sentinel = ErrUnavailable
		if notPrimary(err) != nil {
			sentinel = ErrNotPrimary
		} else if handshakeFailed(err) {
			sentinel = ErrTLS
		}
	case codes.PermissionDenied, codes.Unauthenticated:
		sentinel = ErrPermissionDenied
	case codes.FailedPrecondition:
		sentinel = ErrFailedPrecondition
		if s, ok := reasonSentinels[reason(err)]; ok {
			sentinel = s
		}
	case codes.OutOfRange:
		sentinel = ErrCompacted
	case codes.ResourceExhausted:
		sentinel = ErrInternal
		if reason(err) == pcspb.ReasonNoSpace {
			sentinel = ErrNoSpace
		}
	case codes.InvalidArgument:
		sentinel = ErrInvalidArgument
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.AlreadyExists:
		sentinel = ErrAlreadyExists
	case codes.Aborted:
		sentinel = ErrStaleEpoch
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	default:
		sentinel = ErrInternal
	}
	return fmt.Errorf("%w: %s", sentinel, st.Message())
}

// reasonSentinels maps the server's error reasons (pcspb.Reason*) to the client's sentinels.
var reasonSentinels = map[string]error{
	pcspb.ReasonNotEnoughNodes:    ErrNotEnoughNodes,
	pcspb.ReasonAlterInProgress:   ErrAlterInProgress,
	pcspb.ReasonTableNotPublic:    ErrTableNotPublic,
	pcspb.ReasonVersionMismatch:   ErrVersionMismatch,
	pcspb.ReasonLeaseExpired:      ErrLeaseExpired,
	pcspb.ReasonOutcomeUnknown:    ErrOutcomeUnknown,
	pcspb.ReasonClusterMismatch:   ErrClusterMismatch,
	pcspb.ReasonQuorumAtRisk:      ErrQuorumAtRisk,
	pcspb.ReasonShardGuard:        ErrShardGuard,
	pcspb.ReasonNotEnoughReplicas: ErrNotEnoughReplicas,
	pcspb.ReasonSessionExpired:    ErrSessionExpired,
}

// notPrimary returns the NotPrimary detail of a gRPC error, if any.
func notPrimary(err error) *pcspb.NotPrimary { return statusDetail[*pcspb.NotPrimary](err) }

// statusDetail returns the first detail of type T in a gRPC status error (the zero T if none).
func statusDetail[T proto.Message](err error) T {
	var zero T
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return zero
	}
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	return zero
}

// KVErrorOf returns the KVError detail of a data-node error, or nil.
func KVErrorOf(err error) *pcspb.KVError { return statusDetail[*pcspb.KVError](err) }

// retryable reports whether another attempt (perhaps at another node) may succeed.
func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable && !handshakeFailed(err)
}

// handshakeFailed reports whether a gRPC error is a failed TLS handshake, which another
// attempt would fail the same way.
func handshakeFailed(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "authentication handshake failed")
}

// MapError maps an error from a raw pcspb call to the client's errors (for callers that use the
// generated stubs directly).
func MapError(err error) error { return fromStatus(err) }

// reason returns the ErrorInfo reason of a status in the "pcs" domain, if any.
func reason(err error) string {
	if ei := statusDetail[*errdetails.ErrorInfo](err); ei != nil && ei.Domain == pcspb.ReasonDomain {
		return ei.Reason
	}
	return ""
}
