package ddl

import (
	"testing"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

type fakeCatalog struct {
	tables []*pcspb.Table
	shards map[uint64][]*pcspb.Shard
}

func (f *fakeCatalog) Tables() []*pcspb.Table               { return f.tables }
func (f *fakeCatalog) TableShards(id uint64) []*pcspb.Shard { return f.shards[id] }
func (f *fakeCatalog) ShardExists(id uint64) bool {
	for _, ss := range f.shards {
		for _, s := range ss {
			if s.Id == id {
				return true
			}
		}
	}
	return false
}

type fakeLive struct {
	state  map[uint64]cluster.State
	held   map[uint64]map[uint64]bool
	loaded map[uint64]uint64
}

func (f *fakeLive) State(n uint64) cluster.State { return f.state[n] }
func (f *fakeLive) UpNodes() (out []uint64) {
	for n, st := range f.state {
		if st == cluster.Up {
			out = append(out, n)
		}
	}
	return out
}
func (f *fakeLive) LoadedVersion(n, t uint64) uint64 { return f.loaded[n] }
func (f *fakeLive) Holds(n, s uint64) bool           { return f.held[n][s] }

func count(st Step, node uint64, create bool) int {
	n := 0
	for _, c := range st.Commands[node] {
		if (c.GetCreateReplica() != nil) == create {
			n++
		}
	}
	return n
}

func TestCreateThenPublic(t *testing.T) {
	cat := &fakeCatalog{tables: []*pcspb.Table{{Id: 1, State: pcspb.TableState_TABLE_STATE_CREATING}},
		shards: map[uint64][]*pcspb.Shard{1: {{Id: 10, Replicas: []uint64{1, 2}}, {Id: 11, Replicas: []uint64{2, 3}}}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Disconnected},
		held: map[uint64]map[uint64]bool{}}
	st := Next(cat, live)
	if count(st, 1, true) != 1 || count(st, 2, true) != 2 || count(st, 3, true) != 0 || len(st.Public) != 0 {
		t.Fatalf("first step: %v", st)
	}
	live.held = map[uint64]map[uint64]bool{1: {10: true}, 2: {10: true, 11: true}, 3: {11: true}}
	st = Next(cat, live)
	if len(st.Public) != 1 || len(st.Commands) != 0 {
		t.Fatalf("all held: %v", st)
	}
}

func TestDropAndReconcile(t *testing.T) {
	cat := &fakeCatalog{tables: []*pcspb.Table{{Id: 1, State: pcspb.TableState_TABLE_STATE_DROPPING}},
		shards: map[uint64][]*pcspb.Shard{1: {{Id: 10, Replicas: []uint64{1, 2}}}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Down},
		held: map[uint64]map[uint64]bool{1: {10: true}, 2: {10: true}}}
	st := Next(cat, live)
	if count(st, 1, false) != 1 || count(st, 2, false) != 0 || len(st.Delete) != 0 {
		t.Fatalf("drop step: %v", st)
	}
	live.held[1] = map[uint64]bool{}
	st = Next(cat, live)
	if len(st.Delete) != 1 {
		t.Fatalf("only a down node holds replicas: want delete, got %v", st)
	}
	// The table is gone; node 2 returns still holding shard 10: it is told to drop it.
	cat.tables, cat.shards = nil, map[uint64][]*pcspb.Shard{}
	var foreign []uint64
	for _, s := range []uint64{10} {
		if !cat.ShardExists(s) {
			foreign = append(foreign, s)
		}
	}
	if cmds := Orphans(foreign); len(cmds) != 1 || cmds[0].GetDropReplica() != 10 {
		t.Fatalf("returning node not told to drop: %v", cmds)
	}
}

func TestAlterAdvancesOnlyWhenAllLoaded(t *testing.T) {
	tbl := &pcspb.Table{Id: 1, State: pcspb.TableState_TABLE_STATE_PUBLIC, SchemaVersion: 2, MinLiveVersion: 1,
		Versions: []*pcspb.SchemaVersion{{Version: 1}, {Version: 2}}}
	cat := &fakeCatalog{tables: []*pcspb.Table{tbl}, shards: map[uint64][]*pcspb.Shard{}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Down},
		loaded: map[uint64]uint64{1: 2, 2: 1, 3: 1}}
	st := Next(cat, live)
	if len(st.Advance) != 0 || len(st.Commands[2]) != 1 || len(st.Commands[1]) != 0 || len(st.Commands[3]) != 0 {
		t.Fatalf("node 2 has not loaded v2: %v", st)
	}
	live.loaded[2] = 2 // node 3 is down: it does not hold the ALTER back
	if st = Next(cat, live); st.Advance[1] != 2 {
		t.Fatalf("all live nodes loaded v2: %v", st)
	}
}

// TestPartitionJob: a partition job is done once every replica of the shards it creates exists
// and no node that is not down holds a shard it drops; a down node does not hold it up.
func TestPartitionJob(t *testing.T) {
	job := &pcspb.PartitionJob{Id: 9, Kind: "truncate partition", Creating: []uint64{20},
		Dropping: []*pcspb.Shard{{Id: 10, Replicas: []uint64{1, 2, 3}}}}
	tbl := &pcspb.Table{Id: 1, State: pcspb.TableState_TABLE_STATE_PUBLIC, SchemaVersion: 1, MinLiveVersion: 1, PartitionJob: job}
	cat := &fakeCatalog{tables: []*pcspb.Table{tbl}, shards: map[uint64][]*pcspb.Shard{1: {{Id: 20, Replicas: []uint64{1, 2, 3}}}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Up},
		held: map[uint64]map[uint64]bool{1: {10: true}, 2: {10: true}, 3: {10: true}}}
	check := func(wantDone bool, wantCount [2]uint64) {
		t.Helper()
		done, c := PartitionJobProgress(cat, live, tbl)
		if done != wantDone || c != wantCount {
			t.Fatalf("progress: done %v %v, want %v %v", done, c, wantDone, wantCount)
		}
		if _, finished := Next(cat, live).Finished[1]; finished != wantDone {
			t.Fatalf("Next finished the job: %v, want %v", finished, wantDone)
		}
	}
	check(false, [2]uint64{0, 6})
	live.held = map[uint64]map[uint64]bool{1: {20: true}, 2: {20: true}, 3: {10: true, 20: true}}
	check(false, [2]uint64{5, 6}) // node 3 still holds the old shard
	live.state[3] = cluster.Down
	check(true, [2]uint64{5, 6}) // ... but it is down: it drops it when it returns
	live.state[3] = cluster.Up
	live.held[3] = map[uint64]bool{20: true}
	check(true, [2]uint64{6, 6})
}

// TestCommandsBounded: a backlog of replicas to create larger than MaxNodeCommands gives each
// node at most that many commands a step, oldest table first; a node with room still gets its
// commands; the rest follow once the first are made, and the table goes public when all are.
func TestCommandsBounded(t *testing.T) {
	const n = MaxNodeCommands + 3000
	big := make([]*pcspb.Shard, n)
	for i := range big {
		big[i] = &pcspb.Shard{Id: uint64(100 + i), Replicas: []uint64{1, 2}}
	}
	cat := &fakeCatalog{tables: []*pcspb.Table{{Id: 1, State: pcspb.TableState_TABLE_STATE_CREATING}, {Id: 2, State: pcspb.TableState_TABLE_STATE_CREATING}},
		shards: map[uint64][]*pcspb.Shard{1: big, 2: {{Id: 50, Replicas: []uint64{3}}, {Id: 51, Replicas: []uint64{1}}}}}
	live := &fakeLive{state: map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Up}, held: map[uint64]map[uint64]bool{1: {}, 2: {}, 3: {}}}
	st := Next(cat, live)
	if count(st, 1, true) != MaxNodeCommands || count(st, 2, true) != MaxNodeCommands || count(st, 3, true) != 1 || len(st.Public) != 0 {
		t.Fatalf("first step: %d, %d, %d commands, public %v", count(st, 1, true), count(st, 2, true), count(st, 3, true), st.Public)
	}
	if got := st.Commands[1][0].GetCreateReplica().GetId(); got != 100 {
		t.Fatalf("node 1's first command is for shard %d, want the oldest table's first, 100", got)
	}
	for _, c := range st.Commands[1] { // the nodes make what they were told
		live.held[1][c.GetCreateReplica().GetId()] = true
		live.held[2][c.GetCreateReplica().GetId()] = true
	}
	live.held[3][50] = true
	st = Next(cat, live)
	if count(st, 1, true) != n-MaxNodeCommands+1 || count(st, 2, true) != n-MaxNodeCommands || len(st.Public) != 0 {
		t.Fatalf("second step: %d, %d commands, public %v", count(st, 1, true), count(st, 2, true), st.Public)
	}
	for node, cs := range st.Commands {
		for _, c := range cs {
			live.held[node][c.GetCreateReplica().GetId()] = true
		}
	}
	if st = Next(cat, live); len(st.Public) != 2 || len(st.Commands) != 0 {
		t.Fatalf("all made: public %v, %d nodes with commands", st.Public, len(st.Commands))
	}
}
