package keyenc

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

var allTypes = []Type{Int64, Uint64, Float64, Bool, String, Bytes, Timestamp}

func randCols(r *rand.Rand) []Column {
	cols := make([]Column, 1+r.IntN(4))
	for i := range cols {
		cols[i] = Column{Type: allTypes[r.IntN(len(allTypes))], Descending: r.IntN(2) == 0}
	}
	return cols
}

func randValue(r *rand.Rand, t Type) Value {
	if r.IntN(10) == 0 {
		return Null()
	}
	switch t {
	case Int64, Timestamp:
		return I64([]int64{math.MinInt64, -1, 0, 1, math.MaxInt64, r.Int64() - r.Int64(), int64(r.IntN(5)) - 2}[r.IntN(7)])
	case Uint64:
		return U64([]uint64{0, 1, math.MaxUint64, r.Uint64(), uint64(r.IntN(5))}[r.IntN(5)])
	case Float64:
		return F64([]float64{math.Inf(-1), math.Inf(1), math.NaN(), 0, math.Copysign(0, -1), -1.5, 1.5, r.NormFloat64() * 1e6, math.SmallestNonzeroFloat64, -math.MaxFloat64}[r.IntN(10)])
	case Bool:
		return BoolV(r.IntN(2) == 0)
	default:
		alphabet := []byte{0x00, 0x01, 0xff, 'a', 'b', 0xfe}
		b := make([]byte, r.IntN(5))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return Str(string(b))
	}
}

func randTuple(r *rand.Rand, cols []Column) []Value {
	n := len(cols)
	if r.IntN(4) == 0 {
		n = r.IntN(len(cols) + 1) // a prefix
	}
	vals := make([]Value, n)
	for i := range vals {
		vals[i] = randValue(r, cols[i].Type)
	}
	return vals
}

func sgn(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// TestByteOrderIsTupleOrder: the property the whole package exists for.
func TestByteOrderIsTupleOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200_000; i++ {
		cols := randCols(r)
		a, b := randTuple(r, cols), randTuple(r, cols)
		if r.IntN(5) == 0 {
			b = append([]Value(nil), a...) // equal tuples and near misses
			if len(b) > 0 && r.IntN(2) == 0 {
				b[len(b)-1] = randValue(r, cols[len(b)-1].Type)
			}
		}
		ea, err := Encode(nil, cols, a)
		if err != nil {
			t.Fatal(err)
		}
		eb, err := Encode(nil, cols, b)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sgn(bytes.Compare(ea, eb)), sgn(CompareTuples(cols, a, b)); got != want {
			t.Fatalf("cols %v: %v vs %v: bytes say %d, tuples say %d\n%x\n%x", cols, a, b, got, want, ea, eb)
		}
		dec, err := Decode(ea, cols)
		if err != nil {
			t.Fatalf("decode %x: %v", ea, err)
		}
		if CompareTuples(cols, dec, a) != 0 || len(dec) != len(a) {
			t.Fatalf("round trip %v → %v", a, dec)
		}
	}
}

func TestSpecialValues(t *testing.T) {
	col := Column{Type: Float64}
	enc := func(v Value) []byte { b, _ := Encode(nil, []Column{col}, []Value{v}); return b }
	if !bytes.Equal(enc(F64(0)), enc(F64(math.Copysign(0, -1)))) {
		t.Fatal("-0 and +0 encode differently")
	}
	if bytes.Compare(enc(F64(math.NaN())), enc(F64(math.Inf(1)))) <= 0 {
		t.Fatal("NaN does not sort above +Inf")
	}
	for _, c := range []Column{{Type: Int64}, {Type: String, Descending: true}} {
		n, _ := Encode(nil, []Column{c}, []Value{Null()})
		m, _ := Encode(nil, []Column{c}, []Value{Max()})
		v, _ := Encode(nil, []Column{c}, []Value{randValue(rand.New(rand.NewPCG(3, 4)), c.Type)})
		if !(bytes.Compare(n, v) < 0 && bytes.Compare(v, m) < 0) {
			t.Fatalf("%v: NULL < value < MAXVALUE does not hold", c)
		}
	}
}

func TestBadInput(t *testing.T) {
	cols := []Column{{Type: Int64}, {Type: String}}
	if _, err := Encode(nil, cols, []Value{I64(1), Str("a"), Str("b")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("too many values: %v", err)
	}
	if _, err := Encode(nil, []Column{{Type: 99}}, []Value{I64(1)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad type: %v", err)
	}
	for _, b := range [][]byte{{0x07}, {0x02, 0x01}, {0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0x02, 'a'}, {0x01, 0x01, 0x01}} {
		if _, err := Decode(b, cols); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode %x: %v, want ErrCorrupt", b, err)
		}
	}
	if _, err := ParseType("varchar"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ParseType: %v", err)
	}
}

// FuzzDecode: the first byte picks a schema; any rest either fails cleanly or decodes to
// values whose encoding is exactly the input (the encoding is canonical).
func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20; i++ {
		seed := byte(r.IntN(256))
		cols := schemaFor(seed)
		b, _ := Encode([]byte{seed}, cols, randTuple(r, cols))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		cols := schemaFor(data[0])
		vals, err := Decode(data[1:], cols)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error %v is not ErrCorrupt", err)
			}
			return
		}
		again, err := Encode(nil, cols, vals)
		if err != nil || !bytes.Equal(again, data[1:]) {
			t.Fatalf("decode %x → %v → %x (%v)", data[1:], vals, again, err)
		}
	})
}

// schemaFor derives a schema of 1..3 columns from one byte.
func schemaFor(b byte) []Column {
	n := int(b%3) + 1
	cols := make([]Column, n)
	for i := range cols {
		cols[i] = Column{Type: allTypes[int(b>>2+byte(i*3))%len(allTypes)], Descending: (b>>uint(5+i))&1 == 1}
	}
	return cols
}
