package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

// TestStoreMerge: a replica absorbs its right neighbour at a position of its own log: every
// row of both is under the survivor, request records move with fresh stamps, floors keep the
// higher, the absorbed replica is gone, and all of it survives a reopen. A neighbour at another
// position than the primary's, or not adjacent, is refused and nothing changes.
func TestStoreMerge(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	left := &pcspb.Shard{Id: 1, TableId: 1, End: []byte("m"), Term: 1, Primary: 1, Replicas: []uint64{1}, Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 2}}
	right := &pcspb.Shard{Id: 2, TableId: 1, Start: []byte("m"), Term: 1, Primary: 1, Replicas: []uint64{1}, Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 2}}
	other := &pcspb.Shard{Id: 3, TableId: 2, Term: 1, Primary: 1, Replicas: []uint64{1}, Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 1}}
	for _, sh := range []*pcspb.Shard{left, right, other} {
		if err := s.PutReplica(sh); err != nil {
			t.Fatal(err)
		}
	}
	kv := func(k, v string) []*pcspb.KVPair { return []*pcspb.KVPair{{Key: []byte(k), Value: []byte(v)}} }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Write(1, Position{1, 1}, kv("a", "1"), nil, []*pcspb.AppliedRequest{{ClientId: 9, Seq: 4, At: 1}}, nil))
	must(s.Write(2, Position{1, 1}, kv("n", "2"), nil, []*pcspb.AppliedRequest{{ClientId: 9, Seq: 5, At: 1}}, nil))
	must(s.Write(2, Position{2, 1}, kv("z", "3"), nil, []*pcspb.AppliedRequest{{ClientId: 8, Seq: 7, AckedBelow: 7, Trim: true, At: 2}}, nil))
	must(s.Write(3, Position{1, 1}, kv("n", "other table"), nil, nil, nil))
	merged := proto.Clone(left).(*pcspb.Shard)
	merged.End, merged.Epoch = nil, &pcspb.ShardEpoch{ConfVer: 1, Version: 3}
	// Refused: the neighbour behind the primary, and a range that is not the union.
	if err := s.Merge(merged, 2, Position{2, 1}, Position{1, 1}); !errors.Is(err, ErrMergeMismatch) {
		t.Fatalf("merge of a neighbour behind the primary: %v", err)
	}
	bad := proto.Clone(merged).(*pcspb.Shard)
	bad.End = []byte("q")
	if err := s.Merge(bad, 2, Position{2, 1}, Position{2, 1}); !errors.Is(err, ErrMergeMismatch) {
		t.Fatalf("merge to a range that is not the union: %v", err)
	}
	if _, ok := s.Replica(2); !ok {
		t.Fatal("a refused merge removed the neighbour")
	}
	must(s.Merge(merged, 2, Position{2, 1}, Position{2, 1}))
	check := func(s *Store) {
		t.Helper()
		for k, want := range map[string]string{"a": "1", "n": "2", "z": "3"} {
			if v, ok, err := s.Get(1, []byte(k)); err != nil || !ok || string(v) != want {
				t.Fatalf("row %s after the merge: %q %v %v", k, v, ok, err)
			}
		}
		if v, _, _ := s.Get(3, []byte("n")); string(v) != "other table" {
			t.Fatalf("another table's row changed: %q", v)
		}
		if _, ok := s.Replica(2); ok {
			t.Fatal("the absorbed replica is still there")
		}
		if sh, _ := s.Replica(1); len(sh.End) != 0 || sh.Epoch.GetVersion() != 3 || s.Position(1) != (Position{2, 1}) {
			t.Fatalf("survivor after the merge: %v at %+v", sh, s.Position(1))
		}
		for _, r := range [][2]uint64{{9, 4}, {9, 5}} {
			if ok, err := s.Applied(1, r[0], r[1]); err != nil || !ok {
				t.Fatalf("request record %v did not move: %v %v", r, ok, err)
			}
		}
		if f, err := s.Floor(1, 8); err != nil || f != 7 {
			t.Fatalf("client 8's floor after the merge: %d %v, want 7", f, err)
		}
		if m := s.Merged(1); m.Shard != 2 || m.Version != 2 {
			t.Fatalf("the survivor remembers absorbing %+v, want shard 2 at version 2", m)
		}
		if rows, _, err := s.Scan(2, nil, nil, 10); err != nil || len(rows) != 0 {
			t.Fatalf("rows left under the absorbed replica: %v %v", rows, err)
		}
	}
	check(s)
	must(s.Close())
	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}

// TestMergeShards: real nodes and PCS. A shard is split (both halves on the same three nodes,
// led by the same one) and written to; the primary merges the right half back as an entry of
// the left half's log: on every node the survivor covers both ranges at a newer epoch, at the
// same log position, with every row, and the absorbed replica is gone. A command with stale
// versions is ignored; one for shards that are not neighbours is refused.
func TestMergeShards(t *testing.T) {
	c, nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitNodesUp(t, ctx, c, 3)
	// No balancing: the halves stay where the split leaves them (PCS does not record merges yet,
	// so nothing should move the absorbed shard either).
	if _, err := c.SetScheduleConfig(ctx, "paused-schedulers", "balance-replica,balance-primary,hot"); err != nil {
		t.Fatal(err)
	}
	createTable(t, ctx, c, "mg", 3, 1)
	kv := c.KV("mg")
	key := func(i int) []byte {
		k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(i))})
		return k
	}
	for i := 0; i < 100; i++ {
		if err := kv.Put(ctx, key(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.ScanShards(ctx, "mg", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.SplitShard(ctx, resp.Shards[0].Id, nil); err != nil {
		t.Fatal(err)
	}
	var shards []*pcspb.Shard
	waitFor(t, 30*time.Second, "the split recorded", func() bool {
		resp, err := c.ScanShards(ctx, "mg", nil, nil)
		shards = resp.GetShards()
		return err == nil && len(shards) == 2
	})
	for i := 100; i < 200; i++ { // writes to both halves after the split
		if err := kv.Put(ctx, key(i%100), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	left, right := shards[0], shards[1]
	var primary *Server
	for _, n := range nodes {
		if sh, ok := n.Store.Replica(left.Id); ok && sh.Primary == n.Node.self() {
			primary = n
		}
	}
	if primary == nil {
		t.Fatal("no primary of the left half")
	}
	lsh, _ := primary.Store.Replica(left.Id)
	rsh, _ := primary.Store.Replica(right.Id)
	stale := &pcspb.MergeShardsCommand{ShardId: left.Id, Version: lsh.Epoch.Version - 1, SourceId: right.Id, SourceVersion: rsh.Epoch.Version}
	if err := primary.Node.MergeShards(ctx, stale); err != nil {
		t.Fatalf("a stale command: %v", err)
	}
	backwards := &pcspb.MergeShardsCommand{ShardId: right.Id, Version: rsh.Epoch.Version, SourceId: left.Id, SourceVersion: lsh.Epoch.Version}
	if err := primary.Node.MergeShards(ctx, backwards); !errors.Is(err, ErrCannotMerge) {
		t.Fatalf("merging the left half into the right: %v (left %v, right %v)", err, lsh, rsh)
	}
	cmd := &pcspb.MergeShardsCommand{ShardId: left.Id, Version: lsh.Epoch.Version, SourceId: right.Id, SourceVersion: rsh.Epoch.Version}
	if err := primary.Node.MergeShards(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	want := primary.Store.Position(left.Id)
	for i, n := range nodes {
		sh, ok := n.Store.Replica(left.Id)
		if !ok || !bytes.Equal(sh.End, rsh.End) || !bytes.Equal(sh.Start, lsh.Start) || sh.Epoch.Version != max(lsh.Epoch.Version, rsh.Epoch.Version)+1 {
			t.Fatalf("node %d: survivor %v", i, sh)
		}
		if got := n.Store.Position(left.Id); got != want {
			t.Fatalf("node %d: survivor at %+v, primary at %+v", i, got, want)
		}
		if _, ok := n.Store.Replica(right.Id); ok {
			t.Fatalf("node %d still holds the absorbed shard", i)
		}
		rows, _, err := n.Store.Scan(left.Id, nil, nil, 1000)
		got := map[string]bool{}
		for _, r := range rows {
			got[string(r.Value)] = true
		}
		for j := 100; j < 200; j++ {
			if !got[fmt.Sprint(j)] {
				t.Fatalf("node %d: after the merge the survivor lacks the row written %d (%d rows, %v)", i, j, len(rows), err)
			}
		}
		if len(rows) != 100 {
			t.Fatalf("node %d: %d rows after the merge, want 100", i, len(rows))
		}
	}
}
