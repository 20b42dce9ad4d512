package checker

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/schedtest"
	"github.com/postdb/pcs/internal/schedule/view"
)

func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		name          string
		lost          []uint64
		positions     map[uint64]uint64 // each replica's own report (heartbeating replicas only)
		primariesOnly bool
		want          *pcspb.CmdChangePrimary // nil: no change
	}{
		{name: "nothing lost", positions: map[uint64]uint64{2: 5, 3: 5}},
		{name: "lost primary: the replica furthest ahead", lost: []uint64{1}, positions: map[uint64]uint64{2: 5, 3: 6},
			want: &pcspb.CmdChangePrimary{ShardId: 1, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary: a tie goes to the lower id", lost: []uint64{1}, positions: map[uint64]uint64{2: 6, 3: 6},
			want: &pcspb.CmdChangePrimary{ShardId: 1, Term: 4, ConfVer: 9, NewPrimary: 2, RemoveNode: 1}},
		{name: "lost primary: a replica that has not reported is not chosen", lost: []uint64{1}, positions: map[uint64]uint64{3: 1},
			want: &pcspb.CmdChangePrimary{ShardId: 1, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary: a lost replica is not chosen", lost: []uint64{1, 2}, positions: map[uint64]uint64{2: 9, 3: 1},
			want: &pcspb.CmdChangePrimary{ShardId: 1, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary and no replica reporting: left alone", lost: []uint64{1}},
		{name: "lost replica: removed, the primary stays", lost: []uint64{3},
			want: &pcspb.CmdChangePrimary{ShardId: 1, Term: 4, ConfVer: 9, NewPrimary: 1, RemoveNode: 3}},
		{name: "lost replica during the warm-up: left for later", lost: []uint64{3}, primariesOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := schedtest.Cluster(4, 0, 3, "")
			sh := schedtest.Shard(v, 0, 1, 2, 3)
			sh.Term, sh.ConfVer, sh.Positions = 4, 9, tc.positions
			for _, n := range tc.lost {
				v.Node(n).State = view.Down
			}
			got := Failover(v, tc.primariesOnly)
			switch {
			case tc.want == nil && len(got) != 0:
				t.Fatalf("got %v, want no change", got)
			case tc.want != nil && (len(got) != 1 || !proto.Equal(got[0], tc.want)):
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
