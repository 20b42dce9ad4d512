package checker

import (
	"slices"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// TestMerge: two small neighbours of one partition: the right one's replicas go to the left
// one's nodes first, then its primary, then the left one absorbs it; nothing when merges are
// off, either is too big, hot, split recently, busy, of another partition or of a shard group.
func TestMerge(t *testing.T) {
	type S = operator.Step
	for _, tc := range []struct {
		name         string
		right        []uint64 // the right shard's replicas, its primary first
		rightPart    string
		size         uint64
		keys         float64
		off, blocked bool
		group        string
		follower     int // 1: both follow one anchor shard; 2: each its own
		want         []S
		wantShard    uint64 // the shard the operator is on (2: the right one)
	}{
		{name: "right replica to a left node", right: []uint64{1, 2, 4}, want: operator.Move(&view.Shard{Primary: 1}, 4, 3), wantShard: 2},
		{name: "right primary to the left one's", right: []uint64{2, 1, 3},
			want: []S{{Kind: operator.TransferPrimary, Node: 1}}, wantShard: 2},
		{name: "aligned: absorb", right: []uint64{1, 3, 2},
			want: []S{{Kind: operator.Absorb, Node: 1, Source: 2, Version: 1, SourceVersion: 1}}, wantShard: 1},
		{name: "merges off", right: []uint64{1, 2, 3}, off: true},
		{name: "neither small", right: []uint64{1, 2, 3}, size: 21 << 20},
		{name: "too big together", right: []uint64{1, 2, 3}, size: 16 << 20},
		{name: "hot together", right: []uint64{1, 2, 3}, keys: 60},
		{name: "split recently", right: []uint64{1, 2, 3}, blocked: true},
		{name: "another partition", right: []uint64{1, 2, 3}, rightPart: "p1"},
		{name: "a shard group's anchors: as any", right: []uint64{1, 2, 3}, group: "g",
			want: []S{{Kind: operator.Absorb, Node: 1, Source: 2, Version: 1, SourceVersion: 1}}, wantShard: 1},
		{name: "followers of two anchors", right: []uint64{1, 2, 3}, group: "g", follower: 2},
		{name: "followers of one anchor", right: []uint64{1, 2, 3}, group: "g", follower: 1,
			want: []S{{Kind: operator.Absorb, Node: 1, Source: 2, Version: 1, SourceVersion: 1}}, wantShard: 1},
		{name: "followers of one anchor, not aligned", right: []uint64{2, 1, 3}, group: "g", follower: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := schedtest.Cluster(4, 0, 3, "")
			v.CanMerge = !tc.off
			v.Tables[1].Group = tc.group
			l := schedtest.Shard(v, tc.size, 1, 2, 3)
			r := schedtest.Shard(v, tc.size, tc.right...)
			l.Partition, r.Partition = "p0", "p0"
			if tc.rightPart != "" {
				r.Partition = tc.rightPart
			}
			l.End, r.Start = "m", "m"
			l.Load, r.Load = view.Load{Writes: tc.keys}, view.Load{Writes: tc.keys}
			env := schedtest.Env(v)
			env.Merge = scheduler.MergeConfig{MaxBytes: 20 << 20, MaxResultBytes: 30 << 20, MaxKeys: 100, AfterSplit: time.Hour}
			env.RightNeighbour = func(id uint64) *view.Shard {
				if id == l.ID && r.Partition == l.Partition {
					return r
				}
				return nil
			}
			env.MergeBlocked = func(id uint64) bool { return tc.blocked && id == r.ID }
			if tc.follower > 0 {
				a1, a2 := &view.Shard{ID: 100}, &view.Shard{ID: 101}
				env.Anchors = map[uint64]*view.Shard{l.ID: a1, r.ID: a1}
				if tc.follower == 2 {
					env.Anchors[r.ID] = a2
				}
			}
			var intended [2]uint64
			env.IntendMerge = func(a, b uint64) { intended = [2]uint64{a, b} }
			op := Merge{}.Check(env, l)
			if !slices.Equal(steps(op), tc.want) {
				t.Fatalf("got %v, want %v", steps(op), tc.want)
			}
			if op == nil {
				if intended != [2]uint64{} {
					t.Fatalf("no merge, yet the shards %v were marked as merging", intended)
				}
				return
			}
			if op.Shard != tc.wantShard || op.Kind != operator.Merge || intended != [2]uint64{l.ID, r.ID} {
				t.Fatalf("operator on shard %d of kind %s (want %d, merge), marked merging %v", op.Shard, op.Kind, tc.wantShard, intended)
			}
			if tc.want[0].Kind == operator.Absorb && !slices.Equal(op.Claims(), []uint64{l.ID, r.ID}) {
				t.Fatalf("a merge claims %v, want both shards", op.Claims())
			}
		})
	}
}
