package catalog

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

// ErrIntervalMissing: a row of an interval-partitioned table falls past the last partition, in
// an interval no partition has been made for yet. It is retryable: ask PCS to add the
// partition (PartitionAlter.cover_key) and route again. It wraps ErrNoPartition.
var ErrIntervalMissing = fmt.Errorf("%w: its interval has no partition yet", ErrNoPartition)

// MaxIntervalFill bounds the partitions one cover_key adds (the intervals from the last
// partition up to the row's): a row far in the future is refused rather than making thousands.
const MaxIntervalFill = 100

// interval is a RANGE level's automatic partitioning: one partition per interval of its column
// (a timestamp, in µs, or an int64), aligned on multiples of width from the epoch or zero.
type interval struct {
	width     int64
	retention int64 // timestamps only; 0: keep every partition
	ts        bool
}

// ParseInterval parses an interval or retention of a column of type t: a duration for a
// timestamp ("1d", "12h", "30m"; d is 24h), a positive integer for an int64.
func ParseInterval(t keyenc.Type, s string) (int64, error) {
	switch t {
	case keyenc.Timestamp:
		d, err := parseDays(s)
		if err != nil {
			return 0, err
		}
		if d < time.Second {
			return 0, fmt.Errorf("%q: at least 1s", s)
		}
		return d.Microseconds(), nil
	case keyenc.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q: want a positive integer", s)
		}
		return n, nil
	}
	return 0, fmt.Errorf("intervals need a timestamp or int64 column, not %v", t)
}

// parseDays is time.ParseDuration with a "d" (24h) unit as the leading term.
func parseDays(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseInt(days, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 1d, 12h or 30m", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 1d, 12h or 30m", s)
		}
		d += r
	}
	return d, nil
}

// compileInterval validates a RANGE level's interval and retention.
func compileInterval(l *level, spec *pcspb.PartitionSpec, where string) error {
	if spec.Interval == "" {
		if spec.Retention != "" {
			return invalid("%s: a retention needs an interval", where)
		}
		return nil
	}
	if where != "partition spec" || spec.Strategy != pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE || len(l.cols) != 1 {
		return invalid("%s: an interval needs a top-level RANGE partition on one column", where)
	}
	col := l.cols[0]
	if col.Descending {
		return invalid("%s: an interval needs an ascending column", where)
	}
	w, err := ParseInterval(col.Type, spec.Interval)
	if err != nil {
		return invalid("%s: interval %v", where, err)
	}
	iv := &interval{width: w, ts: col.Type == keyenc.Timestamp}
	if spec.Retention != "" {
		if !iv.ts {
			return invalid("%s: a retention needs a timestamp column", where)
		}
		if iv.retention, err = ParseInterval(col.Type, spec.Retention); err != nil {
			return invalid("%s: retention %v", where, err)
		}
	}
	if last := l.bounds[len(l.bounds)-1]; last[0].IsMax() {
		return invalid("%s: an interval table's last partition cannot be bounded by MAXVALUE", where)
	}
	l.interval = iv
	return nil
}

// floorDiv rounds a/b down (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Interval reports the table's interval width and retention (µs for a timestamp column), if it
// has one.
func (s *Spec) Interval() (width, retention int64, ok bool) {
	if len(s.levels) == 0 || s.levels[0].interval == nil {
		return 0, 0, false
	}
	iv := s.levels[0].interval
	return iv.width, iv.retention, true
}

// IntervalIsTime reports whether the table's interval column is a timestamp (intervals of
// time can be made ahead of the clock).
func (s *Spec) IntervalIsTime() bool {
	return len(s.levels) > 0 && s.levels[0].interval != nil && s.levels[0].interval.ts
}

// IntervalsFor returns the RANGE partitions to append so that a row whose interval column has
// value v (µs for a timestamp) has a partition: one per interval from the last bound up to
// v's, each bounded at a multiple of the width, named after its interval (not colliding with a
// live partition's name). The intervals all past the retention at now are one partition,
// dropped from the start (their rows have none). Nil if a partition (or a dropped one)
// already holds v.
func (s *Spec) IntervalsFor(v int64, now time.Time) ([]*pcspb.RangePartition, error) {
	width, retention, ok := s.Interval()
	if !ok {
		return nil, invalid("the table has no interval")
	}
	l := s.levels[0]
	last := l.bounds[len(l.bounds)-1][0].I
	if v < last {
		return nil, nil
	}
	want := (floorDiv(v, width) + 1) * width // the bound of v's interval
	if retention > 0 && want <= now.UnixMicro()-retention {
		return nil, invalid("the row is past the retention")
	}
	var out []*pcspb.RangePartition
	used := map[string]bool{}
	for i, n := range l.names {
		if !l.dropped[i] {
			used[n] = true
		}
	}
	b := (floorDiv(last, width) + 1) * width
	if retention > 0 {
		if cut := floorDiv(now.UnixMicro()-retention, width) * width; cut > b && cut <= want {
			out = append(out, &pcspb.RangePartition{Name: l.intervalName(last) + "_expired", LessThan: []string{l.boundText(cut)}, Dropped: true})
			b = cut + width
		}
	}
	for ; ; b += width {
		if len(out) == MaxIntervalFill {
			return nil, invalid("the row is more than %d intervals past the last partition: add partitions explicitly", MaxIntervalFill)
		}
		name := l.intervalName(b - width)
		for used[name] {
			name += "_"
		}
		used[name] = true
		out = append(out, &pcspb.RangePartition{Name: name, LessThan: []string{l.boundText(b)}})
		if b >= want {
			return out, nil
		}
	}
}

// IntervalValue decodes a row key's interval column value.
func (s *Spec) IntervalValue(key []byte) (int64, error) {
	if _, _, ok := s.Interval(); !ok {
		return 0, invalid("the table has no interval")
	}
	vals, err := keyenc.Decode(key, s.schema.Cols)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	ci := s.levels[0].colIdx[0]
	if ci >= len(vals) || vals[ci].IsNull() || vals[ci].IsMax() {
		return 0, fmt.Errorf("%w: the key has no value of the interval column", ErrBadKey)
	}
	return vals[ci].I, nil
}

// Expired returns the live partitions whose rows are all older than the retention at now: their
// upper bound is at or before now − retention.
func (s *Spec) Expired(now time.Time) []string {
	_, retention, ok := s.Interval()
	if !ok || retention == 0 {
		return nil
	}
	l := s.levels[0]
	cut := now.UnixMicro() - retention
	var out []string
	for i, b := range l.bounds {
		if !l.dropped[i] && !b[0].IsMax() && !b[0].IsNull() && b[0].I <= cut {
			out = append(out, l.names[i])
		}
	}
	return out
}

func (l *level) boundText(b int64) string {
	if l.interval.ts {
		return time.UnixMicro(b).UTC().Format(time.RFC3339Nano)
	}
	return strconv.FormatInt(b, 10)
}

// intervalName names the partition of the interval starting at lo: p20261207 for days,
// p2026120713 for hours, p202612071305 for minutes, with seconds below that; p<lo> for int64.
func (l *level) intervalName(lo int64) string {
	if !l.interval.ts {
		return "p" + strconv.FormatInt(lo, 10)
	}
	t := time.UnixMicro(lo).UTC()
	w := time.Duration(l.interval.width) * time.Microsecond
	switch {
	case w%(24*time.Hour) == 0:
		return t.Format("p20060102")
	case w%time.Hour == 0:
		return t.Format("p2006010215")
	case w%time.Minute == 0:
		return t.Format("p200601021504")
	}
	return t.Format("p20060102150405")
}

// FirstInterval returns the first partition of an interval table created without ranges: the
// interval holding now (a timestamp column) or zero (an int64 column); it also holds every
// older row.
func FirstInterval(schema *Schema, spec *pcspb.PartitionSpec, now time.Time) (*pcspb.RangePartition, error) {
	if len(spec.GetColumns()) != 1 {
		return nil, invalid("an interval needs a RANGE partition on one column")
	}
	i, ok := schema.index[spec.Columns[0]]
	if !ok {
		return nil, invalid("partition column %q is not a key column", spec.Columns[0])
	}
	col := schema.Cols[i]
	w, err := ParseInterval(col.Type, spec.Interval)
	if err != nil {
		return nil, invalid("interval %v", err)
	}
	l := &level{interval: &interval{width: w, ts: col.Type == keyenc.Timestamp}}
	var v int64
	if l.interval.ts {
		v = now.UnixMicro()
	}
	lo := floorDiv(v, w) * w
	return &pcspb.RangePartition{Name: l.intervalName(lo), LessThan: []string{l.boundText(lo + w)}}, nil
}

// IntervalKey returns a row-key prefix whose interval column has value v (the columns before it
// NULL): enough to route, and to ask for v's interval (cover_key).
func (s *Spec) IntervalKey(v int64) []byte {
	ci := s.levels[0].colIdx[0]
	vals := make([]keyenc.Value, ci+1)
	for i := range vals {
		vals[i] = keyenc.Null()
	}
	vals[ci] = keyenc.Value{Kind: keyenc.KindValue, I: v}
	k, _ := keyenc.Encode(nil, s.schema.Cols[:ci+1], vals)
	return k
}
