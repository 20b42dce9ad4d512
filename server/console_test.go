package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/meta"
)

// TestCompactHeat: cold runs fold together, a hot shard keeps a bucket of its own, no bucket
// spans two tables, and every measure's total is kept.
func TestCompactHeat(t *testing.T) {
	var items []heatBucket
	for tbl := uint64(1); tbl <= 2; tbl++ {
		for i := 0; i < 5000; i++ {
			v := float32(1)
			if tbl == 2 && i == 1234 {
				v = 5000 // the hot one
			}
			items = append(items, heatBucket{table: tbl, start: []byte(fmt.Sprintf("%06d", i)), partition: "p", v: [4]float32{v, 2 * v, 0, 0}})
		}
	}
	out := compactHeat(items, 256)
	if len(out) > 256+2 || len(out) < 64 {
		t.Fatalf("%d buckets for 10000 items and a target of 256", len(out))
	}
	var sum [4]float64
	hot := false
	for i, b := range out {
		for m := range sum {
			sum[m] += float64(b.v[m])
		}
		if b.table == 2 && string(b.start) == "001234" {
			hot = b.v[0] == 5000
		}
		if i > 0 && out[i-1].table == b.table && bytes.Compare(out[i-1].start, b.start) >= 0 {
			t.Fatalf("buckets out of key order at %d", i)
		}
	}
	if !hot {
		t.Fatal("the hot shard was merged with cold ones")
	}
	if sum[0] != 9999+5000 || sum[1] != 2*(9999+5000) {
		t.Fatalf("totals %v, want %v and %v", sum, 9999+5000, 2*(9999+5000))
	}
	// The first bucket of table 2 starts at its first shard: no bucket crosses tables.
	for i, b := range out {
		if b.table == 2 {
			if string(b.start) != "000000" {
				t.Fatalf("table 2's first bucket starts at %q", b.start)
			}
			if i == 0 || out[i-1].table != 1 {
				t.Fatal("table order lost")
			}
			break
		}
	}
}

// TestHeatQuery: columns with different boundaries (a split between them) go on one key axis,
// each column's total is kept, the rows asked for bound the answer, the hot range is the
// brightest row, a zoom keeps only its range, and bad queries are refused.
func TestHeatQuery(t *testing.T) {
	h := newHeatmap()
	names := func(id uint64) string { return fmt.Sprintf("t%d", id) }
	// Before the split: shards [a, m) and [m, end) of table 1. After: [a, g), [g, m), [m, end).
	h.cols.push(heatColumn{atMs: 1000, buckets: []heatBucket{
		{table: 1, start: []byte("a"), partition: "p0", v: [4]float32{0, 10, 0, 0}},
		{table: 1, start: []byte("m"), partition: "p1", v: [4]float32{0, 2, 0, 0}},
	}})
	h.cols.push(heatColumn{atMs: 2000, buckets: []heatBucket{
		{table: 1, start: []byte("a"), partition: "p0", v: [4]float32{0, 1, 0, 0}},
		{table: 1, start: []byte("g"), partition: "p0", v: [4]float32{0, 30, 0, 0}},
		{table: 1, start: []byte("m"), partition: "p1", v: [4]float32{0, 2, 0, 0}},
	}})
	ans, err := h.query(heatQuery{Metric: "writes", Rows: 16, TableFor: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Rows) != 3 || len(ans.Values) != 2 {
		t.Fatalf("rows %+v, %d columns; want 3 rows, 2 columns", ans.Rows, len(ans.Values))
	}
	for c, want := range []float32{12, 33} {
		var got float32
		for _, v := range ans.Values[c] {
			got += v
		}
		if got != want {
			t.Fatalf("column %d adds up to %v, want %v", c, got, want)
		}
	}
	if ans.Values[0][0] != 5 || ans.Values[0][1] != 5 || ans.Values[1][1] != 30 || ans.Max != 30 {
		t.Fatalf("values %v max %v", ans.Values, ans.Max)
	}
	if r := ans.Rows[1]; r.Table != "t1" || r.Partition != "p0" || r.Start != fmt.Sprintf("%x", "g") || r.End != fmt.Sprintf("%x", "m") {
		t.Fatalf("row 1 %+v", r)
	}
	// Zoom into [g, m): one row.
	z, err := h.query(heatQuery{Metric: "writes", Rows: 16, Table: 1, Start: []byte("g"), End: []byte("m"), TableFor: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(z.Rows) != 1 || z.Rows[0].Start != fmt.Sprintf("%x", "g") {
		t.Fatalf("zoomed rows %+v", z.Rows)
	}
	// Fewer rows than the axis has: merged, totals kept.
	m, err := h.query(heatQuery{Metric: "writes", Rows: 1, TableFor: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Rows) > 2 {
		t.Fatalf("%d rows for 1 asked", len(m.Rows))
	}
	// Samples cut at different shards: the axis is coarsened, every column keeps its total and
	// the hot range is still the brightest row.
	h = newHeatmap()
	var keys [][]byte
	for i := range 20_000 {
		keys = append(keys, []byte(fmt.Sprintf("%06d", i)))
	}
	for c := range 50 {
		var bs []heatBucket
		for i := c; i < len(keys); i += 3 + c%5 { // a different cut in every sample
			v := float32(1)
			if i >= 10_000 && i < 10_100 {
				v = 1000
			}
			bs = append(bs, heatBucket{table: 1, start: keys[i], partition: "p", v: [4]float32{0, v, 0, 0}})
		}
		if c > 0 {
			bs[0].start = keys[0]
		}
		h.cols.push(heatColumn{atMs: int64(c), buckets: bs})
	}
	wide, err := h.query(heatQuery{Metric: "writes", Rows: 64, TableFor: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(wide.Rows) > 2*64+1 {
		t.Fatalf("%d rows for 64 asked", len(wide.Rows))
	}
	for c, col := range wide.Values {
		var got, want float32
		for _, v := range col {
			got += v
		}
		for _, b := range h.cols.items()[c].buckets {
			want += b.v[1]
		}
		if d := got - want; d > want/1000 || d < -want/1000 {
			t.Fatalf("column %d adds up to %v, want %v", c, got, want)
		}
	}
	best := 0
	for r := range wide.Rows {
		if wide.Values[0][r] > wide.Values[0][best] {
			best = r
		}
	}
	if hot := wide.Rows[best]; hot.Start > fmt.Sprintf("%x", "010100") || (hot.End != "" && hot.End < fmt.Sprintf("%x", "010000")) {
		t.Fatalf("the brightest row is [%s, %s), not the hot range", hot.Start, hot.End)
	}
	for _, q := range []heatQuery{{Metric: "nope", Rows: 8}, {Metric: "writes", Rows: 0}, {Metric: "writes", Rows: heatmapMaxRows + 1}} {
		q.TableFor = names
		if _, err := h.query(q); !errors.Is(err, ErrInvalid) {
			t.Errorf("query %+v: %v, want ErrInvalid", q, err)
		}
	}
}

// TestEventLogRings: a burst of shard events cannot push cluster events out; the newest are
// kept, newest first, filtered by kind.
func TestEventLogRings(t *testing.T) {
	l := newEventLog()
	l.add(meta.Event{Index: 1, AtMs: 1, Kind: "table", Text: "table t created"})
	for i := 0; i < 3*shardEventsKept; i++ {
		l.add(meta.Event{Index: uint64(2 + i), AtMs: uint64(2 + i), Kind: "shard", Text: "moved"})
	}
	all := l.recent(nil, clusterEventsKept+shardEventsKept)
	if len(all) != shardEventsKept+1 || all[0].Index != uint64(1+3*shardEventsKept) || all[len(all)-1].Kind != "table" {
		t.Fatalf("%d events, first %+v, last %+v", len(all), all[0], all[len(all)-1])
	}
	if got := l.recent([]string{"table"}, 10); len(got) != 1 || got[0].Text != "table t created" {
		t.Fatalf("table events %+v", got)
	}
}

// TestConsoleAPI: the console's JSON against a real one-member PCS (in process, real TCP):
// reads answer, bad input is refused with a clear error and changes nothing, actions need the
// console header, and the page itself is served.
func TestConsoleAPI(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	s := tc.primary()
	tc.startNodes(3, 3)
	c := tc.client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CreateTable(ctx, rangeTable("ev", "10", "20")); err != nil {
		t.Fatal(err)
	}
	h := s.httpHandler()
	do := func(method, path, body string, hdr bool) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if hdr {
			req.Header.Set(consoleHeader, "1")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var out map[string]any
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, w.Body)
			}
		}
		return w.Code, out
	}
	for _, p := range []string{"overview", "nodes", "tables", "table?name=ev", "shard?table=ev&key=15,7", "operators", "events", "heatmap"} {
		if code, out := do("GET", "/console/api/"+p, "", false); code != http.StatusOK {
			t.Fatalf("%s: %d %v", p, code, out)
		}
	}
	if _, out := do("GET", "/console/api/shard?table=ev&key=15,7", "", false); !strings.HasPrefix(fmt.Sprint(out["shard"].(map[string]any)["partition"]), "p1") {
		t.Fatalf("key 15,7 found in %v", out["shard"])
	}
	for _, bad := range []struct {
		method, path, body string
		hdr                bool
		code               int
	}{
		{"GET", "/console/api/table?name=nosuch", "", false, http.StatusNotFound},
		{"GET", "/console/api/shard?table=ev&key=notanumber", "", false, http.StatusBadRequest},
		{"GET", "/console/api/shard?table=ev&key=1,2,3", "", false, http.StatusBadRequest},
		{"GET", "/console/api/events?limit=0", "", false, http.StatusBadRequest},
		{"GET", "/console/api/events?limit=x", "", false, http.StatusBadRequest},
		{"GET", "/console/api/heatmap?metric=bogus", "", false, http.StatusBadRequest},
		{"GET", "/console/api/heatmap?rows=-1", "", false, http.StatusBadRequest},
		{"GET", "/console/api/heatmap?table=nosuch", "", false, http.StatusNotFound},
		{"GET", "/console/api/heatmap?start=zz", "", false, http.StatusBadRequest},
		{"GET", "/console/api/heatmap?table=ev&start=zz", "", false, http.StatusBadRequest},
		{"POST", "/console/api/admin/drain", `{"node_id": 1}`, false, http.StatusBadRequest},
		{"POST", "/console/api/admin/drain", `{"node_id": -1}`, true, http.StatusBadRequest},
		{"POST", "/console/api/admin/drain", `{"node_id": 1.5}`, true, http.StatusBadRequest},
		{"POST", "/console/api/admin/drain", `not json`, true, http.StatusBadRequest},
		{"POST", "/console/api/admin/drain", `{"node_id": 999}`, true, http.StatusNotFound},
		{"POST", "/console/api/admin/scheduler", `{"name": "nosuch", "paused": true}`, true, http.StatusBadRequest},
		{"POST", "/console/api/admin/scheduler", `{"name": "hot", "paused": "yes"}`, true, http.StatusBadRequest},
		{"POST", "/console/api/admin/cancel-job", `{"table": "nosuch"}`, true, http.StatusNotFound},
	} {
		code, out := do(bad.method, bad.path, bad.body, bad.hdr)
		if code != bad.code || out["error"] == "" {
			t.Errorf("%s %s %s: %d %v, want %d and an error", bad.method, bad.path, bad.body, code, out, bad.code)
		}
	}
	for _, n := range s.fsm.DataNodes() {
		if n.Offline || n.Tombstone {
			t.Fatalf("node %d offline after refused console requests", n.Id)
		}
	}
	if len(s.scheduleConfig().Paused) != 0 || len(s.fsm.Tables()) != 1 {
		t.Fatal("refused console requests changed the schedule or the tables")
	}
	// An action with the header does what it says.
	if code, out := do("POST", "/console/api/admin/scheduler", `{"name": "hot", "paused": true}`, true); code != http.StatusOK {
		t.Fatalf("pause: %d %v", code, out)
	}
	if !s.scheduleConfig().Paused["hot"] {
		t.Fatal("the hot scheduler is not paused after the console paused it")
	}
	// The page and the redirect to it.
	req := httptest.NewRequest("GET", "/console/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "<title>PCS console</title>") {
		t.Fatalf("/console/: %d %.200s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusFound || w.Header().Get("Location") != "/console/" {
		t.Fatalf("/: %d %s", w.Code, w.Header().Get("Location"))
	}
}

// BenchmarkHeatmap100k: one sample's compaction of 100,000 shards (what the primary does each
// interval) and a query over a full ring of such samples (what the console asks every 5 s).
func BenchmarkHeatmap100k(b *testing.B) {
	const shards = 100_000
	items := make([]heatBucket, shards)
	for i := range items {
		v := float32(i % 7)
		if i/1000 == 42 {
			v = 500 // a hot range
		}
		items[i] = heatBucket{table: uint64(1 + i/25_000), start: []byte(fmt.Sprintf("%08d", i)), partition: fmt.Sprintf("p%d", i/1000), v: [4]float32{v, v, 64 * v, 64 * v}}
	}
	b.Run("sample", func(b *testing.B) {
		for b.Loop() {
			compactHeat(items, heatmapBuckets)
		}
	})
	h := newHeatmap()
	col := compactHeat(items, heatmapBuckets)
	for i := range heatmapColumns {
		h.cols.push(heatColumn{atMs: int64(i), buckets: col})
	}
	names := func(id uint64) string { return fmt.Sprint("t", id) }
	varied := newHeatmap()
	for i := range heatmapColumns { // loads that move, so every sample is cut at other shards
		moved := slices.Clone(items)
		for j := range moved {
			moved[j].v[1] = float32((j*7 + i*13) % 11)
		}
		varied.cols.push(heatColumn{atMs: int64(i), buckets: compactHeat(moved, heatmapBuckets)})
	}
	b.Run("query-varied", func(b *testing.B) {
		for b.Loop() {
			if _, err := varied.query(heatQuery{Metric: "writes", Rows: 96, TableFor: names}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("query", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.query(heatQuery{Metric: "writes", Rows: 96, TableFor: names}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
