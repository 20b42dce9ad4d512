package kvnode

import (
	"sync/atomic"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

// TestSyncStallHook: with a stall hook, every durable write of the store goes through it (the
// chaos suite stalls a data node's disk there), and the data is still written.
func TestSyncStallHook(t *testing.T) {
	var syncs atomic.Int64
	s, err := open(t.TempDir(), nil, func() { syncs.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutReplica(&pcspb.Shard{Id: 7}); err != nil {
		t.Fatal(err)
	}
	before := syncs.Load()
	if err := s.Write(7, Position{LSN: 1, Term: 1}, []*pcspb.KVPair{{Key: []byte("k"), Value: []byte("v")}}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() <= before {
		t.Fatalf("a durable write did not pass the stall hook (%d syncs before, %d after)", before, syncs.Load())
	}
	if v, ok, err := s.Get(7, []byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get: %q %v %v", v, ok, err)
	}
}
