package server

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/cluster"
)

// The key heatmap (the console's "key visualizer"): every HeatmapInterval the primary records
// each shard's load — reads, writes, read bytes, written bytes per second, as the shards'
// primaries report them — in key order. A column keeps at most heatmapBuckets buckets: runs of
// cold adjacent shards of one table are merged, a hot shard keeps a bucket of its own. A query
// puts the columns of a time window on one key axis and merges that axis down to the rows asked
// for the same way, so cold ranges fold together and hot ones stay apart; asking for one table
// or a key range of it zooms in.

const (
	heatmapColumns = 360  // samples kept: an hour at the default interval
	heatmapBuckets = 1024 // buckets per sample, at most (plus one per table)
	heatmapMaxRows = 1024 // rows a query may ask for
	heatmapMaxAxis = 4096 // key-axis boundaries a query works on, at most
)

// heatMetrics are the measures a bucket holds, in order.
var heatMetrics = []string{"reads", "writes", "read_bytes", "write_bytes"}

// heatBucket is a run of adjacent shards of one table, [start, next bucket's start), or to the
// table's end if it is the table's last.
type heatBucket struct {
	table     uint64
	start     []byte // shared with the catalog's shard (never written)
	partition string // of the first shard
	v         [4]float32
}

type heatColumn struct {
	atMs    int64
	buckets []heatBucket
}

type heatmap struct {
	mu   sync.Mutex
	cols ring[heatColumn]
}

func newHeatmap() *heatmap { return &heatmap{cols: newRing[heatColumn](heatmapColumns)} }

// heatmapLoop samples the shards' load while this member is the primary.
func (s *Server) heatmapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeatmapInterval)
	defer t.Stop()
	var next time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !s.isPrimary() || now.Before(next) {
				continue
			}
			start := time.Now()
			col, err := s.heatSample(ctx, now)
			if err != nil {
				return
			}
			s.heat.mu.Lock()
			s.heat.cols.push(col)
			s.heat.mu.Unlock()
			// A sample reads every shard twice: at millions of them it takes a while, and
			// the loop then skips ticks to keep to a twentieth of a core (columns carry
			// their times, so the console places them where they belong).
			next = start.Add(20 * time.Since(start))
		}
	}
}

// heatSample takes one column: every table's shards in key order, compacted. It reads the
// shards twice, first for the totals the compaction weighs by, and keeps no list of them all
// (at millions of shards that list would be the largest thing the primary allocates). It
// stops between tables when ctx ends.
func (s *Server) heatSample(ctx context.Context, now time.Time) (heatColumn, error) {
	tables := s.fsm.Tables()
	slices.SortFunc(tables, func(a, b *pcspb.Table) int { return cmp.Compare(a.Id, b.Id) })
	each := func(fn func(heatBucket)) {
		for _, t := range tables {
			if ctx.Err() != nil {
				return
			}
			shards := s.fsm.TableShards(t.Id)
			s.live.Read(func(q cluster.Reader) {
				for _, sh := range shards {
					ld := q.ShardLoad(sh.Id)
					fn(heatBucket{table: t.Id, start: sh.Start, partition: sh.Partition,
						v: [4]float32{float32(ld.Reads), float32(ld.Writes), float32(ld.ReadBytes), float32(ld.WriteBytes)}})
				}
			})
		}
	}
	var c heatCompactor
	each(c.count)
	c.start(heatmapBuckets)
	each(c.add)
	if err := ctx.Err(); err != nil {
		return heatColumn{}, err
	}
	return heatColumn{atMs: now.UnixMilli(), buckets: c.out}, nil
}

// compactHeat merges adjacent items of one table into at most about n runs: an item's weight is
// its share of the items plus its largest share of any measure's total (for a query's rows, v
// holds their peak over time), and a run closes before its weight would pass 2/n. So a hot item
// stands alone and cold runs fold together. Merged values add up.
func compactHeat(items []heatBucket, n int) []heatBucket {
	var c heatCompactor
	for _, it := range items {
		c.count(it)
	}
	if c.items <= n {
		return items
	}
	c.start(n)
	for _, it := range items {
		c.add(it)
	}
	return c.out
}

// heatCompactor is compactHeat over a stream that is passed twice: to count, then to add.
type heatCompactor struct {
	items int
	total [4]float64
	keep  bool // no more items than runs: each stays alone
	limit float64
	acc   float64
	out   []heatBucket
}

func (c *heatCompactor) count(it heatBucket) {
	c.items++
	for m := range c.total {
		c.total[m] += float64(it.v[m])
	}
}

func (c *heatCompactor) start(n int) {
	c.keep = c.items <= n
	c.limit = 2 / float64(n)
	c.out = make([]heatBucket, 0, min(c.items, n+8))
}

func (c *heatCompactor) add(it heatBucket) {
	last := len(c.out) - 1
	if c.keep {
		c.out = append(c.out, it)
		return
	}
	w := 1 / float64(c.items)
	var share float64
	for m := range c.total {
		if c.total[m] > 0 {
			share = max(share, float64(it.v[m])/c.total[m])
		}
	}
	w += share
	if last < 0 || c.out[last].table != it.table || c.acc+w > c.limit {
		c.out = append(c.out, it)
		c.acc = w
		return
	}
	for m := range c.out[last].v {
		c.out[last].v[m] += it.v[m]
	}
	c.acc += w
}

// heatQuery is a request for part of the heatmap.
type heatQuery struct {
	Metric   string // one of heatMetrics
	Table    uint64 // 0: every table
	Start    []byte // within Table: the key range to zoom into (nil: from the start / to the end)
	End      []byte
	FromMs   int64 // time window (0: all kept)
	ToMs     int64
	Rows     int // the most rows to return
	TableFor func(id uint64) string
}

// heatRow is one row of a query's answer.
type heatRow struct {
	Table     string `json:"table"`
	Partition string `json:"partition"`
	LastPart  string `json:"last_partition,omitempty"` // a merged row's last partition, if another
	Start     string `json:"start"`                    // hex key, table-relative
	End       string `json:"end"`                      // "" : the table's end
	Buckets   int    `json:"buckets"`                  // key-axis buckets merged into this row
}

// heatAnswer is the heatmap's JSON.
type heatAnswer struct {
	Metric   string      `json:"metric"`
	Times    []int64     `json:"times_ms"`
	Rows     []heatRow   `json:"rows"`
	Values   [][]float32 `json:"values"` // [column][row]
	Max      float32     `json:"max"`
	Interval int64       `json:"interval_ms"`
}

// axisKey is a key-axis boundary: a table and a key in it.
type axisKey struct {
	table     uint64
	key       []byte
	partition string
}

func axisCmp(a, b axisKey) int {
	if c := cmp.Compare(a.table, b.table); c != 0 {
		return c
	}
	return bytes.Compare(a.key, b.key)
}

// query answers q from the columns kept.
func (h *heatmap) query(q heatQuery) (*heatAnswer, error) {
	m := slices.Index(heatMetrics, q.Metric)
	if m < 0 {
		return nil, fmt.Errorf("%w: metric %q is not one of %v", ErrInvalid, q.Metric, heatMetrics)
	}
	if q.Rows <= 0 || q.Rows > heatmapMaxRows {
		return nil, fmt.Errorf("%w: rows %d must be in 1..%d", ErrInvalid, q.Rows, heatmapMaxRows)
	}
	h.mu.Lock()
	all := h.cols.items()
	h.mu.Unlock()
	var cols []heatColumn
	for _, c := range all {
		if (q.FromMs == 0 || c.atMs >= q.FromMs) && (q.ToMs == 0 || c.atMs <= q.ToMs) {
			cols = append(cols, c)
		}
	}
	in := func(b heatBucket) bool {
		if q.Table == 0 {
			return true
		}
		return b.table == q.Table
	}
	// The key axis: every bucket start in the window. Samples share the catalog's key slices,
	// so most repeats are dropped by identity before the sort.
	type ident struct {
		table uint64
		p     *byte
		n     int
	}
	seen := map[ident]struct{}{}
	var axis []axisKey
	for _, c := range cols {
		for _, b := range c.buckets {
			if !in(b) {
				continue
			}
			id := ident{table: b.table, n: len(b.start)}
			if len(b.start) > 0 {
				id.p = &b.start[0]
			}
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
			axis = append(axis, axisKey{b.table, b.start, b.partition})
		}
	}
	slices.SortFunc(axis, axisCmp)
	axis = slices.CompactFunc(axis, func(a, b axisKey) bool { return axisCmp(a, b) == 0 })
	// Samples whose cold runs were cut at different shards make a long axis: past heatmapMaxAxis
	// boundaries keep every k-th (and each table's first), which only coarsens the rows (they
	// are merged down to q.Rows anyway) and bounds the work at columns x heatmapMaxAxis.
	if len(axis) > heatmapMaxAxis {
		step := (len(axis) + heatmapMaxAxis - 1) / heatmapMaxAxis
		kept := axis[:0]
		for i, a := range axis {
			if i%step == 0 || len(kept) == 0 || kept[len(kept)-1].table != a.table {
				kept = append(kept, a)
			}
		}
		axis = kept
	}
	// Per column, each bucket's value of the measure spread evenly over the axis rows its range
	// touches (so every column keeps its total).
	vals := make([][]float32, len(cols))
	flat := make([]float32, len(cols)*len(axis))
	for ci, c := range cols {
		row := flat[ci*len(axis) : (ci+1)*len(axis)]
		bs := c.buckets
		if q.Table != 0 {
			bs = slices.DeleteFunc(slices.Clone(bs), func(b heatBucket) bool { return !in(b) })
		}
		j := 0 // the last axis row at or before the bucket's start (buckets come in key order)
		for i, b := range bs {
			start := axisKey{table: b.table, key: b.start}
			for j+1 < len(axis) && axisCmp(axis[j+1], start) <= 0 {
				j++
			}
			lo := j // the row holding the start, else the table's first
			for lo < len(axis) && axis[lo].table < b.table {
				lo++
			}
			if lo >= len(axis) || axis[lo].table != b.table {
				continue
			}
			hi := lo + 1 // past the rows that start before the bucket's end
			for hi < len(axis) && axis[hi].table == b.table && (i+1 == len(bs) || bs[i+1].table != b.table || bytes.Compare(axis[hi].key, bs[i+1].start) < 0) {
				hi++
			}
			for r := lo; r < hi; r++ {
				row[r] += b.v[m] / float32(hi-lo)
			}
		}
		vals[ci] = row
	}
	// Zoom: keep the rows in [Start, End) of the table.
	keep := make([]bool, len(axis))
	for r, a := range axis {
		end := []byte(nil)
		if r+1 < len(axis) && axis[r+1].table == a.table {
			end = axis[r+1].key
		}
		keep[r] = (q.End == nil || bytes.Compare(a.key, q.End) < 0) && (q.Start == nil || end == nil || bytes.Compare(end, q.Start) > 0)
	}
	// Merge the axis down to q.Rows, judging each row by its peak of the measure over the window.
	items := make([]heatBucket, 0, len(axis))
	idx := make([]int, 0, len(axis))
	for r, a := range axis {
		if !keep[r] {
			continue
		}
		var p float32
		for ci := range cols {
			p = max(p, vals[ci][r])
		}
		items = append(items, heatBucket{table: a.table, start: a.key, partition: a.partition, v: [4]float32{p}})
		idx = append(idx, r)
	}
	merged := compactHeat(items, q.Rows)
	// Map each merged row to the axis rows it took.
	ans := &heatAnswer{Metric: q.Metric, Times: make([]int64, len(cols)), Values: make([][]float32, len(cols))}
	groups := make([][2]int, len(merged)) // [first, past] into items
	gi := 0
	for i := range items {
		if gi+1 < len(merged) && items[i].table == merged[gi+1].table && bytes.Equal(items[i].start, merged[gi+1].start) {
			gi++
			groups[gi][0] = i
		}
		groups[gi][1] = i + 1
	}
	for _, rg := range groups {
		first, last := items[rg[0]], items[rg[1]-1]
		row := heatRow{Table: q.TableFor(first.table), Partition: first.partition, Start: fmt.Sprintf("%x", first.start), Buckets: rg[1] - rg[0]}
		if last.partition != first.partition {
			row.LastPart = last.partition
		}
		if r := idx[rg[1]-1]; r+1 < len(axis) && axis[r+1].table == last.table {
			row.End = fmt.Sprintf("%x", axis[r+1].key)
		}
		ans.Rows = append(ans.Rows, row)
	}
	for ci, c := range cols {
		ans.Times[ci] = c.atMs
		col := make([]float32, len(groups))
		for g, rg := range groups {
			for i := rg[0]; i < rg[1]; i++ {
				col[g] += vals[ci][idx[i]]
			}
			ans.Max = max(ans.Max, col[g])
		}
		ans.Values[ci] = col
	}
	return ans, nil
}
