package checker

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

type fakeCat struct {
	shards []*pcspb.Shard
}

func (f fakeCat) Tables() []*pcspb.Table                   { return []*pcspb.Table{{Id: 1}} }
func (f fakeCat) TableShards(uint64) []*pcspb.Shard        { return f.shards }
func (f fakePos) State(n uint64) cluster.State             { return f.state[n] }
func (f fakePos) ShardStats(n, s uint64) *pcspb.ShardStats { return f.stats[n] }

type fakePos struct {
	state map[uint64]cluster.State
	stats map[uint64]*pcspb.ShardStats // by node (one shard)
}

func TestFailover(t *testing.T) {
	pos := func(n, p uint64) *pcspb.ShardStats {
		return &pcspb.ShardStats{ShardId: 7, ReplicaPositions: map[uint64]uint64{n: p}}
	}
	up := map[uint64]cluster.State{1: cluster.Up, 2: cluster.Up, 3: cluster.Up, 4: cluster.Up}
	for _, tc := range []struct {
		name          string
		lost          []uint64
		state         map[uint64]cluster.State
		stats         map[uint64]*pcspb.ShardStats
		primariesOnly bool
		want          *pcspb.CmdChangePrimary // nil: no change
	}{
		{name: "nothing lost", stats: map[uint64]*pcspb.ShardStats{2: pos(2, 5), 3: pos(3, 5)}},
		{name: "lost primary: the replica furthest ahead", lost: []uint64{1},
			stats: map[uint64]*pcspb.ShardStats{2: pos(2, 5), 3: pos(3, 6)},
			want:  &pcspb.CmdChangePrimary{ShardId: 7, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary: a tie goes to the lower id", lost: []uint64{1},
			stats: map[uint64]*pcspb.ShardStats{2: pos(2, 6), 3: pos(3, 6)},
			want:  &pcspb.CmdChangePrimary{ShardId: 7, Term: 4, ConfVer: 9, NewPrimary: 2, RemoveNode: 1}},
		{name: "lost primary: a replica that has not reported is not chosen", lost: []uint64{1},
			stats: map[uint64]*pcspb.ShardStats{3: pos(3, 1)},
			want:  &pcspb.CmdChangePrimary{ShardId: 7, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary: a replica that is not up is not chosen", lost: []uint64{1},
			state: map[uint64]cluster.State{2: cluster.Disconnected, 3: cluster.Up},
			stats: map[uint64]*pcspb.ShardStats{2: pos(2, 9), 3: pos(3, 1)},
			want:  &pcspb.CmdChangePrimary{ShardId: 7, Term: 4, ConfVer: 9, NewPrimary: 3, RemoveNode: 1}},
		{name: "lost primary and no replica reporting: left alone", lost: []uint64{1}},
		{name: "lost replica: removed, the primary stays", lost: []uint64{3},
			want: &pcspb.CmdChangePrimary{ShardId: 7, Term: 4, ConfVer: 9, NewPrimary: 1, RemoveNode: 3}},
		{name: "lost replica during the warm-up: left for later", lost: []uint64{3}, primariesOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := &pcspb.Shard{Id: 7, TableId: 1, Term: 4, Primary: 1, Replicas: []uint64{1, 2, 3}, Epoch: &pcspb.ShardEpoch{ConfVer: 9}}
			state := tc.state
			if state == nil {
				state = up
			}
			lost := map[uint64]bool{}
			for _, n := range tc.lost {
				lost[n] = true
			}
			got := Failover(fakeCat{[]*pcspb.Shard{sh}}, fakePos{state, tc.stats}, lost, tc.primariesOnly)
			switch {
			case tc.want == nil && len(got) != 0:
				t.Fatalf("got %v, want no change", got)
			case tc.want != nil && (len(got) != 1 || !proto.Equal(got[0], tc.want)):
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
