package pcspb

import (
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error reasons distinguish errors that share a gRPC code. They travel as an ErrorInfo status
// detail in the ReasonDomain domain; the server sets them and the client maps them back to its
// sentinels, both from this one list.
const (
	ReasonDomain = "pcs"

	ReasonNotEnoughNodes  = "NOT_ENOUGH_NODES"
	ReasonAlterInProgress = "ALTER_IN_PROGRESS"
	ReasonTableNotPublic  = "TABLE_NOT_PUBLIC"
	// ReasonOutcomeUnknown: a write may or may not have been applied, and retrying cannot
	// tell (its recorded outcome is gone, or the deadline ran out while it was in flight).
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
	// ReasonLeaseExpired: a data node asked for something only a node with a live lease may.
	ReasonLeaseExpired = "LEASE_EXPIRED"
	// ReasonVersionMismatch: a compare-and-swap found another version.
	ReasonVersionMismatch = "VERSION_MISMATCH"
	// ReasonClusterMismatch: the peer belongs to another cluster.
	ReasonClusterMismatch = "CLUSTER_MISMATCH"
	// ReasonQuorumAtRisk: a membership change would leave the live voters without a quorum.
	ReasonQuorumAtRisk = "QUORUM_AT_RISK"
	// ReasonShardGuard: a shard command would leave the shard in a wrong shape.
	ReasonShardGuard = "SHARD_GUARD"
	// ReasonNotEnoughReplicas: a change would leave a shard fewer replicas than its
	// min-in-sync, or a write could not be persisted on that many.
	ReasonNotEnoughReplicas = "NOT_ENOUGH_REPLICAS"
	// ReasonSessionExpired: a first attempt of a client session PCS dropped; nothing was
	// applied, and the client sends it again under a new client id.
	ReasonSessionExpired = "SESSION_EXPIRED"
	// ReasonNoSpace: the system key-value namespace is at its quota.
	ReasonNoSpace = "NO_SPACE"
	// ReasonBadKey: one key of a batch cannot be routed (malformed, or outside every
	// partition); the detail's metadata "index" names it (see BadKeyError).
	ReasonBadKey = "BAD_KEY"
)

// RequestIDHeader is the gRPC metadata key (binary) that carries a marshaled RequestID.
const RequestIDHeader = "pcs-request-id-bin"

// ClusterIDHeader is the gRPC metadata key carrying the caller's cluster id (16 hex digits);
// a server of another cluster refuses the call with ReasonClusterMismatch.
const ClusterIDHeader = "pcs-cluster-id"

// ReasonError is a gRPC status error of code and msg that carries reason (one of the Reason
// constants) as its ErrorInfo detail.
func ReasonError(code codes.Code, reason, msg string) error {
	return infoError(code, msg, &errdetails.ErrorInfo{Reason: reason, Domain: ReasonDomain})
}

// infoError is a status error of code and msg carrying info as its detail.
func infoError(code codes.Code, msg string, info *errdetails.ErrorInfo) error {
	st, err := status.New(code, msg).WithDetails(info)
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// BadKeyError is a status error of code and msg that names the batch's key at index as the one
// refused (ReasonBadKey), so that a caller can answer the other keys.
func BadKeyError(code codes.Code, msg string, index int) error {
	return infoError(code, msg, &errdetails.ErrorInfo{Reason: ReasonBadKey, Domain: ReasonDomain,
		Metadata: map[string]string{"index": strconv.Itoa(index)}})
}

// BadKeyIndex returns the index a BadKeyError names.
func BadKeyIndex(err error) (int, bool) {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return 0, false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == ReasonDomain && ei.Reason == ReasonBadKey {
			i, err := strconv.Atoi(ei.Metadata["index"])
			return i, err == nil && i >= 0
		}
	}
	return 0, false
}
