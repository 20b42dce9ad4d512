// Package keyenc is the order-preserving encoding of multi-column keys: for any two tuples of
// the same column types and directions, bytes.Compare of their encodings equals the tuple
// order. PCS uses it to turn partition bounds into byte ranges; clients use it to route keys.
//
// Each column is encoded as a one-byte tag followed by its payload:
//
//	0x01  NULL (sorts first, in ascending and descending columns alike)
//	0x02  a value; the payload follows, bit-inverted when the column is descending
//	0xff  MAXVALUE (only in partition bounds: above every value)
//
// Payloads: int64 and timestamps (µs since the Unix epoch) big-endian with the sign bit
// flipped; uint64 big-endian; float64 IEEE bits, sign-flipped (positive) or inverted (negative),
// with -0 written as +0 and every NaN as one NaN above +Inf; bool one byte; string and bytes
// with 0x00 escaped as 0x00 0xff and terminated by 0x00 0x01, so that they are prefix-free.
// A prefix-free payload keeps its order reversed under bit inversion, which is what makes
// descending columns work. Encoding is canonical: Decode then Encode gives the same bytes.
package keyenc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Type is a column type.
type Type uint8

// Column types.
const (
	Int64 Type = iota + 1
	Uint64
	Float64
	Bool
	String
	Bytes
	Timestamp
)

var typeNames = map[Type]string{Int64: "int64", Uint64: "uint64", Float64: "float64", Bool: "bool",
	String: "string", Bytes: "bytes", Timestamp: "timestamp"}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ParseType parses a type name.
func ParseType(s string) (Type, error) {
	for t, n := range typeNames {
		if n == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown column type %q", ErrInvalid, s)
}

// Column describes one key column.
type Column struct {
	Type       Type
	Descending bool
}

// Kind says what a Value holds.
type Kind uint8

// Value kinds. Null and Max carry no payload.
const (
	KindNull Kind = iota + 1
	KindValue
	KindMax
)

// Value is one column value. For KindValue, the field matching the column type is used:
// I for Int64 and Timestamp (µs), U for Uint64, F for Float64, B for Bool, S for String and
// Bytes.
type Value struct {
	Kind Kind
	I    int64
	U    uint64
	F    float64
	B    bool
	S    string
}

// Constructors.
func Null() Value                { return Value{Kind: KindNull} }
func Max() Value                 { return Value{Kind: KindMax} }
func I64(v int64) Value          { return Value{Kind: KindValue, I: v} }
func U64(v uint64) Value         { return Value{Kind: KindValue, U: v} }
func F64(v float64) Value        { return Value{Kind: KindValue, F: v} }
func BoolV(v bool) Value         { return Value{Kind: KindValue, B: v} }
func Str(v string) Value         { return Value{Kind: KindValue, S: v} }
func Ts(t time.Time) Value       { return Value{Kind: KindValue, I: t.UnixMicro()} }
func BytesV(v []byte) Value      { return Value{Kind: KindValue, S: string(v)} }
func (v Value) IsNull() bool     { return v.Kind == KindNull }
func (v Value) IsMax() bool      { return v.Kind == KindMax }
func (v Value) Time() time.Time  { return time.UnixMicro(v.I).UTC() }
func (v Value) BytesVal() []byte { return []byte(v.S) }

// Errors.
var (
	// ErrInvalid: a value does not fit its column, or a schema is malformed.
	ErrInvalid = errors.New("keyenc: invalid")
	// ErrCorrupt: bytes that are not an encoding of the given columns.
	ErrCorrupt = errors.New("keyenc: corrupt key")
)

const (
	tagNull  = 0x01
	tagValue = 0x02
	tagMax   = 0xff
)

// Encode appends the encoding of vals (one per leading column; fewer than the columns encodes a
// prefix, which sorts before every longer key it prefixes) to dst.
func Encode(dst []byte, cols []Column, vals []Value) ([]byte, error) {
	if len(vals) > len(cols) {
		return nil, fmt.Errorf("%w: %d values for %d columns", ErrInvalid, len(vals), len(cols))
	}
	for i, v := range vals {
		var err error
		if dst, err = encodeOne(dst, cols[i], v); err != nil {
			return nil, fmt.Errorf("column %d: %w", i, err)
		}
	}
	return dst, nil
}

func encodeOne(dst []byte, col Column, v Value) ([]byte, error) {
	switch v.Kind {
	case KindNull:
		return append(dst, tagNull), nil
	case KindMax:
		return append(dst, tagMax), nil
	case KindValue:
	default:
		return nil, fmt.Errorf("%w: value kind %d", ErrInvalid, v.Kind)
	}
	dst = append(dst, tagValue)
	start := len(dst)
	switch col.Type {
	case Int64, Timestamp:
		dst = binary.BigEndian.AppendUint64(dst, uint64(v.I)^(1<<63))
	case Uint64:
		dst = binary.BigEndian.AppendUint64(dst, v.U)
	case Float64:
		dst = binary.BigEndian.AppendUint64(dst, floatBits(v.F))
	case Bool:
		b := byte(0)
		if v.B {
			b = 1
		}
		dst = append(dst, b)
	case String, Bytes:
		for i := 0; i < len(v.S); i++ {
			if v.S[i] == 0 {
				dst = append(dst, 0x00, 0xff)
			} else {
				dst = append(dst, v.S[i])
			}
		}
		dst = append(dst, 0x00, 0x01)
	default:
		return nil, fmt.Errorf("%w: column type %v", ErrInvalid, col.Type)
	}
	if col.Descending {
		for i := start; i < len(dst); i++ {
			dst[i] = ^dst[i]
		}
	}
	return dst, nil
}

// canonicalNaN is the bit pattern every NaN is written as.
const canonicalNaN = 0x7ff8000000000001

func floatBits(f float64) uint64 {
	if f == 0 {
		f = 0 // -0 → +0
	}
	b := math.Float64bits(f)
	if math.IsNaN(f) {
		b = canonicalNaN
	}
	if b&(1<<63) != 0 {
		return ^b
	}
	return b | 1<<63
}

func floatFromBits(u uint64) float64 {
	if u&(1<<63) != 0 {
		return math.Float64frombits(u &^ (1 << 63))
	}
	return math.Float64frombits(^u)
}

// Decode parses a key encoded for cols; it may hold fewer values than columns (a prefix).
func Decode(b []byte, cols []Column) ([]Value, error) {
	var out []Value
	for i := 0; len(b) > 0; i++ {
		if i == len(cols) {
			return nil, fmt.Errorf("%w: %d bytes after the last column", ErrCorrupt, len(b))
		}
		v, n, err := decodeOne(b, cols[i])
		if err != nil {
			return nil, fmt.Errorf("column %d: %w", i, err)
		}
		out = append(out, v)
		b = b[n:]
	}
	return out, nil
}

func decodeOne(b []byte, col Column) (Value, int, error) {
	switch b[0] {
	case tagNull:
		return Null(), 1, nil
	case tagMax:
		return Max(), 1, nil
	case tagValue:
	default:
		return Value{}, 0, fmt.Errorf("%w: tag 0x%02x", ErrCorrupt, b[0])
	}
	p := b[1:]
	get := func(i int) byte {
		if col.Descending {
			return ^p[i]
		}
		return p[i]
	}
	u64 := func() (uint64, error) {
		if len(p) < 8 {
			return 0, fmt.Errorf("%w: %d bytes for an 8-byte value", ErrCorrupt, len(p))
		}
		var u uint64
		for i := 0; i < 8; i++ {
			u = u<<8 | uint64(get(i))
		}
		return u, nil
	}
	switch col.Type {
	case Int64, Timestamp:
		u, err := u64()
		return I64(int64(u ^ 1<<63)), 9, err
	case Uint64:
		u, err := u64()
		return U64(u), 9, err
	case Float64:
		u, err := u64()
		if err != nil {
			return Value{}, 0, err
		}
		f := floatFromBits(u)
		if floatBits(f) != u {
			return Value{}, 0, fmt.Errorf("%w: non-canonical float", ErrCorrupt)
		}
		return F64(f), 9, nil
	case Bool:
		if len(p) < 1 || get(0) > 1 {
			return Value{}, 0, fmt.Errorf("%w: bad bool", ErrCorrupt)
		}
		return BoolV(get(0) == 1), 2, nil
	case String, Bytes:
		var s bytes.Buffer
		for i := 0; i+1 < len(p); i++ {
			c := get(i)
			if c != 0 {
				s.WriteByte(c)
				continue
			}
			switch get(i + 1) {
			case 0xff:
				s.WriteByte(0)
				i++
			case 0x01:
				return Str(s.String()), i + 3, nil
			default:
				return Value{}, 0, fmt.Errorf("%w: bad escape", ErrCorrupt)
			}
		}
		return Value{}, 0, fmt.Errorf("%w: unterminated string", ErrCorrupt)
	}
	return Value{}, 0, fmt.Errorf("%w: column type %v", ErrInvalid, col.Type)
}

// Compare orders two values of one column as their encodings do: NULL first, MAXVALUE last,
// descending columns reversed, NaN above +Inf, -0 equal to +0.
func Compare(col Column, a, b Value) int {
	rank := func(v Value) int { return map[Kind]int{KindNull: 0, KindValue: 1, KindMax: 2}[v.Kind] }
	if ra, rb := rank(a), rank(b); ra != rb || a.Kind != KindValue {
		return ra - rb
	}
	var c int
	switch col.Type {
	case Int64, Timestamp:
		c = cmp3(a.I < b.I, a.I > b.I)
	case Uint64:
		c = cmp3(a.U < b.U, a.U > b.U)
	case Float64:
		an, bn := math.IsNaN(a.F), math.IsNaN(b.F)
		switch {
		case an || bn:
			c = cmp3(!an && bn, an && !bn)
		default:
			c = cmp3(a.F < b.F, a.F > b.F)
		}
	case Bool:
		c = cmp3(!a.B && b.B, a.B && !b.B)
	case String, Bytes:
		c = cmp3(a.S < b.S, a.S > b.S)
	}
	if col.Descending {
		c = -c
	}
	return c
}

func cmp3(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}

// CompareTuples orders tuples column by column; a proper prefix sorts first.
func CompareTuples(cols []Column, a, b []Value) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := Compare(cols[i], a[i], b[i]); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}
