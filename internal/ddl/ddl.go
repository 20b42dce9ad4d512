// Package ddl drives table creation and removal on the data nodes. It is a pure planner: from
// the catalog (persisted through Raft: each table's state is its job's step) and the primary's
// live view of the nodes, Next says which commands each node should receive and which tables
// have finished a step. Because it keeps no state of its own, a new primary resumes any job
// its predecessor left half-done simply by planning again; every command it sends is
// idempotent on the nodes.
//
// Steps:
//   - public, ALTER under way (two live versions, or steps pending): every up node is told to load
//     the newest version; when all report it, the older version is retired and the next step, if
//     any, becomes the newest — so no more than two versions are ever live.
//   - creating: every replica node must hold its replicas (CreateReplica until it reports them);
//     when all do, the table becomes public.
//   - public with a partition job (ADD, DROP, TRUNCATE PARTITION): the catalog already routes
//     by the new partitions; the new shards' replicas are created like any missing replica
//     (Missing) and the removed shards dropped like any replica the catalog does not know
//     (Orphans). The job finishes once every new replica exists and no node that is not down
//     holds a removed shard (a node that was down drops it when it returns).
//   - dropping: every node that reports a replica of the table is told to drop it; when no
//     node that is not down still reports one, the table's metadata is removed. A node that was
//     down drops its replicas when it returns, because any node that reports a shard the
//     catalog no longer has is told to drop it.
package ddl

import (
	"slices"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// Catalog is what the planner reads of the metadata.
type Catalog interface {
	Tables() []*pcspb.Table
	TableShards(tableID uint64) []*pcspb.Shard
}

// Live is what the planner reads of the nodes.
type Live interface {
	State(node uint64) cluster.State
	Holds(node, shard uint64) bool
	UpNodes() []uint64
	LoadedVersion(node, table uint64) uint64
}

// Step is the planner's decision.
type Step struct {
	// Commands to send, by node.
	Commands map[uint64][]*pcspb.NodeCommand
	// Public lists tables whose replicas all exist.
	Public []uint64
	// Delete lists dropping tables no reachable node holds any more.
	Delete []uint64
	// Advance lists online ALTERs whose newest schema version every live node has loaded:
	// table id -> that version.
	Advance map[uint64]uint64
	// Finished lists partition jobs that are done: table id -> job id.
	Finished map[uint64]uint64
}

// MaxNodeCommands bounds the replica commands one step gives a node. A node takes a few MiB of
// commands a heartbeat anyway, and the step is planned again every tick: without a bound, a
// backlog of millions of replicas to create (tables created faster than the nodes make them)
// would be rebuilt in full each time, the largest thing the primary allocates. The rest come
// in later steps, oldest tables first, as the nodes report the first ones made.
const MaxNodeCommands = 16384

// Next plans one step.
func Next(cat Catalog, live Live) Step {
	st := Step{Commands: map[uint64][]*pcspb.NodeCommand{}, Advance: map[uint64]uint64{}, Finished: map[uint64]uint64{}}
	up := len(live.UpNodes())
	full := 0 // up nodes given MaxNodeCommands: once all are, the rest of a table need not be read
	add := func(node uint64, c *pcspb.NodeCommand) {
		st.Commands[node] = append(st.Commands[node], c)
		if len(st.Commands[node]) == MaxNodeCommands {
			full++
		}
	}
	hasRoom := func(node uint64) bool { return len(st.Commands[node]) < MaxNodeCommands }
	for _, t := range cat.Tables() {
		switch t.State {
		case pcspb.TableState_TABLE_STATE_CREATING:
			done := true
		creating:
			for _, s := range cat.TableShards(t.Id) {
				for _, n := range s.Replicas {
					if live.Holds(n, s.Id) {
						continue
					}
					done = false
					if live.State(n) == cluster.Up && hasRoom(n) {
						add(n, &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: s}})
					}
					if full >= up {
						break creating
					}
				}
			}
			if done {
				st.Public = append(st.Public, t.Id)
			}
		case pcspb.TableState_TABLE_STATE_PUBLIC:
			if j := t.PartitionJob; j != nil {
				if done, _ := PartitionJobProgress(cat, live, t); done {
					st.Finished[t.Id] = j.Id
				}
			}
			if t.SchemaVersion == t.MinLiveVersion && len(t.PendingSteps) == 0 {
				continue // no ALTER under way
			}
			newest := t.Versions[len(t.Versions)-1]
			loaded := true
			for _, n := range live.UpNodes() {
				if live.LoadedVersion(n, t.Id) >= t.SchemaVersion {
					continue
				}
				loaded = false
				add(n, &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_LoadSchema{LoadSchema: &pcspb.SchemaVersionRef{
					TableId: t.Id, Version: newest.Version, Definition: newest.Definition}}})
			}
			if loaded {
				st.Advance[t.Id] = t.SchemaVersion
			}
		case pcspb.TableState_TABLE_STATE_DROPPING:
			remaining := false
		dropping:
			for _, s := range cat.TableShards(t.Id) {
				for _, n := range s.Replicas {
					if !live.Holds(n, s.Id) {
						continue
					}
					if live.State(n) != cluster.Down {
						remaining = true
					}
					if live.State(n) == cluster.Up && hasRoom(n) {
						add(n, &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_DropReplica{DropReplica: s.Id}})
					}
					if full >= up && remaining {
						break dropping
					}
				}
			}
			if !remaining {
				st.Delete = append(st.Delete, t.Id)
			}
		}
	}
	return st
}

// PartitionJobProgress counts the replicas a table's partition job has created and dropped, of
// all it must, and says whether it is done: every replica of the shards it creates exists (a
// shard since merged away counts as done), and no node that is not down holds a shard it drops.
func PartitionJobProgress(cat Catalog, live Live, t *pcspb.Table) (done bool, count [2]uint64) {
	j := t.PartitionJob
	if j == nil {
		return true, count
	}
	creating := map[uint64]bool{}
	for _, id := range j.Creating {
		creating[id] = true
	}
	done = true
	for _, s := range cat.TableShards(t.Id) {
		if !creating[s.Id] {
			continue
		}
		for _, n := range s.Replicas {
			count[1]++
			if live.Holds(n, s.Id) {
				count[0]++
			} else {
				done = false
			}
		}
	}
	for _, s := range j.Dropping {
		for _, n := range slices.Concat(s.Replicas, s.Learners) {
			count[1]++
			if !live.Holds(n, s.Id) {
				count[0]++
			} else if live.State(n) != cluster.Down {
				done = false
			}
		}
	}
	return done, count
}

// Orphans returns drop commands for the replicas a node reports that the catalog does not give
// it (dropped while the node was away, or the node left the shard's configuration). It runs
// per heartbeat, with the node's list.
func Orphans(foreign []uint64) []*pcspb.NodeCommand {
	var out []*pcspb.NodeCommand
	for _, s := range foreign {
		out = append(out, &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_DropReplica{DropReplica: s}})
	}
	return out
}

// Updates returns commands that bring a node's replica metadata up to the catalog's.
func Updates(stale []*pcspb.Shard) []*pcspb.NodeCommand {
	var out []*pcspb.NodeCommand
	for _, s := range stale {
		out = append(out, &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: s}})
	}
	return out
}
