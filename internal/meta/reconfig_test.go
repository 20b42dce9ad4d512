package meta

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

func changeCmd(c *pcspb.CmdChangeReplicas) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_ChangeReplicas{ChangeReplicas: c}}
}

func splitCmd(c *pcspb.CmdSplitShard) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_SplitShard{SplitShard: c}}
}

// TestShardReconfiguration: learner added, promoted, primary handed over, a replica removed;
// a split; each bad change is refused with the catalog (digest) unchanged; invariants hold and
// survive a snapshot round trip.
func TestShardReconfiguration(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	registerNodes(a, 4)
	tbl := ordersTable()
	tbl.Partition.HashPartitions = 2
	if r := a.apply(createTableCmd(t, a.f, tbl)); r.Err != nil {
		t.Fatal(r.Err)
	}
	sh := a.f.TableShards(1)[0]
	var spare uint64
	for _, n := range a.f.DataNodes() {
		if !slices.Contains(sh.Replicas, n.Id) {
			spare = n.Id
		}
	}
	cur := func() *pcspb.Shard { s, _, _ := a.f.ShardByID(sh.Id); return s }
	shards := func() string { // every shard of the catalog, serialized
		var b []byte
		for _, t := range a.f.Tables() {
			for _, s := range a.f.TableShards(t.Id) {
				m, _ := proto.Marshal(s)
				b = append(b, m...)
			}
		}
		return string(b)
	}
	refused := func(name string, cmd *pcspb.Command, want error) {
		t.Helper()
		before := shards()
		if r := a.apply(cmd); !errors.Is(r.Err, want) {
			t.Fatalf("%s: %v, want %v", name, r.Err, want)
		}
		if shards() != before {
			t.Fatalf("%s: refused change altered the catalog", name)
		}
	}
	at := func(c *pcspb.CmdChangeReplicas) *pcspb.Command {
		s := cur()
		c.ShardId, c.Term, c.ConfVer = s.Id, s.Term, s.Epoch.ConfVer
		return changeCmd(c)
	}
	refused("stale conf_ver", changeCmd(&pcspb.CmdChangeReplicas{ShardId: sh.Id, Term: 1, ConfVer: 7, AddLearner: spare}), ErrStaleEpoch)
	refused("two changes", at(&pcspb.CmdChangeReplicas{AddLearner: spare, RemoveNode: sh.Replicas[1]}), ErrInvalid)
	refused("learner already a replica", at(&pcspb.CmdChangeReplicas{AddLearner: sh.Replicas[1]}), ErrInvalid)
	refused("unknown node", at(&pcspb.CmdChangeReplicas{AddLearner: 99}), ErrNodeNotFound)
	refused("unknown shard", changeCmd(&pcspb.CmdChangeReplicas{ShardId: 999, Term: 1, ConfVer: 1, AddLearner: spare}), ErrShardNotFound)
	refused("remove the primary", at(&pcspb.CmdChangeReplicas{RemoveNode: sh.Primary}), ErrInvalid)
	refused("primary to a non-replica", at(&pcspb.CmdChangeReplicas{NewPrimary: spare}), ErrInvalid)

	if r := a.apply(at(&pcspb.CmdChangeReplicas{AddLearner: spare})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if s := cur(); !slices.Contains(s.Learners, spare) || s.Epoch.ConfVer != 2 {
		t.Fatalf("after add learner: %v", s)
	}
	refused("promote a non-learner", at(&pcspb.CmdChangeReplicas{PromoteLearner: sh.Replicas[1]}), ErrInvalid)
	refused("primary to a learner", at(&pcspb.CmdChangeReplicas{NewPrimary: spare}), ErrInvalid)
	if r := a.apply(at(&pcspb.CmdChangeReplicas{PromoteLearner: spare})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := a.apply(at(&pcspb.CmdChangeReplicas{NewPrimary: spare})); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := a.apply(at(&pcspb.CmdChangeReplicas{RemoveNode: sh.Primary})); r.Err != nil {
		t.Fatal(r.Err)
	}
	s := cur()
	if s.Primary != spare || s.Replicas[0] != spare || len(s.Replicas) != 3 || len(s.Learners) != 0 || slices.Contains(s.Replicas, sh.Primary) ||
		s.Term != sh.Term+1 || s.Epoch.ConfVer != 5 {
		t.Fatalf("after the move: %v", s)
	}

	// Split: the new id must have been reserved; the key strictly inside; the version current.
	r := a.apply(&pcspb.Command{Op: &pcspb.Command_AllocIds{AllocIds: &pcspb.CmdAllocIDs{Kind: "shard", Count: 1}}})
	newID := r.First
	mid := append(bytes.Clone(s.Start), 0x80)
	refused("unreserved id", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: mid, NewShardId: newID + 1}), ErrInvalid)
	refused("id in use", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: mid, NewShardId: s.Id}), ErrInvalid)
	refused("key at the start", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: s.Start, NewShardId: newID}), ErrInvalid)
	refused("key past the end", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: s.End, NewShardId: newID}), ErrInvalid)
	refused("stale version", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 2, SplitKey: mid, NewShardId: newID}), ErrStaleEpoch)
	if r := a.apply(splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: mid, NewShardId: newID})); r.Err != nil || r.ID != newID {
		t.Fatalf("split: %v %d", r.Err, r.ID)
	}
	left := cur()
	right, _, _ := a.f.ShardByID(newID)
	if !bytes.Equal(left.End, mid) || !bytes.Equal(right.Start, mid) || !bytes.Equal(right.End, s.End) || left.Epoch.Version != 2 ||
		right.Epoch.Version != 2 || right.Primary != left.Primary || right.Term != left.Term {
		t.Fatalf("split gave %v and %v", left, right)
	}
	refused("the same split again", splitCmd(&pcspb.CmdSplitShard{ShardId: s.Id, Version: 1, SplitKey: mid, NewShardId: newID}), ErrStaleEpoch)
	if err := a.f.CheckInvariants(); err != nil {
		t.Fatal(err)
	}

	// Merge: the primary's report is recorded once, at the versions it was made at; the
	// survivor covers both ranges again at version 3 and the source is gone.
	report := []*pcspb.ShardStats{{ShardId: left.Id, Version: 3, MergedFrom: right.Id, MergedFromVersion: 2,
		ReplicaPositions: map[uint64]uint64{left.Replicas[0]: 9, left.Replicas[1]: 9}}}
	if got := a.f.PendingMerges(left.Primary, report); len(got) != 0 {
		t.Fatalf("a merge was recorded before every replica was in line: %v", got)
	}
	for _, r := range left.Replicas {
		report[0].ReplicaPositions[r] = 9
	}
	if got := a.f.PendingMerges(left.Primary+100, report); len(got) != 0 {
		t.Fatalf("a node that is not the primary reported a merge: %v", got)
	}
	pending := a.f.PendingMerges(left.Primary, report)
	if len(pending) != 1 || pending[0].ShardId != left.Id || pending[0].SourceId != right.Id || pending[0].Version != 2 || pending[0].SourceVersion != 2 {
		t.Fatalf("pending merges: %v", pending)
	}
	mergeCmd := func(c *pcspb.CmdMergeShards) *pcspb.Command {
		return &pcspb.Command{Op: &pcspb.Command_MergeShards{MergeShards: c}}
	}
	refused("merge at a stale version", mergeCmd(&pcspb.CmdMergeShards{ShardId: left.Id, Version: 1, SourceId: right.Id, SourceVersion: 2}), ErrStaleEpoch)
	refused("merge of the right into itself backwards", mergeCmd(&pcspb.CmdMergeShards{ShardId: right.Id, Version: 2, SourceId: left.Id, SourceVersion: 2}), ErrInvalid)
	refused("merge of an unknown shard", mergeCmd(&pcspb.CmdMergeShards{ShardId: left.Id, Version: 2, SourceId: newID + 5, SourceVersion: 2}), ErrShardNotFound)
	if r := a.apply(mergeCmd(pending[0])); r.Err != nil {
		t.Fatalf("merge: %v", r.Err)
	}
	merged := cur()
	if !bytes.Equal(merged.Start, s.Start) || !bytes.Equal(merged.End, s.End) || merged.Epoch.Version != 3 || merged.Primary != left.Primary {
		t.Fatalf("merge gave %v", merged)
	}
	if _, _, err := a.f.ShardByID(right.Id); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("the source is still in the catalog: %v", err)
	}
	if got := a.f.PendingMerges(left.Primary, report); len(got) != 0 {
		t.Fatalf("a recorded merge is still pending: %v", got)
	}
	refused("the same merge again", mergeCmd(pending[0]), ErrShardNotFound)
	if err := a.f.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if _, err := EncodeCommand(mergeCmd(pending[0]), VersionMerge-1); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("a merge encoded below its command version: %v", err)
	}
	dst := New(Options{})
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	d1, _ := a.f.Digest()
	d2, _ := dst.Digest()
	if d1 != d2 || dst.CheckInvariants() != nil {
		t.Fatal("restored catalog differs or breaks an invariant")
	}
}

// TestForeignShardsKeepsPendingSplits: a node's new half of a split the catalog has not
// recorded is not an orphan; once recorded it is a normal replica; an unknown shard without a
// pending split is.
func TestForeignShardsKeepsPendingSplits(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	registerNodes(a, 3)
	tbl := ordersTable()
	tbl.Partition.HashPartitions = 1
	if r := a.apply(createTableCmd(t, a.f, tbl)); r.Err != nil {
		t.Fatal(r.Err)
	}
	s := a.f.TableShards(1)[0]
	newID := a.apply(&pcspb.Command{Op: &pcspb.Command_AllocIds{AllocIds: &pcspb.CmdAllocIDs{Kind: "shard", Count: 1}}}).First
	mid := append(bytes.Clone(s.Start), 0x80)
	stats := []*pcspb.ShardStats{{ShardId: s.Id, Version: 2, Start: s.Start, End: mid},
		{ShardId: newID, Version: 2, Start: mid, End: s.End, SplitFrom: s.Id}, {ShardId: 777, Version: 1}}
	if got, _ := a.f.ForeignShards(s.Primary, []uint64{s.Id, newID, 777}, stats); len(got) != 1 || got[0] != 777 {
		t.Fatalf("foreign: %v, want [777]", got)
	}
	// A held shard the stats do not cover (made after they were taken) is not judged yet: the
	// new half of a split, reported in the next heartbeat, would otherwise be dropped.
	if got, clean := a.f.ForeignShards(s.Primary, []uint64{s.Id, newID, 777}, stats[:1]); len(got) != 0 || clean {
		t.Fatalf("foreign without stats: %v (clean %v), want none, not clean (held shards the catalog does not give)", got, clean)
	}
	if got, clean := a.f.ForeignShards(s.Primary, []uint64{s.Id}, nil); len(got) != 0 || !clean {
		t.Fatalf("foreign: %v (clean %v), want none, clean", got, clean)
	}
	pending := a.f.PendingSplits(s.Primary, stats)
	if len(pending) != 1 || pending[0].NewShardId != newID || !bytes.Equal(pending[0].SplitKey, mid) {
		t.Fatalf("pending splits: %v", pending)
	}
	if other := s.Replicas[1]; len(a.f.PendingSplits(other, stats)) != 0 {
		t.Fatal("a split reported by a node that is not the primary was taken")
	}
	if r := a.apply(splitCmd(pending[0])); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := a.f.PendingSplits(s.Primary, stats); len(got) != 0 {
		t.Fatalf("a recorded split is still pending: %v", got)
	}
}
