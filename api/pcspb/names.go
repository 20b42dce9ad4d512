package pcspb

// CatalogPrefix is the reserved key prefix of catalog events in the watch history: every change
// to a table (create, state change, drop) appears as an event on CatalogPrefix + table name, so
// clients invalidate routing caches by watching it. User keys cannot start with 0x00.
const CatalogPrefix = "\x00catalog/tables/"

// StateName is the short name of a PCS node's state.
func StateName(s NodeState) string {
	switch s {
	case NodeState_NODE_STATE_ELECTION:
		return "election"
	case NodeState_NODE_STATE_RECOVERY:
		return "recovery"
	case NodeState_NODE_STATE_RUNNING:
		return "running"
	}
	return "unknown"
}
