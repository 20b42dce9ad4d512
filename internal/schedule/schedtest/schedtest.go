// Package schedtest builds small cluster views and scheduler environments for the table tests
// of the checkers, schedulers and coordinator.
package schedtest

import (
	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Cluster returns a view of n up nodes (ids 1..n, zone label z<i%zones> when zones > 0) and one
// public table (id 1) of the given replica count and isolation label.
func Cluster(n, zones, replicas int, isolation string) *view.Cluster {
	v := &view.Cluster{Tables: map[uint64]*view.Table{1: {ID: 1, Replicas: replicas, IsolationLabel: isolation, Public: true}}}
	for i := 1; i <= n; i++ {
		labels := map[string]string{}
		if zones > 0 {
			labels["zone"] = string(rune('a' + (i-1)%zones))
		}
		v.Nodes = append(v.Nodes, &view.Node{ID: uint64(i), Labels: labels, State: view.Up, Heard: true})
	}
	return v
}

// Shard adds a shard of table 1 with the replicas given (the first is the primary), every
// holder in line, and returns it.
func Shard(v *view.Cluster, size uint64, replicas ...uint64) *view.Shard {
	sh := &view.Shard{ID: uint64(len(v.Shards) + 1), Table: 1, Version: 1, ConfVer: 1, Term: 1, Primary: replicas[0],
		Replicas: replicas, Size: size, InLine: append([]uint64(nil), replicas...)}
	v.Shards = append(v.Shards, sh) // ids grow, so the shards stay sorted
	return sh
}

// Env is an environment over v with no operators, nothing cooling and every snapshot allowed.
func Env(v *view.Cluster) *scheduler.Env {
	return &scheduler.Env{View: v, Loads: scheduler.Compute(v, nil), Bands: scheduler.DefaultBands, Hot: scheduler.DefaultHot,
		HasOp:       func(uint64) bool { return false },
		Cooling:     func(uint64, uint64) bool { return false },
		CanSnapshot: func(operator.Kind, uint64, uint64) bool { return true },
	}
}
