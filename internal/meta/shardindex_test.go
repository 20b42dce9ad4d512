package meta

import (
	"math/rand/v2"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

// TestShardIndex: the index answers like a map, in id order, across chunks and sparse ids; a
// clone and its source never see each other's writes (copy on write), whichever writes first.
func TestShardIndex(t *testing.T) {
	x := newShardIndex()
	ref := map[uint64]*pcspb.Shard{}
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(x *shardIndex, ref map[uint64]*pcspb.Shard) {
		t.Helper()
		if x.len() != len(ref) {
			t.Fatalf("len %d, want %d", x.len(), len(ref))
		}
		var last uint64
		n := 0
		x.each(func(s *pcspb.Shard) bool {
			if ref[s.Id] != s || (n > 0 && s.Id <= last) {
				t.Fatalf("each gave shard %d out of order or not held", s.Id)
			}
			last = s.Id
			n++
			return true
		})
		if n != len(ref) {
			t.Fatalf("each gave %d shards, want %d", n, len(ref))
		}
		for id, s := range ref {
			if got, ok := x.get(id); !ok || got != s {
				t.Fatalf("get(%d) = %v, %v", id, got, ok)
			}
		}
	}
	ids := func() uint64 {
		if rng.IntN(10) == 0 {
			return rng.Uint64() // sparse: a chunk of its own
		}
		return 1 + rng.Uint64N(20_000)
	}
	for range 20_000 {
		id := ids()
		if rng.IntN(3) == 0 {
			x.del(id)
			delete(ref, id)
		} else {
			s := &pcspb.Shard{Id: id}
			x.set(id, s)
			ref[id] = s
		}
	}
	check(x, ref)
	if _, ok := x.get(0); ok {
		t.Fatal("id 0 is held")
	}
	// Clone, then write both sides.
	y := x.clone()
	refY := map[uint64]*pcspb.Shard{}
	for k, v := range ref {
		refY[k] = v
	}
	for range 5_000 {
		id, s := ids(), &pcspb.Shard{}
		s.Id = id
		if rng.IntN(2) == 0 {
			x.set(id, s)
			ref[id] = s
			x.del(id + 1)
			delete(ref, id+1)
		} else {
			y.set(id, s)
			refY[id] = s
			y.del(id + 1)
			delete(refY, id+1)
		}
	}
	check(x, ref)
	check(y, refY)
	// Emptied chunks go.
	z := newShardIndex()
	for id := uint64(1); id <= 10_000; id++ {
		z.set(id, &pcspb.Shard{Id: id})
	}
	for id := uint64(1); id <= 10_000; id++ {
		z.del(id)
	}
	if z.len() != 0 || len(z.chunks) != 0 {
		t.Fatalf("%d shards, %d chunks left after deleting all", z.len(), len(z.chunks))
	}
}
