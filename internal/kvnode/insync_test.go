package kvnode

import (
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

// TestInLineDoesNotSurviveReconfiguration: a primary that knew node 2 in line must not report
// it so once node 2 has been out of the configuration (PCS removed it while it was down, writes
// went on without it) and is back as a learner holding what it had. Reported in line, PCS would
// promote it and could hand it the primary role without the writes it missed (found by the
// chaos soak: an acknowledged row read back empty).
func TestInLineDoesNotSurviveReconfiguration(t *testing.T) {
	store, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n := NewNode(store, func() uint64 { return 1 }, allGranted{}, nil, nil)
	shard := func(confVer uint64, replicas, learners []uint64) *pcspb.Shard {
		return &pcspb.Shard{Id: 7, TableId: 1, Term: 3, Primary: 1, Replicas: replicas, Learners: learners,
			Epoch: &pcspb.ShardEpoch{ConfVer: confVer, Version: 1}}
	}
	reported := func(sh *pcspb.Shard) (in2, in3 bool) {
		t.Helper()
		if err := store.PutReplica(sh); err != nil {
			t.Fatal(err)
		}
		_, stats := n.Stats()
		for _, st := range stats {
			if st.ShardId == 7 {
				_, in2 = st.ReplicaPositions[2]
				_, in3 = st.ReplicaPositions[3]
			}
		}
		return in2, in3
	}

	full := shard(1, []uint64{1, 2, 3}, nil)
	if err := store.PutReplica(full); err != nil {
		t.Fatal(err)
	}
	n.setInSync(full, 2, true)
	n.setInSync(full, 3, true)
	if in2, in3 := reported(full); !in2 || !in3 {
		t.Fatalf("at the first configuration nodes 2 and 3 are in line, reported %v %v", in2, in3)
	}
	// PCS removes node 2 (down); the configuration moves on without it.
	if in2, _ := reported(shard(2, []uint64{1, 3}, nil)); in2 {
		t.Fatal("node 2, out of the configuration, is reported in line")
	}
	// Node 2 is back as a learner with its old data: unknown until asked again.
	back := shard(3, []uint64{1, 3}, []uint64{2})
	if in2, _ := reported(back); in2 {
		t.Fatal("node 2, back as a learner, is reported in line from before it left")
	}
	n.mu.Lock()
	stale := n.state(back).inSync[2]
	n.mu.Unlock()
	if stale {
		t.Fatal("the primary would skip catching up node 2 and send it writes as if in line")
	}
	n.setInSync(back, 2, true) // caught up (Position asked, snapshot sent)
	if in2, _ := reported(back); !in2 {
		t.Fatal("node 2, caught up at this configuration, is not reported in line")
	}
}

// allGranted grants every shard (unit tests of one node without PCS).
type allGranted struct{}

func (allGranted) Granted(uint64, uint64) bool { return true }
func (allGranted) LeaseValid() bool            { return true }
func (allGranted) Kick()                       {}
