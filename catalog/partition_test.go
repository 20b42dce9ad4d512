package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

func cols(defs ...string) []*pcspb.ColumnDef {
	var out []*pcspb.ColumnDef
	for _, d := range defs {
		name, typ, _ := strings.Cut(d, ":")
		desc := strings.HasSuffix(typ, " desc")
		out = append(out, &pcspb.ColumnDef{Name: name, Type: strings.TrimSuffix(typ, " desc"), Descending: desc})
	}
	return out
}

func rng(columns []string, bounds ...[]string) *pcspb.PartitionSpec {
	s := &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: columns}
	for i, b := range bounds {
		s.Ranges = append(s.Ranges, &pcspb.RangePartition{Name: fmt.Sprintf("r%d", i), LessThan: b})
	}
	return s
}

func list(columns []string, deflt bool, parts ...[]string) *pcspb.PartitionSpec {
	s := &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST, Columns: columns}
	for i, vals := range parts {
		lp := &pcspb.ListPartition{Name: fmt.Sprintf("l%d", i)}
		for _, v := range vals {
			lp.Values = append(lp.Values, &pcspb.ValueTuple{Values: strings.Split(v, ",")})
		}
		s.Lists = append(s.Lists, lp)
	}
	if deflt {
		s.Lists = append(s.Lists, &pcspb.ListPartition{Name: "other", Default: true})
	}
	return s
}

func hash(columns []string, n uint32) *pcspb.PartitionSpec {
	return &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: columns, HashPartitions: n}
}

func sub(outer, inner *pcspb.PartitionSpec) *pcspb.PartitionSpec { outer.Sub = inner; return outer }

// checkCoverage asserts the invariant: the live leaves tile their key space in order, with no
// overlap and a gap only where a dropped partition's leaves are.
func checkCoverage(t *testing.T, s *Spec) {
	t.Helper()
	leaves := s.Leaves()
	next := 0 // the leaf index the next live leaf may have
	for i, l := range leaves {
		if bytes.Compare(l.Start, l.End) >= 0 {
			t.Fatalf("leaf %d is empty: [%x, %x)", i, l.Start, l.End)
		}
		if i > 0 && bytes.Compare(leaves[i-1].End, l.Start) > 0 {
			t.Fatalf("overlap between leaf %d and %d", i-1, i)
		}
		for ; next < l.Index; next++ {
			if !s.leafDropped(next) {
				t.Fatalf("leaf %d is neither live nor dropped", next)
			}
		}
		if s.leafDropped(l.Index) {
			t.Fatalf("leaf %d is listed but dropped", l.Index)
		}
		next = l.Index + 1
	}
	for ; next < s.LeafCount(); next++ {
		if !s.leafDropped(next) {
			t.Fatalf("leaf %d is neither live nor dropped", next)
		}
	}
}

func TestValidSpecs(t *testing.T) {
	schema := cols("region:string", "id:int64", "ts:timestamp desc", "k:bytes")
	for name, tc := range map[string]struct {
		spec   *pcspb.PartitionSpec
		leaves int
	}{
		"none":            {nil, 1},
		"range one col":   {rng([]string{"id"}, []string{"100"}, []string{"200"}, []string{"MAXVALUE"}), 3},
		"range two cols":  {rng([]string{"region", "id"}, []string{"eu", "100"}, []string{"eu", "MAXVALUE"}, []string{"us", "0"}, []string{"MAXVALUE", "MAXVALUE"}), 4},
		"range open end":  {rng([]string{"id"}, []string{"10"}), 1},
		"range desc":      {rng([]string{"ts"}, []string{"2026-01-01T00:00:00Z"}, []string{"2025-01-01T00:00:00Z"}), 2},
		"list":            {list([]string{"region"}, false, []string{"eu", "uk"}, []string{"us"}), 2},
		"list default":    {list([]string{"region"}, true, []string{"eu"}, []string{"NULL"}), 3},
		"list two cols":   {list([]string{"region", "id"}, true, []string{"eu,1", "eu,2"}), 2},
		"hash":            {hash([]string{"id"}, 16), 16},
		"range then hash": {sub(rng([]string{"id"}, []string{"0"}, []string{"MAXVALUE"}), hash([]string{"k"}, 8)), 16},
		"list then range": {sub(list([]string{"region"}, true, []string{"eu"}), rng([]string{"id"}, []string{"5"}, []string{"MAXVALUE"})), 4},
		"1000 partitions": {hash([]string{"id"}, 1000), 1000},
		"bytes bound":     {rng([]string{"k"}, []string{"0x00ff"}, []string{"MAXVALUE"}), 2},
	} {
		t.Run(name, func(t *testing.T) {
			sc, err := CompileSchema(schema)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Compile(sc, tc.spec)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if s.LeafCount() != tc.leaves {
				t.Fatalf("%d leaves, want %d", s.LeafCount(), tc.leaves)
			}
			checkCoverage(t, s)
			checkRouting(t, sc, s, tc.spec)
		})
	}
}

// checkRouting routes random keys and checks each lands in its leaf's range and that the leaf
// is the right one for its partition level(s).
func checkRouting(t *testing.T, sc *Schema, s *Spec, spec *pcspb.PartitionSpec) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	leaves := s.Leaves()
	regions := []string{"eu", "uk", "us", "jp"}
	for i := 0; i < 2000; i++ {
		vals := []keyenc.Value{keyenc.Str(regions[r.IntN(4)]), keyenc.I64(r.Int64N(600) - 300),
			keyenc.Value{Kind: keyenc.KindValue, I: r.Int64N(4e15)}, keyenc.BytesV([]byte{byte(r.IntN(3))})}
		if r.IntN(20) == 0 {
			vals[0] = keyenc.Null()
		}
		key, _ := keyenc.Encode(nil, sc.Cols, vals)
		rk, err := s.RoutingKey(key)
		if errors.Is(err, ErrNoPartition) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := s.LeafOf(vals)
		l := leaves[leaf]
		if bytes.Compare(rk, l.Start) < 0 || bytes.Compare(rk, l.End) >= 0 {
			t.Fatalf("routing key %x outside leaf %s [%x, %x)", rk, l.Name, l.Start, l.End)
		}
		// RANGE: the row is below its partition's bound and not below the previous one.
		if spec != nil && spec.Strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE && spec.Sub == nil {
			lv := s.levels[0]
			tuple := make([]keyenc.Value, len(lv.colIdx))
			for j, ci := range lv.colIdx {
				tuple[j] = vals[ci]
			}
			if keyenc.CompareTuples(lv.cols, tuple, lv.bounds[leaf]) >= 0 ||
				leaf > 0 && keyenc.CompareTuples(lv.cols, tuple, lv.bounds[leaf-1]) < 0 {
				t.Fatalf("row %v placed in range partition %d", tuple, leaf)
			}
		}
	}
}

func TestInvalidSpecs(t *testing.T) {
	schema := cols("region:string", "id:int64", "k:bytes")
	big := make([][]string, 0)
	for i := 0; i < 400; i++ {
		big = append(big, []string{fmt.Sprint(i)})
	}
	for name, tc := range map[string]struct {
		spec *pcspb.PartitionSpec
		want string
	}{
		"unsorted bounds": {rng([]string{"id"}, []string{"200"}, []string{"100"}), `partition "r1" bound (100) is not above`},
		"equal bounds":    {rng([]string{"id"}, []string{"100"}, []string{"100"}), `partition "r1" bound (100)`},
		"type mismatch":   {rng([]string{"id"}, []string{"abc"}), `bound "abc" for int64 column "id"`},
		"bound arity":     {rng([]string{"id"}, []string{"1", "2"}), `has 2 bound values for 1 columns`},
		"unknown column":  {rng([]string{"nope"}, []string{"1"}), `partition column "nope" is not a key column`},
		"no columns":      {rng(nil, []string{"1"}), "no partition columns"},
		"list overlap":    {list([]string{"region"}, false, []string{"eu", "us"}, []string{"us"}), `value (us) is listed by both "l0" and "l1"`},
		"list empty":      {list([]string{"region"}, false, []string{"eu"}, nil), `partition "l1" lists no values`},
		"list max":        {list([]string{"id"}, false, []string{"MAXVALUE"}), "MAXVALUE is only allowed in range bounds"},
		"two defaults": {func() *pcspb.PartitionSpec {
			s := list([]string{"region"}, true, []string{"eu"})
			s.Lists[0].Default = true
			return s
		}(), "both DEFAULT"},
		"hash zero":       {hash([]string{"id"}, 0), "HASH(0)"},
		"hash too many":   {hash([]string{"id"}, 5000), "HASH(5000)"},
		"bad bytes":       {rng([]string{"k"}, []string{"ff"}), "0x followed by hex"},
		"two sub levels":  {sub(hash([]string{"id"}, 2), sub(hash([]string{"k"}, 2), hash([]string{"region"}, 2))), "at most one level"},
		"too many leaves": {sub(rng([]string{"id"}, big...), hash([]string{"k"}, 400)), "leaf partitions exceed"},
		"duplicate name": {func() *pcspb.PartitionSpec {
			s := hash(nil, 1)
			s = rng([]string{"id"}, []string{"1"}, []string{"2"})
			s.Ranges[1].Name = "r0"
			return s
		}(), `name "r0" is used twice`},
		"range with hash cnt": {func() *pcspb.PartitionSpec { s := rng([]string{"id"}, []string{"1"}); s.HashPartitions = 3; return s }(), "RANGE needs range partitions and nothing else"},
	} {
		t.Run(name, func(t *testing.T) {
			sc, err := CompileSchema(schema)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Compile(sc, tc.spec)
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrInvalidSpec naming %q", err, tc.want)
			}
		})
	}
	for name, defs := range map[string][]*pcspb.ColumnDef{
		"no columns": nil,
		"dup column": cols("a:int64", "a:string"),
		"bad type":   cols("a:varchar"),
		"empty name": cols(":int64"),
	} {
		if _, err := CompileSchema(defs); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("schema %s: %v", name, err)
		}
	}
}

func TestRoutingErrors(t *testing.T) {
	sc, _ := CompileSchema(cols("id:int64"))
	s, _ := Compile(sc, rng([]string{"id"}, []string{"10"}))
	key, _ := keyenc.Encode(nil, sc.Cols, []keyenc.Value{keyenc.I64(50)})
	if _, err := s.RoutingKey(key); !errors.Is(err, ErrNoPartition) {
		t.Fatalf("key beyond the last bound: %v", err)
	}
	if _, err := s.RoutingKey([]byte{0x42}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("garbage key: %v", err)
	}
	if _, err := s.RoutingKey(nil); !errors.Is(err, ErrBadKey) {
		t.Fatalf("key without the partition column: %v", err)
	}
}

// FuzzCompileSpec: any protobuf bytes as a spec either compile to a spec whose leaves tile the
// key space, or fail with ErrInvalidSpec; nothing panics.
func FuzzCompileSpec(f *testing.F) {
	for _, s := range []*pcspb.PartitionSpec{rng([]string{"id"}, []string{"1"}, []string{"MAXVALUE"}),
		list([]string{"region"}, true, []string{"eu"}), hash([]string{"id"}, 4),
		sub(rng([]string{"id"}, []string{"0"}), hash([]string{"region"}, 2))} {
		b, _ := protoMarshal(s)
		f.Add(b)
	}
	sc, _ := CompileSchema(cols("region:string", "id:int64"))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec := &pcspb.PartitionSpec{}
		if err := protoUnmarshal(data, spec); err != nil {
			return
		}
		s, err := Compile(sc, spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %v is not ErrInvalidSpec", err)
			}
			return
		}
		if s.LeafCount() <= 1000 {
			checkCoverage(t, s)
		}
	})
}
