package meta

import "errors"

// Errors returned by Apply results, reads and Restore. Callers test them with errors.Is.
var (
	// ErrBadCommand: the command could not be decoded or failed validation.
	ErrBadCommand = errors.New("meta: bad command")
	// ErrUnknownVersion: the command's format version is not known to this node.
	ErrUnknownVersion = errors.New("meta: unknown command version")
	// ErrVersionMismatch: a compare-and-swap found another version of the key (0: absent).
	ErrVersionMismatch = errors.New("meta: version mismatch")
	// ErrCompacted: a watch asked for a revision older than the retained history.
	ErrCompacted = errors.New("meta: revision compacted")
	// ErrBadSnapshot: a snapshot is corrupt, truncated or of an unknown format.
	ErrBadSnapshot = errors.New("meta: bad snapshot")
	// ErrInvalid: a request argument is out of bounds (key or value size, kind name, count).
	ErrInvalid = errors.New("meta: invalid argument")
)
