package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

// Limits on a table definition.
const (
	MaxColumns       = 64
	MaxHashBuckets   = 4096
	MaxLeaves        = 100_000
	MaxPartitionName = 128
)

// ErrInvalidSpec is wrapped by every validation error of a schema or partition spec; the
// message names the offending column, partition, bound or value.
var ErrInvalidSpec = errors.New("invalid table spec")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// Schema is a validated list of key columns.
type Schema struct {
	Names []string
	Cols  []keyenc.Column
	index map[string]int
}

// CompileSchema validates column definitions.
func CompileSchema(defs []*pcspb.ColumnDef) (*Schema, error) {
	if len(defs) == 0 {
		return nil, invalid("a table needs at least one key column")
	}
	if len(defs) > MaxColumns {
		return nil, invalid("%d key columns exceed %d", len(defs), MaxColumns)
	}
	s := &Schema{index: map[string]int{}}
	for i, d := range defs {
		if d.GetName() == "" || len(d.Name) > MaxPartitionName {
			return nil, invalid("column %d: name must be 1..%d bytes", i, MaxPartitionName)
		}
		if _, dup := s.index[d.Name]; dup {
			return nil, invalid("column %q is defined twice", d.Name)
		}
		t, err := keyenc.ParseType(d.Type)
		if err != nil {
			return nil, invalid("column %q: unknown type %q (int64, uint64, float64, bool, string, bytes, timestamp)", d.Name, d.Type)
		}
		s.index[d.Name] = i
		s.Names = append(s.Names, d.Name)
		s.Cols = append(s.Cols, keyenc.Column{Type: t, Descending: d.Descending})
	}
	return s, nil
}

// ParseValue parses the text form of a value of type t: "NULL", "MAXVALUE" (if allowMax),
// decimal integers, floats (including NaN, Inf), true/false, RFC 3339 timestamps, strings as
// they are and bytes as hex with a 0x prefix.
func ParseValue(t keyenc.Type, s string, allowMax bool) (keyenc.Value, error) {
	switch strings.ToUpper(s) {
	case "NULL":
		return keyenc.Null(), nil
	case "MAXVALUE":
		if allowMax {
			return keyenc.Max(), nil
		}
		return keyenc.Value{}, errors.New("MAXVALUE is only allowed in range bounds")
	}
	switch t {
	case keyenc.Int64:
		v, err := strconv.ParseInt(s, 10, 64)
		return keyenc.I64(v), err
	case keyenc.Uint64:
		v, err := strconv.ParseUint(s, 10, 64)
		return keyenc.U64(v), err
	case keyenc.Float64:
		v, err := strconv.ParseFloat(s, 64)
		return keyenc.F64(v), err
	case keyenc.Bool:
		v, err := strconv.ParseBool(s)
		return keyenc.BoolV(v), err
	case keyenc.String:
		return keyenc.Str(s), nil
	case keyenc.Bytes:
		h, ok := strings.CutPrefix(s, "0x")
		if !ok || len(h)%2 != 0 {
			return keyenc.Value{}, errors.New("bytes are written as 0x followed by hex digits")
		}
		b := make([]byte, len(h)/2)
		for i := range b {
			v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
			if err != nil {
				return keyenc.Value{}, err
			}
			b[i] = byte(v)
		}
		return keyenc.BytesV(b), nil
	case keyenc.Timestamp:
		ts, err := time.Parse(time.RFC3339Nano, s)
		return keyenc.Ts(ts), err
	}
	return keyenc.Value{}, fmt.Errorf("unknown type %v", t)
}

// level is one compiled level of partitioning.
type level struct {
	strategy pcspb.PartitionStrategy
	colIdx   []int            // indexes into the schema of this level's columns
	cols     []keyenc.Column  // their types and directions
	names    []string         // partition names
	bounds   [][]keyenc.Value // RANGE: exclusive upper bound of each partition, increasing
	list     map[string]int   // LIST: encoded tuple → partition
	deflt    int              // LIST: default partition, or -1
	buckets  int              // HASH: number of partitions
	dropped  []bool           // RANGE, LIST: dropped partitions (they keep their place, own no rows)
	interval *interval        // RANGE: automatic partitions, one per interval (top level only)
}

func (l *level) count() int {
	if l.strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH {
		return l.buckets
	}
	return len(l.names)
}

func (l *level) name(i int) string {
	if l.strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH {
		return "h" + strconv.Itoa(i)
	}
	return l.names[i]
}

// Spec is a compiled, validated partition spec.
type Spec struct {
	schema *Schema
	levels []*level
}

// Leaf is one leaf partition and the routing-key range it owns.
type Leaf struct {
	Index      int
	Name       string // "p1" or, sub-partitioned, "p1/h3"
	Start, End []byte
}

// Compile validates spec against schema. A nil or NONE spec is one leaf.
func Compile(schema *Schema, spec *pcspb.PartitionSpec) (*Spec, error) {
	s := &Spec{schema: schema}
	depth := 0
	for lv := spec; lv != nil && lv.Strategy != pcspb.PartitionStrategy_PARTITION_STRATEGY_NONE; lv = lv.Sub {
		depth++
		if depth > 2 {
			return nil, invalid("at most one level of sub-partitioning")
		}
		where := "partition spec"
		if depth == 2 {
			where = "sub-partition spec"
		}
		l, err := compileLevel(schema, lv, where)
		if err != nil {
			return nil, err
		}
		s.levels = append(s.levels, l)
	}
	if n := s.LeafCount(); n > MaxLeaves {
		return nil, invalid("%d leaf partitions exceed %d", n, MaxLeaves)
	}
	return s, nil
}

func compileLevel(schema *Schema, spec *pcspb.PartitionSpec, where string) (*level, error) {
	l := &level{strategy: spec.Strategy, deflt: -1}
	if len(spec.Columns) == 0 {
		return nil, invalid("%s: no partition columns", where)
	}
	for _, name := range spec.Columns {
		i, ok := schema.index[name]
		if !ok {
			return nil, invalid("%s: partition column %q is not a key column", where, name)
		}
		l.colIdx = append(l.colIdx, i)
		l.cols = append(l.cols, schema.Cols[i])
	}
	names := map[string]bool{}
	addName := func(n string, i int, dropped bool) error {
		if n == "" {
			n = fmt.Sprintf("p%d", i)
		}
		if len(n) > MaxPartitionName || strings.Contains(n, "/") {
			return invalid("%s: partition name %q must be 1..%d bytes without '/'", where, n, MaxPartitionName)
		}
		if names[n] && !dropped {
			return invalid("%s: partition name %q is used twice", where, n)
		}
		if dropped && where != "partition spec" {
			return invalid("%s: only a top-level partition can be dropped", where)
		}
		if !dropped {
			names[n] = true // a dropped partition's name may be taken again
		}
		l.names = append(l.names, n)
		l.dropped = append(l.dropped, dropped)
		return nil
	}
	switch spec.Strategy {
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE:
		if len(spec.Ranges) == 0 || len(spec.Lists) > 0 || spec.HashPartitions > 0 {
			return nil, invalid("%s: RANGE needs range partitions and nothing else", where)
		}
		for i, rp := range spec.Ranges {
			if err := addName(rp.Name, i, rp.Dropped); err != nil {
				return nil, err
			}
			name := l.names[i]
			if len(rp.LessThan) != len(l.cols) {
				return nil, invalid("%s: partition %q has %d bound values for %d columns", where, name, len(rp.LessThan), len(l.cols))
			}
			bound := make([]keyenc.Value, len(l.cols))
			for j, text := range rp.LessThan {
				v, err := ParseValue(l.cols[j].Type, text, true)
				if err != nil {
					return nil, invalid("%s: partition %q bound %q for %v column %q: %v", where, name, text, l.cols[j].Type, spec.Columns[j], err)
				}
				bound[j] = v
			}
			if i > 0 && keyenc.CompareTuples(l.cols, l.bounds[i-1], bound) >= 0 {
				return nil, invalid("%s: partition %q bound (%s) is not above the previous bound (%s): bounds must increase and no partition may be empty",
					where, name, strings.Join(rp.LessThan, ", "), strings.Join(spec.Ranges[i-1].LessThan, ", "))
			}
			l.bounds = append(l.bounds, bound)
		}
		if err := compileInterval(l, spec, where); err != nil {
			return nil, err
		}
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST:
		if spec.Interval != "" || spec.Retention != "" {
			return nil, invalid("%s: an interval needs a RANGE partition", where)
		}
		if len(spec.Lists) == 0 || len(spec.Ranges) > 0 || spec.HashPartitions > 0 {
			return nil, invalid("%s: LIST needs list partitions and nothing else", where)
		}
		l.list = map[string]int{}
		owner := map[string]string{}
		for i, lp := range spec.Lists {
			if err := addName(lp.Name, i, lp.Dropped); err != nil {
				return nil, err
			}
			name := l.names[i]
			if lp.Dropped {
				continue // its values are no one's (or the DEFAULT partition's)
			}
			if lp.Default {
				if l.deflt >= 0 {
					return nil, invalid("%s: partitions %q and %q are both DEFAULT", where, l.names[l.deflt], name)
				}
				l.deflt = i
			}
			if len(lp.Values) == 0 && !lp.Default {
				return nil, invalid("%s: partition %q lists no values (empty partition)", where, name)
			}
			for _, tup := range lp.Values {
				if len(tup.Values) != len(l.cols) {
					return nil, invalid("%s: partition %q value (%s) has %d parts for %d columns", where, name, strings.Join(tup.Values, ", "), len(tup.Values), len(l.cols))
				}
				vals := make([]keyenc.Value, len(l.cols))
				for j, text := range tup.Values {
					v, err := ParseValue(l.cols[j].Type, text, false)
					if err != nil {
						return nil, invalid("%s: partition %q value %q for %v column %q: %v", where, name, text, l.cols[j].Type, spec.Columns[j], err)
					}
					vals[j] = v
				}
				enc, _ := keyenc.Encode(nil, l.cols, vals)
				if prev, dup := owner[string(enc)]; dup {
					return nil, invalid("%s: value (%s) is listed by both %q and %q (overlap)", where, strings.Join(tup.Values, ", "), prev, name)
				}
				owner[string(enc)] = name
				l.list[string(enc)] = i
			}
		}
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH:
		if len(spec.Ranges) > 0 || len(spec.Lists) > 0 || spec.Interval != "" || spec.Retention != "" {
			return nil, invalid("%s: HASH takes only a partition count", where)
		}
		if spec.HashPartitions < 1 || spec.HashPartitions > MaxHashBuckets {
			return nil, invalid("%s: HASH(%d): the count must be in 1..%d", where, spec.HashPartitions, MaxHashBuckets)
		}
		l.buckets = int(spec.HashPartitions)
	default:
		return nil, invalid("%s: unknown strategy %v", where, spec.Strategy)
	}
	return l, nil
}

// LeafCount is the number of leaf partitions.
func (s *Spec) LeafCount() int {
	n := 1
	for _, l := range s.levels {
		n *= l.count()
	}
	return n
}

// Leaves lists the leaf partitions that own rows (not dropped) in routing-key order. A leaf's
// routing keys are fixed by its place in the spec, which a later ADD or DROP never moves.
func (s *Spec) Leaves() []Leaf {
	n := s.LeafCount()
	out := make([]Leaf, 0, n)
	keys := make([]byte, 0, 4*(n+1)) // every leaf's bounds in one array: a leaf's end is the next one's start
	for i := range n + 1 {
		keys = binary.BigEndian.AppendUint32(keys, uint32(i))
	}
	prefix := func(i int) []byte { return keys[4*i : 4*i+4 : 4*i+4] }
	for i := range n {
		if !s.leafDropped(i) {
			out = append(out, Leaf{Index: i, Name: s.leafName(i), Start: prefix(i), End: prefix(i + 1)})
		}
	}
	return out
}

// leafDropped reports whether leaf i belongs to a dropped partition.
func (s *Spec) leafDropped(i int) bool {
	if len(s.levels) == 0 {
		return false
	}
	top := s.levels[0]
	if len(s.levels) == 2 {
		i /= s.levels[1].count()
	}
	return i < len(top.dropped) && top.dropped[i]
}

func (s *Spec) leafName(i int) string {
	switch len(s.levels) {
	case 0:
		return "p0"
	case 1:
		return s.levels[0].name(i)
	}
	inner := s.levels[1].count()
	return s.levels[0].name(i/inner) + "/" + s.levels[1].name(i%inner)
}

func leafPrefix(i int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(i)) }

// ErrNoPartition: a key falls outside every partition (beyond the last RANGE bound, or a LIST
// value no partition lists and there is no DEFAULT).
var ErrNoPartition = errors.New("no partition holds the key")

// ErrBadKey: a key that is not an encoding of the table's key columns.
var ErrBadKey = errors.New("malformed key")

// RoutingKey maps a row key (the keyenc encoding of the key columns, possibly a prefix that
// covers every partition column) to its routing key.
func (s *Spec) RoutingKey(key []byte) ([]byte, error) {
	vals, err := keyenc.Decode(key, s.schema.Cols)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	leaf, err := s.LeafOf(vals)
	if err != nil {
		return nil, err
	}
	return append(leafPrefix(leaf), key...), nil
}

// LeafOf returns the leaf partition of a row given its key column values.
func (s *Spec) LeafOf(vals []keyenc.Value) (int, error) {
	leaf := 0
	for _, l := range s.levels {
		part, err := l.partitionOf(vals)
		if err != nil {
			return 0, err
		}
		leaf = leaf*l.count() + part
	}
	return leaf, nil
}

func (l *level) partitionOf(vals []keyenc.Value) (int, error) {
	tuple := make([]keyenc.Value, len(l.colIdx))
	for j, ci := range l.colIdx {
		if ci >= len(vals) {
			return 0, fmt.Errorf("%w: the key does not include partition column %d", ErrBadKey, ci)
		}
		if vals[ci].IsMax() {
			return 0, fmt.Errorf("%w: MAXVALUE in a row key", ErrBadKey)
		}
		tuple[j] = vals[ci]
	}
	switch l.strategy {
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE:
		// First partition whose bound is above the tuple.
		lo, hi := 0, len(l.bounds)
		for lo < hi {
			m := (lo + hi) / 2
			if keyenc.CompareTuples(l.cols, tuple, l.bounds[m]) < 0 {
				hi = m
			} else {
				lo = m + 1
			}
		}
		if lo == len(l.bounds) && l.interval != nil {
			return 0, ErrIntervalMissing
		}
		if lo == len(l.bounds) || l.dropped[lo] {
			return 0, ErrNoPartition
		}
		return lo, nil
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST:
		enc, _ := keyenc.Encode(nil, l.cols, tuple)
		if p, ok := l.list[string(enc)]; ok {
			return p, nil
		}
		if l.deflt >= 0 {
			return l.deflt, nil
		}
		return 0, ErrNoPartition
	default: // HASH
		enc, _ := keyenc.Encode(nil, l.cols, tuple)
		h := fnv.New64a()
		h.Write(enc)
		return int(h.Sum64() % uint64(l.buckets)), nil
	}
}

// EncodeKeyText parses comma-separated values of t's leading key columns, as an operator types
// them ("42", "2026-01-02,abc"), and encodes them as a (prefix of a) row key.
func EncodeKeyText(t *pcspb.Table, text string) ([]byte, error) {
	schema, err := CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(text, ",")
	if len(parts) > len(schema.Cols) {
		return nil, fmt.Errorf("%w: %d values for %d key columns", ErrBadKey, len(parts), len(schema.Cols))
	}
	vals := make([]keyenc.Value, len(parts))
	for i, p := range parts {
		if vals[i], err = ParseValue(schema.Cols[i].Type, p, false); err != nil {
			return nil, fmt.Errorf("column %q value %q: %w", schema.Names[i], p, err)
		}
	}
	return keyenc.Encode(nil, schema.Cols, vals)
}
