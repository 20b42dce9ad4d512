package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

// alterKeys are row keys over the fuzzed specs' columns (ts int64, id int64).
func alterKeys() [][]byte {
	var out [][]byte
	for ts := int64(-3); ts < 300; ts += 7 {
		for id := int64(0); id < 3; id++ {
			k, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}, {Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(ts), keyenc.I64(id)})
			out = append(out, k)
		}
	}
	return out
}

// partitionOfLeaf is the top-level partition name of a leaf name ("p1/h0" → "p1").
func partitionOfLeaf(s *Spec, rk []byte) string {
	for _, l := range s.Leaves() {
		if bytes.Compare(rk, l.Start) >= 0 && bytes.Compare(rk, l.End) < 0 {
			name, _, _ := bytes.Cut([]byte(l.Name), []byte("/"))
			return string(name)
		}
	}
	return ""
}

// FuzzAlter: any sequence of ADD, DROP and TRUNCATE PARTITION leaves a spec whose live leaves
// tile the key space (gaps only for dropped partitions), and moves no row: a row routed before
// routes to the same routing key after, unless its partition was dropped (then it has none); a
// row with no partition before has none after or falls in the partition just added.
func FuzzAlter(f *testing.F) {
	f.Add([]byte{0, 0, 5, 1, 0, 2, 1, 0, 9})
	f.Add([]byte{1, 0, 3, 0, 7, 1, 1, 3, 0})
	f.Add([]byte{2, 1, 0, 0, 4, 1, 2, 0, 2})
	f.Add([]byte{3, 0, 50, 0, 60, 1, 0, 1, 1, 0, 70})
	schema, _ := CompileSchema(cols("ts:int64", "id:int64"))
	keys := alterKeys()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 64 {
			return
		}
		var spec *pcspb.PartitionSpec
		switch data[0] % 4 {
		case 0:
			spec = rng([]string{"ts"}, []string{"10"}, []string{"20"})
		case 1:
			spec = sub(rng([]string{"ts"}, []string{"10"}), hash([]string{"id"}, 2))
		case 2:
			spec = list([]string{"ts"}, false, []string{"-3", "4"}, []string{"11"})
		case 3:
			spec = list([]string{"ts"}, true, []string{"4"})
		}
		cur, err := Compile(schema, spec)
		if err != nil {
			t.Fatal(err)
		}
		last := int64(20)
		for i := 1; i+1 < len(data); i += 2 {
			op, arg := data[i]%3, int64(data[i+1])
			var alter *pcspb.PartitionAlter
			name := fmt.Sprintf("x%d", i)
			switch op {
			case 0:
				if spec.Strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE {
					last += arg % 40
					alter = &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: name, LessThan: []string{fmt.Sprint(last)}}}}
				} else {
					alter = &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddList{AddList: &pcspb.ListPartition{Name: name,
						Values: []*pcspb.ValueTuple{{Values: []string{fmt.Sprint(arg - 3)}}}}}}
				}
			case 1, 2:
				var names []string
				for _, l := range cur.Leaves() {
					n, _, _ := bytes.Cut([]byte(l.Name), []byte("/"))
					names = append(names, string(n))
				}
				pick := "none"
				if len(names) > 0 {
					pick = names[int(arg)%len(names)]
				}
				if op == 1 {
					alter = &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: pick}}
				} else {
					alter = &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Truncate{Truncate: pick}}
				}
			}
			next, touchedNames, err := Alter(schema, spec, alter, time.Unix(0, 0))
			if err != nil {
				if !errors.Is(err, ErrInvalidSpec) {
					t.Fatalf("error %v is not ErrInvalidSpec", err)
				}
				continue
			}
			touched := ""
			if len(touchedNames) > 0 {
				touched = touchedNames[0]
			}
			after, err := Compile(schema, next)
			if err != nil {
				t.Fatalf("Alter returned a spec that does not compile: %v", err)
			}
			checkCoverage(t, after)
			for _, k := range keys {
				rb, errB := cur.RoutingKey(k)
				ra, errA := after.RoutingKey(k)
				switch {
				case errB == nil && alter.GetDrop() != "" && partitionOfLeaf(cur, rb) == touched:
					if !errors.Is(errA, ErrNoPartition) && partitionOfLeaf(after, ra) == touched {
						t.Fatalf("%x: a row of dropped partition %q still routes to it", k, touched)
					}
				case errB == nil:
					if errA != nil || !bytes.Equal(ra, rb) {
						t.Fatalf("%v moved a row: %x → %x (%v)", alter, rb, ra, errA)
					}
				case errA == nil && partitionOfLeaf(after, ra) != touched:
					t.Fatalf("%v: a row of no partition now routes to %q, not the added %q", alter, partitionOfLeaf(after, ra), touched)
				}
			}
			spec, cur = next, after
		}
	})
}
