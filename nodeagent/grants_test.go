package nodeagent

import (
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

func newTestAgent() *Agent { return &Agent{origin: time.Now()} }

// TestDemotionBeforeLease: an answer that renews the node's lease and carries its demotion
// from a shard (PCS denies the shard: its catalog has another primary at a newer term) leaves
// the node without a grant of the shard, whatever order the node applies the answer's parts
// in; the other shards it reported leading are granted at the term it reported.
func TestDemotionBeforeLease(t *testing.T) {
	a := newTestAgent()
	until := int64(time.Since(a.origin) + time.Second)
	a.renew(map[uint64]uint64{1: 5, 2: 3}, &pcspb.HeartbeatResponse{Denied: []uint64{1}}, until)
	if a.Granted(1, 5) {
		t.Fatal("shard 1 granted although the answer denied it")
	}
	if !a.Granted(2, 3) || a.Granted(2, 4) {
		t.Fatal("shard 2 must be granted at term 3 only")
	}
	// The demotion's record (term 6, another primary) would be checked against term 6: no
	// grant of term 6 either.
	if a.Granted(1, 6) {
		t.Fatal("a grant of a term PCS never granted")
	}
}

// TestGrantOfEarlierHeld: a live grant of shard 1 at term 4 from an earlier answer is not
// extended by an answer that denies the shard, and runs out at its own time.
func TestGrantOfEarlierHeld(t *testing.T) {
	a := newTestAgent()
	now := int64(time.Since(a.origin))
	a.renew(map[uint64]uint64{1: 4}, &pcspb.HeartbeatResponse{}, now+int64(50*time.Millisecond))
	a.renew(map[uint64]uint64{1: 4}, &pcspb.HeartbeatResponse{Denied: []uint64{1}}, now+int64(time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for a.Granted(1, 4) {
		if time.Now().After(deadline) {
			t.Fatal("the denied shard's grant was extended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExplicitGrant: a shard PCS made the node primary of at a term its heartbeat did not
// report yet is granted at that term, and a grant never goes back to an earlier term.
func TestExplicitGrant(t *testing.T) {
	a := newTestAgent()
	until := int64(time.Since(a.origin) + time.Hour)
	a.renew(nil, &pcspb.HeartbeatResponse{Grants: []*pcspb.ShardGrant{{ShardId: 7, Term: 9}}}, until)
	if !a.Granted(7, 9) {
		t.Fatal("explicit grant not held")
	}
	a.renew(map[uint64]uint64{7: 8}, &pcspb.HeartbeatResponse{}, until+1)
	if a.Granted(7, 8) || !a.Granted(7, 9) {
		t.Fatal("a renewal of an earlier term replaced a newer grant")
	}
}
