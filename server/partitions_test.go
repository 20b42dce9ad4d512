package server

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/keyenc"
)

// rangeTable is a RANGE table on an int64 column, sub-partitioned by HASH(2).
func rangeTable(name string, bounds ...string) *pcspb.Table {
	t := &pcspb.Table{Name: name, Replicas: 2, Columns: []*pcspb.ColumnDef{{Name: "ts", Type: "int64"}, {Name: "id", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"},
			Sub: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: 2}}}
	for i, b := range bounds {
		t.Partition.Ranges = append(t.Partition.Ranges, &pcspb.RangePartition{Name: "p" + string(rune('0'+i)), LessThan: []string{b}})
	}
	return t
}

func tsKey(ts, id int64) []byte {
	k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}, {Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(ts), keyenc.I64(id)})
	return k
}

// waitNoJob waits until the table has no partition job, and checks the catalog's invariants on
// every member.
func waitNoJob(t *testing.T, tc *testCluster, c *client.Client, table string) {
	t.Helper()
	waitFor(t, 20*time.Second, "the partition job of "+table+" to finish", func() bool {
		tb, _, err := tc.primary().FSM().Table(table)
		return err == nil && tb.PartitionJob == nil
	})
	tc.waitConverged(10 * time.Second)
	for _, s := range tc.live() {
		if err := s.FSM().CheckInvariants(); err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
	}
}

// heldAnywhere reports whether any node holds the shard.
func heldAnywhere(nodes []*testNode, id uint64) bool {
	for _, n := range nodes {
		if slices.Contains(n.HeldShards(), id) {
			return true
		}
	}
	return false
}

// TestAlterPartitions: ADD, DROP and TRUNCATE PARTITION of a sub-partitioned RANGE table: rows
// of the other partitions keep their shards; an added partition's replicas exist on their
// nodes when its job ends; a dropped one's rows have no partition and its shards leave every
// node, also one that was down during the drop; a truncated one gets new shards; refused
// changes change nothing.
func TestAlterPartitions(t *testing.T) {
	tc := newTestCluster(t, 3, fastNodes)
	c := tc.client()
	ctx := ctxT(t, 90*time.Second)
	nodes := tc.startNodes(3, 1)
	if _, err := c.CreateTable(ctx, rangeTable("events", "10", "20")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		st, ok := tableState(t, tc.primary(), "events")
		return ok && st == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	shardOf := func(ts, id int64) (*pcspb.Shard, error) {
		r, err := c.GetShard(ctx, "events", tsKey(ts, id))
		return r.GetShard(), err
	}
	before := map[int64]uint64{}
	for _, ts := range []int64{-5, 5, 15} {
		sh, err := shardOf(ts, 1)
		if err != nil {
			t.Fatal(err)
		}
		before[ts] = sh.Id
	}
	if _, err := shardOf(25, 1); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a row past the last bound: %v", err)
	}

	// ADD: the rows past the last bound have a partition; the others keep their shards.
	tb, err := c.AlterPartitions(ctx, "events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "p2", LessThan: []string{"30"}}}})
	if err != nil || tb.PartitionJob == nil || len(tb.PartitionJob.Creating) != 2 {
		t.Fatalf("add partition: %v, %v", tb.GetPartitionJob(), err)
	}
	if _, err := c.AlterPartitions(ctx, "events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "p0"}}); !errors.Is(err, client.ErrAlterInProgress) {
		t.Fatalf("a second change while the first runs: %v", err)
	}
	added := tb.PartitionJob.Creating
	waitNoJob(t, tc, c, "events")
	for _, id := range added {
		sh, _, err := tc.primary().FSM().ShardByID(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range sh.Replicas {
			if !slices.Contains(nodeByID(nodes, r).HeldShards(), id) {
				t.Fatalf("added shard %d not on its replica %d after the job", id, r)
			}
		}
	}
	if sh, err := shardOf(25, 1); err != nil || !slices.Contains(added, sh.Id) || sh.Partition[:2] != "p2" {
		t.Fatalf("a row of the new partition: %v, %v", sh, err)
	}
	for ts, id := range before {
		if sh, err := shardOf(ts, 1); err != nil || sh.Id != id {
			t.Fatalf("row ts=%d moved from shard %d to %v (%v)", ts, id, sh, err)
		}
	}

	// DROP with a node down: the job ends without it (it is down), and it drops the shards
	// when it returns.
	down := nodes[2]
	down.stop()
	waitFor(t, 20*time.Second, "node down", func() bool { return tc.primary().live.State(down.id()) == cluster.Down })
	p1, _ := shardOf(15, 1)
	p1b, _ := shardOf(15, 2)
	if _, err := c.AlterPartitions(ctx, "events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "p1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := shardOf(15, 1); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a row of the dropped partition: %v", err)
	}
	waitNoJob(t, tc, c, "events")
	down.start()
	waitFor(t, 20*time.Second, "the dropped partition's shards gone from every node", func() bool {
		return !heldAnywhere(nodes, p1.Id) && !heldAnywhere(nodes, p1b.Id)
	})
	if sh, err := shardOf(25, 1); err != nil || !slices.Contains(added, sh.Id) {
		t.Fatalf("after the drop, a row of p2 moved: %v, %v", sh, err)
	}

	// TRUNCATE: new shards for p0, the old ones gone.
	old0, _ := shardOf(5, 1)
	tb, err = c.AlterPartitions(ctx, "events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Truncate{Truncate: "p0"}})
	if err != nil {
		t.Fatal(err)
	}
	if sh, err := shardOf(5, 1); err != nil || sh.Id == old0.Id || !slices.Contains(tb.PartitionJob.Creating, sh.Id) {
		t.Fatalf("after truncate, row of p0 in %v (%v), was %d", sh, err, old0.Id)
	}
	waitNoJob(t, tc, c, "events")
	waitFor(t, 20*time.Second, "the truncated shards gone", func() bool { return !heldAnywhere(nodes, old0.Id) })

	// A dropped partition's name may be used again, for a new range.
	if _, err := c.AlterPartitions(ctx, "events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "p1", LessThan: []string{"40"}}}}); err != nil {
		t.Fatal(err)
	}
	waitNoJob(t, tc, c, "events")
	if sh, err := shardOf(35, 1); err != nil || sh.Partition[:2] != "p1" {
		t.Fatalf("row of the new p1: %v %v", sh, err)
	}

	// Refused changes change nothing.
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "h", Replicas: 2, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 4}}); err != nil {
		t.Fatal(err)
	}
	withMax := rangeTable("m", "10", "MAXVALUE")
	if _, err := c.CreateTable(ctx, withMax); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "tables public", func() bool {
		a, _ := tableState(t, tc.primary(), "h")
		b, _ := tableState(t, tc.primary(), "m")
		return a == pcspb.TableState_TABLE_STATE_PUBLIC && b == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	catalogBefore := tc.primary().FSM().Tables()
	for name, tcase := range map[string]struct {
		table string
		alter *pcspb.PartitionAlter
		want  error
	}{
		"unknown table":     {"nope", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "p0"}}, client.ErrNotFound},
		"unknown partition": {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "zz"}}, client.ErrInvalidArgument},
		"dropped partition": {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Truncate{Truncate: "p2x"}}, client.ErrInvalidArgument},
		"bound not above":   {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "q", LessThan: []string{"25"}}}}, client.ErrInvalidArgument},
		"duplicate name":    {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "p2", LessThan: []string{"90"}}}}, client.ErrInvalidArgument},
		"bad bound":         {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "q", LessThan: []string{"x"}}}}, client.ErrInvalidArgument},
		"list on range":     {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddList{AddList: &pcspb.ListPartition{Name: "q", Values: []*pcspb.ValueTuple{{Values: []string{"1"}}}}}}, client.ErrInvalidArgument},
		"hash table":        {"h", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "h0"}}, client.ErrInvalidArgument},
		"after MAXVALUE":    {"m", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "q", LessThan: []string{"99"}}}}, client.ErrInvalidArgument},
		"no change":         {"events", &pcspb.PartitionAlter{}, client.ErrInvalidArgument},
		"replicas 0":        {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_SetReplicas{SetReplicas: 0}}, client.ErrInvalidArgument},
		"replicas 10":       {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_SetReplicas{SetReplicas: 10}}, client.ErrInvalidArgument},
		"below min-in-sync": {"events", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_SetReplicas{SetReplicas: 1}}, client.ErrInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.AlterPartitions(ctx, tcase.table, tcase.alter); !errors.Is(err, tcase.want) {
				t.Fatalf("got %v, want %v", err, tcase.want)
			}
		})
	}
	for i, tb := range tc.primary().FSM().Tables() {
		if !proto.Equal(tb, catalogBefore[i]) {
			t.Fatalf("a refused change changed table %q", tb.Name)
		}
	}
}

func nodeByID(nodes []*testNode, id uint64) *testNode {
	for _, n := range nodes {
		if n.id() == id {
			return n
		}
	}
	return nil
}

// TestIntervalPartitions: a timestamp interval table is created with the current day's
// partition and gets interval-create-ahead days made ahead; a write past them makes its own
// (50 concurrent covers of one new day make one partition); partitions past the retention are
// dropped as jobs.
func TestIntervalPartitions(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	c := tc.client()
	ctx := ctxT(t, 90*time.Second)
	tc.startNodes(3, 1)
	day := 24 * time.Hour
	now := time.Now().UTC()
	old := now.Add(-40 * day).Truncate(day)
	tbl := &pcspb.Table{Name: "ev", Replicas: 2, Columns: []*pcspb.ColumnDef{{Name: "ts", Type: "timestamp"}, {Name: "id", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"}, Interval: "1d", Retention: "30d",
			Ranges: []*pcspb.RangePartition{{Name: "old", LessThan: []string{old.Format(time.RFC3339)}}}}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	schema, _ := catalog.CompileSchema(tbl.Columns)
	key := func(ts time.Time, id int64) []byte {
		k, _ := keyenc.Encode(nil, schema.Cols, []keyenc.Value{keyenc.Ts(ts), keyenc.I64(id)})
		return k
	}
	liveNames := func() []string {
		tb, _, err := tc.primary().FSM().Table("ev")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range tb.Partition.Ranges {
			if !r.Dropped {
				out = append(out, r.Name)
			}
		}
		return out
	}
	// Past the retention: "old" is dropped; ahead: today's and the next two days exist.
	waitFor(t, 30*time.Second, "old partition dropped and two days made ahead", func() bool {
		names := liveNames()
		return !slices.Contains(names, "old") && slices.Contains(names, now.Add(2*day).Format("p20060102")) && slices.Contains(names, now.Format("p20060102"))
	})
	waitNoJob(t, tc, c, "ev")
	if _, err := c.GetShard(ctx, "ev", key(now, 1)); err != nil {
		t.Fatalf("today's row: %v", err)
	}
	if _, err := c.GetShard(ctx, "ev", key(old.Add(-day), 1)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("a row past the retention: %v", err)
	}

	// 50 concurrent covers of a day ten days ahead: the days up to it are made once.
	future := now.Add(10 * day)
	before := len(liveNames())
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			_, err := c.AlterPartitions(ctx, "ev", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_CoverKey{CoverKey: key(future, int64(i))}})
			errs <- err
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	names := liveNames()
	if len(names) != before+8 || !slices.Contains(names, future.Format("p20060102")) {
		t.Fatalf("after 50 covers of %s: %d partitions (had %d): %v", future.Format("p20060102"), len(names), before, names)
	}
	waitNoJob(t, tc, c, "ev")
	sh, err := c.GetShard(ctx, "ev", key(future, 7))
	if err != nil || sh.Shard.Partition != future.Format("p20060102") {
		t.Fatalf("a row of the covered day: %v %v", sh, err)
	}
	// Refused: a cover far past the last partition, of a table without an interval, malformed.
	for name, tcase := range map[string]struct {
		table string
		key   []byte
	}{
		"too far":     {"ev", key(now.Add(1000*day), 1)},
		"no interval": {"events", tsKey(1, 1)},
		"malformed":   {"ev", []byte{0xff}},
	} {
		if _, err := c.AlterPartitions(ctx, tcase.table, &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_CoverKey{CoverKey: tcase.key}}); !errors.Is(err, client.ErrInvalidArgument) && !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestGroupPartitions: the tables of a shard group change partitions together: an ADD or DROP
// of one is the group's, the new leaves' shards co-located table by table; a TRUNCATE is one
// table's, its new shards where the old ones were.
func TestGroupPartitions(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	tc.startNodes(4, 1)
	for _, name := range []string{"ga", "gb"} {
		tb := rangeTable(name, "10", "20")
		tb.ShardGroup = "g"
		if _, err := c.CreateTable(ctx, tb); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, name+" public", func() bool {
			st, ok := tableState(t, tc.primary(), name)
			return ok && st == pcspb.TableState_TABLE_STATE_PUBLIC
		})
	}
	replicasOf := func(table string, ts int64) []uint64 {
		r, err := c.GetShard(ctx, table, tsKey(ts, 1))
		if err != nil {
			t.Fatalf("%s row %d: %v", table, ts, err)
		}
		out := slices.Clone(r.Shard.Replicas)
		slices.Sort(out)
		return out
	}
	if _, err := c.AlterPartitions(ctx, "gb", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: "p2", LessThan: []string{"30"}}}}); err != nil {
		t.Fatal(err)
	}
	waitNoJob(t, tc, c, "ga")
	waitNoJob(t, tc, c, "gb")
	if a, b := replicasOf("ga", 25), replicasOf("gb", 25); !slices.Equal(a, b) {
		t.Fatalf("the added partition's shards are not co-located: %v and %v", a, b)
	}
	before := replicasOf("ga", 5)
	oldB, _ := c.GetShard(ctx, "gb", tsKey(5, 1))
	oldA, _ := c.GetShard(ctx, "ga", tsKey(5, 1))
	if _, err := c.AlterPartitions(ctx, "ga", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Truncate{Truncate: "p0"}}); err != nil {
		t.Fatal(err)
	}
	waitNoJob(t, tc, c, "ga")
	if newA, _ := c.GetShard(ctx, "ga", tsKey(5, 1)); newA.Shard.Id == oldA.Shard.Id || !slices.Equal(replicasOf("ga", 5), before) {
		t.Fatalf("truncate of ga: shard %d on %v, was %d on %v", newA.Shard.Id, replicasOf("ga", 5), oldA.Shard.Id, before)
	}
	if sameB, _ := c.GetShard(ctx, "gb", tsKey(5, 1)); sameB.Shard.Id != oldB.Shard.Id {
		t.Fatalf("a truncate of ga changed gb's shard %d to %d", oldB.Shard.Id, sameB.Shard.Id)
	}
	if _, err := c.AlterPartitions(ctx, "ga", &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: "p1"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ga", "gb"} {
		if _, err := c.GetShard(ctx, name, tsKey(15, 1)); !errors.Is(err, client.ErrInvalidArgument) {
			t.Fatalf("%s: a row of the group's dropped partition: %v", name, err)
		}
	}
	waitNoJob(t, tc, c, "gb")
}
