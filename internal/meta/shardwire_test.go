package meta

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

func shardRecord(t testing.TB, s *pcspb.Shard) []byte {
	b, err := proto.Marshal(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Shard{Shard: s}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameAsProto checks the fast decoder against proto.Unmarshal on raw: whatever it takes it
// decodes exactly as proto.Unmarshal does, and it reports whether it took raw.
func sameAsProto(t *testing.T, raw []byte) bool {
	t.Helper()
	d := newShardDecoder()
	d.start(1)
	fast := d.decode(raw)
	d.finish()
	if fast == nil {
		full := d.shards[:cap(d.shards)]
		for i := len(d.shards); i < len(full); i++ {
			if !proto.Equal(&full[i], &pcspb.Shard{}) {
				t.Fatalf("a declined record stays in the slab: %v", &full[i])
			}
		}
		return false
	}
	slow := &pcspb.SnapshotRecord{}
	if err := proto.Unmarshal(raw, slow); err != nil {
		t.Fatalf("the fast decoder took a record proto.Unmarshal refuses (%v): %x", err, raw)
	}
	if !proto.Equal(fast, slow.GetShard()) {
		t.Fatalf("decoded differently:\nfast %v\nslow %v", fast, slow)
	}
	return true
}

// TestShardDecoder: the shard records PCS writes take the fast path and decode as
// proto.Unmarshal decodes them; records in any other form are left to proto.Unmarshal.
func TestShardDecoder(t *testing.T) {
	typical := []*pcspb.Shard{
		{Id: 7, TableId: 3, Start: []byte("a"), End: []byte("b"), Epoch: &pcspb.ShardEpoch{ConfVer: 2, Version: 1}, Term: 4, Primary: 9,
			Replicas: []uint64{9, 10, 1 << 40}, Partition: "p0", MinInSync: 2},
		{Id: 1 << 62, TableId: 1, Epoch: &pcspb.ShardEpoch{}, Replicas: []uint64{1}, Learners: []uint64{2, 3}, Partition: "日本"},
		{Id: 8, TableId: 3, Start: []byte{}, End: []byte{0, 0xff}, Epoch: &pcspb.ShardEpoch{Version: 5}},
	}
	for _, s := range typical {
		if !sameAsProto(t, shardRecord(t, s)) {
			t.Fatalf("a shard record as PCS writes it was left to proto.Unmarshal: %v", s)
		}
	}
	base := shardRecord(t, typical[0])
	body := base[2:] // (a short record: one tag byte and one length byte)
	wrap := func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 9, protowire.BytesType), b)
	}
	declined := map[string][]byte{
		"an unknown field":       wrap(protowire.AppendVarint(protowire.AppendTag(append([]byte{}, body...), 40, protowire.VarintType), 1)),
		"a field twice":          wrap(protowire.AppendVarint(protowire.AppendTag(append([]byte{}, body...), 1, protowire.VarintType), 8)),
		"replicas unpacked":      wrap(protowire.AppendVarint(protowire.AppendTag(nil, 8, protowire.VarintType), 3)),
		"a partition not UTF-8":  wrap(protowire.AppendBytes(protowire.AppendTag(nil, 9, protowire.BytesType), []byte{0xff})),
		"an epoch unknown field": wrap(protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1))),
		"another record":         shardRecordOf(t, &pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Table{Table: &pcspb.Table{Id: 1}}}),
		"a truncated record":     base[:len(base)-1],
	}
	for what, raw := range declined {
		if sameAsProto(t, raw) {
			t.Errorf("%s: taken by the fast decoder", what)
		}
	}
}

func shardRecordOf(t testing.TB, r *pcspb.SnapshotRecord) []byte {
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzShardDecoder: on any input, what the fast decoder takes decodes as proto.Unmarshal does.
func FuzzShardDecoder(f *testing.F) {
	f.Add(shardRecord(f, &pcspb.Shard{Id: 7, TableId: 3, Start: []byte("a"), End: []byte("b"), Epoch: &pcspb.ShardEpoch{ConfVer: 2, Version: 1},
		Term: 4, Primary: 9, Replicas: []uint64{9, 10}, Partition: "p0", Learners: []uint64{4}, MinInSync: 2}))
	f.Add(shardRecord(f, &pcspb.Shard{Id: 1, Epoch: &pcspb.ShardEpoch{}}))
	f.Add([]byte{0x4a, 0x00})
	f.Fuzz(func(t *testing.T, raw []byte) { sameAsProto(t, raw) })
}
