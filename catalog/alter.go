package catalog

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// Alter returns the partition spec after one change (ADD, DROP or TRUNCATE PARTITION, or the
// intervals a cover_key needs; a truncate leaves the spec as it is) and the names of the
// partitions it touches (none: a cover_key already covered). It never
// changes the routing of a row that has a partition before and after: an added partition
// takes only rows that had none, and a dropped one keeps its place, so the routing keys of
// every other partition stay where they are. It does not modify spec.
//
// now is the clock of a cover_key (the intervals past the retention are not made): the
// proposer's, recorded in the command, so that every member computes the same.
func Alter(schema *Schema, spec *pcspb.PartitionSpec, alter *pcspb.PartitionAlter, now time.Time) (*pcspb.PartitionSpec, []string, error) {
	if spec == nil || spec.Strategy == pcspb.PartitionStrategy_PARTITION_STRATEGY_NONE {
		return nil, nil, invalid("the table is not partitioned")
	}
	out := proto.Clone(spec).(*pcspb.PartitionSpec)
	var name string
	switch op := alter.GetOp().(type) {
	case *pcspb.PartitionAlter_CoverKey:
		cur, err := Compile(schema, spec)
		if err != nil {
			return nil, nil, err
		}
		v, err := cur.IntervalValue(op.CoverKey)
		if err != nil {
			return nil, nil, invalid("cover key: %v", err)
		}
		add, err := cur.IntervalsFor(v, now)
		if err != nil || len(add) == 0 {
			return spec, nil, err
		}
		var names []string
		for _, rp := range add {
			out.Ranges = append(out.Ranges, rp)
			if !rp.Dropped {
				names = append(names, rp.Name)
			}
		}
		if len(names) == 0 {
			return spec, nil, invalid("the row is past the retention")
		}
		if _, err := Compile(schema, out); err != nil {
			return nil, nil, err
		}
		return out, names, nil
	case *pcspb.PartitionAlter_AddRange:
		if spec.Strategy != pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE {
			return nil, nil, invalid("ADD PARTITION with a bound needs a RANGE table; this one is %s", strategyName(spec.Strategy))
		}
		rp := proto.Clone(op.AddRange).(*pcspb.RangePartition)
		rp.Dropped = false
		if last := spec.Ranges[len(spec.Ranges)-1]; allMax(last.LessThan) && !last.Dropped {
			return nil, nil, invalid("the last partition %q is bounded by MAXVALUE: a new partition would take rows it holds (split it instead)", last.Name)
		}
		if rp.Name == "" {
			rp.Name = fmt.Sprintf("p%d", len(out.Ranges))
		}
		out.Ranges = append(out.Ranges, rp)
		name = rp.Name
	case *pcspb.PartitionAlter_AddList:
		if spec.Strategy != pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST {
			return nil, nil, invalid("ADD PARTITION with values needs a LIST table; this one is %s", strategyName(spec.Strategy))
		}
		lp := proto.Clone(op.AddList).(*pcspb.ListPartition)
		lp.Dropped = false
		if lp.Default {
			return nil, nil, invalid("a DEFAULT partition cannot be added: it would take rows of no partition only if none were written, which PCS cannot know")
		}
		for _, p := range spec.Lists {
			if p.Default && !p.Dropped {
				return nil, nil, invalid("partition %q is DEFAULT: the new partition's values would move rows it holds (split it instead)", p.Name)
			}
		}
		if lp.Name == "" {
			lp.Name = fmt.Sprintf("p%d", len(out.Lists))
		}
		out.Lists = append(out.Lists, lp)
		name = lp.Name
	case *pcspb.PartitionAlter_Drop, *pcspb.PartitionAlter_Truncate:
		name = alter.GetDrop()
		if name == "" {
			name = alter.GetTruncate()
		}
		i, err := livePartition(out, name)
		if err != nil {
			return nil, nil, err
		}
		if alter.GetDrop() != "" {
			switch spec.Strategy {
			case pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE:
				out.Ranges[i].Dropped = true
			case pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST:
				out.Lists[i].Dropped = true
			}
		}
	default:
		return nil, nil, invalid("no partition change")
	}
	compiled, err := Compile(schema, out)
	if err != nil {
		return nil, nil, err
	}
	if _, err := compiled.PartitionLeaves(name); err != nil && alter.GetDrop() == "" {
		return nil, nil, err
	}
	return out, []string{name}, nil
}

// livePartition finds a top-level partition of a RANGE or LIST spec by name.
func livePartition(spec *pcspb.PartitionSpec, name string) (int, error) {
	switch spec.Strategy {
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE:
		for i, p := range spec.Ranges {
			if p.Name == name && !p.Dropped {
				return i, nil
			}
		}
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST:
		for i, p := range spec.Lists {
			if p.Name == name && !p.Dropped {
				return i, nil
			}
		}
	default:
		return 0, invalid("a %s table's partitions cannot be dropped or truncated one by one", strategyName(spec.Strategy))
	}
	return 0, fmt.Errorf("%w: %q", ErrNoSuchPartition, name)
}

// ErrNoSuchPartition: no live top-level partition has the name.
var ErrNoSuchPartition = fmt.Errorf("%w: no such partition", ErrInvalidSpec)

// PartitionLeaves returns the leaves of a live top-level partition (one, or one per
// sub-partition), in routing-key order.
func (s *Spec) PartitionLeaves(name string) ([]Leaf, error) {
	if len(s.levels) == 0 {
		return nil, fmt.Errorf("%w: %q (the table is not partitioned)", ErrNoSuchPartition, name)
	}
	top := s.levels[0]
	inner := 1
	if len(s.levels) == 2 {
		inner = s.levels[1].count()
	}
	for p := range top.count() {
		if top.name(p) != name || (p < len(top.dropped) && top.dropped[p]) {
			continue
		}
		out := make([]Leaf, 0, inner)
		for i := p * inner; i < (p+1)*inner; i++ {
			out = append(out, Leaf{Index: i, Name: s.leafName(i), Start: leafPrefix(i), End: leafPrefix(i + 1)})
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSuchPartition, name)
}

// partitionRange returns the routing-key range of the leaves of top-level partition p.
func (s *Spec) partitionRange(p int) (start, end []byte) {
	inner := 1
	if len(s.levels) == 2 {
		inner = s.levels[1].count()
	}
	return leafPrefix(p * inner), leafPrefix((p + 1) * inner)
}

// PartitionRange returns the routing-key range of the top-level partition named name, dropped
// or not (the last of that name).
func (s *Spec) PartitionRange(name string) (start, end []byte, err error) {
	if len(s.levels) == 0 {
		return nil, nil, fmt.Errorf("%w: %q (the table is not partitioned)", ErrNoSuchPartition, name)
	}
	for p := s.levels[0].count() - 1; p >= 0; p-- {
		if s.levels[0].name(p) == name {
			start, end = s.partitionRange(p)
			return start, end, nil
		}
	}
	return nil, nil, fmt.Errorf("%w: %q", ErrNoSuchPartition, name)
}

func allMax(bound []string) bool {
	for _, b := range bound {
		if !isMax(b) {
			return false
		}
	}
	return len(bound) > 0
}

func isMax(s string) bool { return strings.EqualFold(s, "MAXVALUE") }

func strategyName(s pcspb.PartitionStrategy) string {
	switch s {
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE:
		return "RANGE"
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_LIST:
		return "LIST"
	case pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH:
		return "HASH"
	}
	return "not partitioned"
}
