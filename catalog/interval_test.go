package catalog

import (
	"errors"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/keyenc"
)

func TestParseInterval(t *testing.T) {
	for _, tc := range []struct {
		typ  keyenc.Type
		in   string
		want int64
		ok   bool
	}{
		{keyenc.Timestamp, "1d", 86_400_000_000, true},
		{keyenc.Timestamp, "1d12h", 129_600_000_000, true},
		{keyenc.Timestamp, "6h", 21_600_000_000, true},
		{keyenc.Timestamp, "30m", 1_800_000_000, true},
		{keyenc.Timestamp, "500ms", 0, false},
		{keyenc.Timestamp, "-1d", 0, false},
		{keyenc.Timestamp, "xd", 0, false},
		{keyenc.Timestamp, "", 0, false},
		{keyenc.Int64, "1000", 1000, true},
		{keyenc.Int64, "0", 0, false},
		{keyenc.Int64, "1d", 0, false},
		{keyenc.String, "1", 0, false},
	} {
		got, err := ParseInterval(tc.typ, tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseInterval(%v, %q) = %d, %v", tc.typ, tc.in, got, err)
		}
	}
}

func FuzzParseInterval(f *testing.F) {
	for _, s := range []string{"1d", "1d12h", "6h", "30m", "1000", "-1", "9999999999d", "1d-5h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range []keyenc.Type{keyenc.Timestamp, keyenc.Int64} {
			if w, err := ParseInterval(typ, s); err == nil && w < 1 {
				t.Fatalf("ParseInterval(%v, %q) = %d without an error", typ, s, w)
			}
		}
	})
}

// TestIntervals: routing past the last partition of an interval table says the interval is
// missing; the partitions a row needs are every interval up to its own, aligned and named by
// day; those past the retention are one dropped partition; expired partitions are listed.
func TestIntervals(t *testing.T) {
	schema, _ := CompileSchema(cols("ts:timestamp", "id:int64"))
	day := 24 * time.Hour
	now := time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC)
	spec := &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"}, Interval: "1d", Retention: "30d"}
	first, err := FirstInterval(schema, spec, now)
	if err != nil || first.Name != "p20261207" || first.LessThan[0] != "2026-12-08T00:00:00Z" {
		t.Fatalf("first interval: %v %v", first, err)
	}
	spec.Ranges = []*pcspb.RangePartition{first}
	s, err := Compile(schema, spec)
	if err != nil {
		t.Fatal(err)
	}
	key := func(ts time.Time) []byte {
		k, _ := keyenc.Encode(nil, schema.Cols, []keyenc.Value{keyenc.Ts(ts), keyenc.I64(1)})
		return k
	}
	if _, err := s.RoutingKey(key(now.Add(2 * day))); !errors.Is(err, ErrIntervalMissing) || !errors.Is(err, ErrNoPartition) {
		t.Fatalf("a row past the last partition: %v", err)
	}
	if _, err := s.RoutingKey(key(now.Add(-100 * day))); err != nil {
		t.Fatalf("an old row falls in the first partition: %v", err)
	}
	add, err := s.IntervalsFor(now.Add(2*day).UnixMicro(), now)
	if err != nil || len(add) != 2 || add[0].Name != "p20261208" || add[1].Name != "p20261209" || add[1].LessThan[0] != "2026-12-10T00:00:00Z" {
		t.Fatalf("intervals for two days ahead: %v %v", add, err)
	}
	if add, err := s.IntervalsFor(now.UnixMicro(), now); err != nil || add != nil {
		t.Fatalf("a covered row needs %v, %v", add, err)
	}
	if _, err := s.IntervalsFor(now.Add(200*day).UnixMicro(), now); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("a row 200 days ahead: %v", err)
	}
	// 50 days later: the 30 days past the retention are one dropped partition.
	later := now.Add(50 * day)
	add, err = s.IntervalsFor(later.UnixMicro(), later)
	if err != nil || !add[0].Dropped || len(add) != 32 || add[len(add)-1].Name != later.Format("p20060102") {
		t.Fatalf("intervals 50 days later: %d, first %v, %v", len(add), add[0], err)
	}
	if _, err := s.IntervalsFor(now.UnixMicro()+1, later); err != nil {
		t.Fatalf("a covered row: %v", err)
	}
	spec.Ranges = append(spec.Ranges, add...)
	s2, err := Compile(schema, spec)
	if err != nil {
		t.Fatal(err)
	}
	checkCoverage(t, s2)
	if got := s2.Expired(later); len(got) != 1 || got[0] != "p20261207" {
		t.Fatalf("expired 50 days later: %v", got)
	}
	if _, err := s2.IntervalsFor(now.Add(-day).UnixMicro(), later); err != nil {
		t.Fatalf("an old row in a dropped range asks for nothing: %v", err)
	}
	for name, bad := range map[string]*pcspb.PartitionSpec{
		"list":          {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST, Columns: []string{"ts"}, Interval: "1d", Lists: []*pcspb.ListPartition{{Name: "a", Default: true}}},
		"two columns":   {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts", "id"}, Interval: "1d", Ranges: []*pcspb.RangePartition{{LessThan: []string{"2026-01-01T00:00:00Z", "1"}}}},
		"bad interval":  {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"}, Interval: "1x", Ranges: []*pcspb.RangePartition{first}},
		"int retention": {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"id"}, Interval: "10", Retention: "5", Ranges: []*pcspb.RangePartition{{LessThan: []string{"10"}}}},
		"maxvalue":      {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"}, Interval: "1d", Ranges: []*pcspb.RangePartition{{LessThan: []string{"MAXVALUE"}}}},
		"no interval":   {Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE, Columns: []string{"ts"}, Retention: "1d", Ranges: []*pcspb.RangePartition{first}},
	} {
		if _, err := Compile(schema, bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
