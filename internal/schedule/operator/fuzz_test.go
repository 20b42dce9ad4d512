package operator

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/view"
)

// FuzzFromProto: a persisted operator, however corrupt, is refused with an error or read into
// an operator that writes back to what it read.
func FuzzFromProto(f *testing.F) {
	sh := &view.Shard{ID: 7, Version: 2, ConfVer: 3, Term: 4, Primary: 1, Replicas: []uint64{1, 2, 3}, Size: 1 << 20}
	for _, op := range []*Operator{
		New(Balance, sh, "seed", Move(sh, 1, 4)...),
		New(Admin, sh, "split", Step{Kind: Split, Node: 1, Key: "k", NewShard: 9, Version: 2}),
		New(Merge, sh, "merge", Step{Kind: Absorb, Node: 1, Source: 8, Version: 2, SourceVersion: 5}),
	} {
		op.ID = 5
		b, _ := proto.Marshal(op.ToProto())
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := &pcspb.Operator{}
		if proto.Unmarshal(b, p) != nil {
			return
		}
		op, err := FromProto(p)
		if err != nil {
			return
		}
		again, err := FromProto(op.ToProto())
		if err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
		if again.String() != op.String() || len(again.Steps) != len(op.Steps) {
			t.Fatalf("round trip changed it: %s vs %s", again, op)
		}
		for i := range op.Steps {
			if again.Steps[i] != op.Steps[i] {
				t.Fatalf("step %d: %v vs %v", i, again.Steps[i], op.Steps[i])
			}
		}
	})
}
