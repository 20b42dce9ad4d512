package meta

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/postdb/pcs/api/pcspb"
)

// shardDecoder decodes a snapshot's shard records without reflection: nearly all of a large
// snapshot is shard records, and decoding them was most of a restart. It allocates a batch's
// shards, records and keys in a few slabs and shares the epochs, replica lists and partition
// names the batch repeats. It takes only records in the exact form PCS writes (each field
// once, known fields, the usual wire types); any other record it declines, and proto.Unmarshal
// decodes it (or reports its error) as before, so the result never differs.
type shardDecoder struct {
	shards   []pcspb.Shard
	epochs   map[[2]uint64]*pcspb.ShardEpoch
	replicas map[string][]uint64 // by the packed field's bytes
	names    map[string]string
}

// internLimit bounds each of a decoder's maps of shared values. They live across batches, so
// that the partition names every table repeats ("p0", "p1", ...) are one string each, not one
// a shard; past the limit a map starts over rather than grow with a snapshot of unique values.
const internLimit = 1 << 16

func newShardDecoder() *shardDecoder {
	return &shardDecoder{epochs: map[[2]uint64]*pcspb.ShardEpoch{}, replicas: map[string][]uint64{}, names: map[string]string{}}
}

// start makes room for a batch of n records in new slabs: the previous batch's records are
// its own, the decoder keeps nothing of them but the shared values.
func (d *shardDecoder) start(n int) {
	d.shards = make([]pcspb.Shard, 0, n)
	if len(d.epochs) > internLimit {
		clear(d.epochs)
	}
	if len(d.replicas) > internLimit {
		clear(d.replicas)
	}
	if len(d.names) > internLimit {
		clear(d.names)
	}
}

// finish copies the decoded shards' keys out of the records, into one slab of their size: the
// records' memory is not kept.
func (d *shardDecoder) finish() {
	size := 0
	for i := range d.shards {
		size += len(d.shards[i].Start) + len(d.shards[i].End)
	}
	if size == 0 {
		return
	}
	slab := make([]byte, 0, size)
	own := func(k []byte) []byte {
		if len(k) == 0 {
			return k
		}
		at := len(slab)
		slab = append(slab, k...)
		return slab[at:len(slab):len(slab)]
	}
	for i := range d.shards {
		s := &d.shards[i]
		s.Start, s.End = own(s.Start), own(s.End)
	}
}

// decode returns raw's shard if raw is a shard record it takes, else nil.
func (d *shardDecoder) decode(raw []byte) *pcspb.Shard {
	num, typ, n := protowire.ConsumeTag(raw)
	if n < 0 || num != 9 || typ != protowire.BytesType {
		return nil
	}
	body, m := protowire.ConsumeBytes(raw[n:])
	if m < 0 || n+m != len(raw) {
		return nil
	}
	if len(d.shards) == cap(d.shards) { // (the slabs are sized for the batch; never reallocate one a pointer is into)
		return nil
	}
	d.shards = d.shards[:len(d.shards)+1] // (a new slab is zero, and a declined record is cleared: no need to write a zero shard)
	s := &d.shards[len(d.shards)-1]
	if !d.shard(body, s) {
		*s = pcspb.Shard{} // (the slab is kept whole: no part of a declined record may stay in it)
		d.shards = d.shards[:len(d.shards)-1]
		return nil
	}
	return s
}

func (d *shardDecoder) shard(b []byte, s *pcspb.Shard) bool {
	var seen uint16
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 1 || num > 11 || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		b = b[n:]
		switch num {
		case 1, 2, 6, 7, 11: // varints
			if typ != protowire.VarintType {
				return false
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case 1:
				s.Id = v
			case 2:
				s.TableId = v
			case 6:
				s.Term = v
			case 7:
				s.Primary = v
			case 11:
				s.MinInSync = uint32(v)
			}
			continue
		}
		if typ != protowire.BytesType {
			return false
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 3:
			s.Start = alias(v)
		case 4:
			s.End = alias(v)
		case 5:
			if s.Epoch = d.epoch(v); s.Epoch == nil {
				return false
			}
		case 8:
			if s.Replicas = d.ids(v); s.Replicas == nil && len(v) > 0 {
				return false
			}
		case 10:
			if s.Learners = d.ids(v); s.Learners == nil && len(v) > 0 {
				return false
			}
		case 9:
			if !utf8.Valid(v) {
				return false // proto.Unmarshal reports it
			}
			name, ok := d.names[string(v)]
			if !ok {
				name = string(v)
				d.names[name] = name
			}
			s.Partition = name
		}
	}
	return true
}

// alias returns a key as a slice of the record until finish copies it; an empty key is empty,
// not nil (as proto.Unmarshal leaves it), and keeps nothing of the record.
func alias(v []byte) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	return v[:len(v):len(v)]
}

func (d *shardDecoder) epoch(b []byte) *pcspb.ShardEpoch {
	var k [2]uint64 // conf_ver, version
	var seen [2]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || (num != 1 && num != 2) || typ != protowire.VarintType || seen[num-1] {
			return nil
		}
		v, m := protowire.ConsumeVarint(b[n:])
		if m < 0 {
			return nil
		}
		k[num-1], seen[num-1] = v, true
		b = b[n+m:]
	}
	if e, ok := d.epochs[k]; ok {
		return e
	}
	e := &pcspb.ShardEpoch{ConfVer: k[0], Version: k[1]}
	d.epochs[k] = e
	return e
}

// ids decodes a packed list of ids (nil if it is not one); equal lists share one slice.
func (d *shardDecoder) ids(b []byte) []uint64 {
	if l, ok := d.replicas[string(b)]; ok {
		return l
	}
	var out []uint64
	for rest := b; len(rest) > 0; {
		v, n := protowire.ConsumeVarint(rest)
		if n < 0 {
			return nil
		}
		out = append(out, v)
		rest = rest[n:]
	}
	out = out[:len(out):len(out)] // (shared: an append must not write into another's list)
	d.replicas[string(b)] = out
	return out
}
