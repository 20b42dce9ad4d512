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

// PausedSchedulersSetting is the value of the "paused-schedulers" schedule setting that pauses
// (or resumes) the scheduler name and leaves the others of schedulers as they are; found is false
// if no scheduler has that name.
func PausedSchedulersSetting(schedulers []*SchedulerInfo, name string, pause bool) (value string, found bool) {
	for _, s := range schedulers {
		found = found || s.Name == name
		if (s.Paused && s.Name != name) || (pause && s.Name == name) {
			if value != "" {
				value += ","
			}
			value += s.Name
		}
	}
	return value, found
}
