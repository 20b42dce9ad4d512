package meta

import (
	"maps"
	"slices"

	"github.com/postdb/pcs/api/pcspb"
)

// shardChunkBits sets the ids a chunk of the shard index holds: 4096.
const shardChunkBits = 12

// shardIndex maps shard ids to shards. Ids are handed out in order, so the index is a set of
// chunks of 4096 consecutive ids: 8 bytes a shard (a map costs about 23). Chunks are copied on
// write: a clone (a snapshot) shares them and copies only the map of chunks, one entry per 4096
// ids, so taking a snapshot under the state machine's lock does not copy every shard's entry.
type shardIndex struct {
	chunks map[uint64]*shardChunk // id >> shardChunkBits -> chunk
	n      int                    // shards held
	cow    *byte                  // this index's token; a chunk with another owner is shared
}

type shardChunk struct {
	owner *byte
	n     int // shards held
	s     [1 << shardChunkBits]*pcspb.Shard
}

func newShardIndex() *shardIndex {
	return &shardIndex{chunks: map[uint64]*shardChunk{}, cow: new(byte)}
}

func (x *shardIndex) get(id uint64) (*pcspb.Shard, bool) {
	c := x.chunks[id>>shardChunkBits]
	if c == nil {
		return nil, false
	}
	s := c.s[id&(1<<shardChunkBits-1)]
	return s, s != nil
}

// writable returns the chunk of id, owned by x (copied if shared), making it if create.
func (x *shardIndex) writable(id uint64, create bool) *shardChunk {
	k := id >> shardChunkBits
	c := x.chunks[k]
	switch {
	case c == nil && !create:
		return nil
	case c == nil:
		c = &shardChunk{owner: x.cow}
		x.chunks[k] = c
	case c.owner != x.cow:
		cp := *c
		cp.owner = x.cow
		c = &cp
		x.chunks[k] = c
	}
	return c
}

func (x *shardIndex) set(id uint64, s *pcspb.Shard) {
	c := x.writable(id, true)
	slot := &c.s[id&(1<<shardChunkBits-1)]
	if *slot == nil {
		c.n++
		x.n++
	}
	*slot = s
}

func (x *shardIndex) del(id uint64) {
	if _, ok := x.get(id); !ok {
		return
	}
	c := x.writable(id, false)
	c.s[id&(1<<shardChunkBits-1)] = nil
	c.n--
	x.n--
	if c.n == 0 {
		delete(x.chunks, id>>shardChunkBits)
	}
}

func (x *shardIndex) len() int { return x.n }

// each calls f with every shard in id order until f returns false.
func (x *shardIndex) each(f func(*pcspb.Shard) bool) {
	for _, k := range slices.Sorted(maps.Keys(x.chunks)) {
		for _, s := range x.chunks[k].s {
			if s != nil && !f(s) {
				return
			}
		}
	}
}

// clone returns an index with the same shards; both then copy a chunk before writing it.
func (x *shardIndex) clone() *shardIndex {
	x.cow = new(byte)
	return &shardIndex{chunks: maps.Clone(x.chunks), n: x.n, cow: new(byte)}
}

// at is get without the flag: nil if id is not held.
func (x *shardIndex) at(id uint64) *pcspb.Shard {
	s, _ := x.get(id)
	return s
}
