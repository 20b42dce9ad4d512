package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/tracing"
)

// span is what the test reads of an exported span (stdouttrace's JSON).
type span struct {
	Name        string
	StartTime   time.Time
	SpanContext struct{ TraceID string }
	Resource    []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s span) attr(key string) string {
	for _, kv := range s.Resource {
		if kv.Key == key {
			return fmt.Sprint(kv.Value.Value)
		}
	}
	return ""
}

// readSpans reads every span exported to dir.
func readSpans(t *testing.T, dir string) []span {
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	var out []span
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var s span
			if json.Unmarshal(sc.Bytes(), &s) == nil && s.SpanContext.TraceID != "" {
				out = append(out, s)
			}
		}
		fh.Close()
	}
	return out
}

// TestTracingFollowsARowWrite: real processes; with trace-ratio 1 set once through PCS, one row
// write yields one trace with spans on the client, PCS (its routing lookups) and every replica
// (the primary's request and log entry, each replica's replication); with trace-ratio 0 a row
// write makes no span anywhere.
func TestTracingFollowsARowWrite(t *testing.T) {
	sc := startSchedCluster(t, 3, 2*time.Minute)
	pc, c, nodes, ctx := sc.pc, sc.c, sc.nodes, sc.ctx
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "tr", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "tr")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	dir := t.TempDir()
	for _, kv := range [][2]string{{"trace-exporter", "file:" + dir}, {"trace-ratio", "1"}} {
		if code, out := sc.pcsctl("node", "config", "set", kv[0], kv[1]); code != 0 {
			t.Fatalf("node config set %s: %s", kv[0], out)
		}
	}
	var ids []uint64
	resp, _ := c.ListNodes(ctx)
	for _, n := range resp.GetNodes() {
		ids = append(ids, n.Node.Id)
	}
	waitFor(t, 20*time.Second, "tracing on every node", func() bool { return appliedEverywhere(ctx, c, ids, "trace-ratio", "1") })
	waitFor(t, 20*time.Second, "PCS's exporter", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "pcs-*.jsonl"))
		return len(m) == 1
	})

	// A client of its own, tracing every operation to the same directory.
	tr := tracing.New("client")
	tr.SetRatio(1)
	if err := tr.SetExporter(ctx, "file:"+dir); err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	tc, err := client.New(pc.endpoints(), client.WithTracing(tr.Provider(), tr.Propagator()))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	seen := map[string]bool{} // trace ids already read
	write := func(k int) string {
		t.Helper()
		if err := tc.KV("tr").Put(ctx, rowKey(k), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := tr.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range readSpans(t, dir) {
			if s.Name == "TableKV.Put" && s.attr("service.name") == "client" && !seen[s.SpanContext.TraceID] {
				seen[s.SpanContext.TraceID] = true
				return s.SpanContext.TraceID
			}
		}
		t.Fatal("the client exported no span of its write")
		return ""
	}
	trace := write(1)
	// Every process the write reached: PCS (routing), the primary and both replicas.
	waitFor(t, 20*time.Second, "the write's spans from PCS and three data nodes", func() bool {
		pids := map[string]bool{}
		pcs := false
		for _, s := range readSpans(t, dir) {
			if s.SpanContext.TraceID != trace {
				continue
			}
			switch s.attr("service.name") {
			case "pcs":
				pcs = true
			case "pcsnode":
				pids[s.attr("process.pid")] = true
			}
		}
		return pcs && len(pids) == len(nodes)
	})
	var names []string
	for _, s := range readSpans(t, dir) {
		if s.SpanContext.TraceID == trace {
			names = append(names, s.attr("service.name")+":"+s.Name)
		}
	}
	for _, want := range []string{"pcsnode:pcs.v1.KV/Put", "pcsnode:kvnode.entry", "pcsnode:kvnode.store.write", "pcsnode:pcs.v1.KV/Replicate"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("the write's trace has no %s span: %v", want, names)
		}
	}
	t.Logf("one row write, one trace of %d spans: %v", len(names), names)

	// A DDL call's trace reaches the Raft write at the primary, and the DDL loop's own writes
	// (the table made public) are traced at ratio 1 too.
	if _, err := tc.CreateTable(ctx, &pcspb.Table{Name: "tr2", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}); err != nil {
		t.Fatal(err)
	}
	tr.ForceFlush(ctx)
	waitFor(t, 20*time.Second, "the create's Raft write and the DDL pass in the traces", func() bool {
		var create string
		apply, ddl := map[string]bool{}, false
		for _, s := range readSpans(t, dir) {
			switch {
			case s.Name == "pcs.v1.PCS/CreateTable" && s.attr("service.name") == "client":
				create = s.SpanContext.TraceID
			case s.Name == "pcs.raft.apply":
				apply[s.SpanContext.TraceID] = true
			case s.Name == "pcs.ddl":
				ddl = true
			}
		}
		return create != "" && apply[create] && ddl
	})

	// Off: at ratio 0 everywhere, a write makes no span; a traced write after it (the client at
	// ratio 1 again) shows the exporters have caught up.
	if code, out := sc.pcsctl("node", "config", "set", "trace-ratio", "0"); code != 0 {
		t.Fatalf("node config set trace-ratio 0: %s", out)
	}
	waitFor(t, 20*time.Second, "tracing off on every node", func() bool { return appliedEverywhere(ctx, c, ids, "trace-ratio", "0") })
	waitFor(t, 20*time.Second, "tracing off on every PCS member", func() bool {
		for _, p := range pc.procs {
			st, err := c.Status(ctx, p.client, false)
			if err != nil || st.Tracing["trace-ratio"] != "0" {
				return false
			}
		}
		return true
	})
	// Spans started before this moment may still be on their way to the files (exporters
	// batch); none may start after it.
	off := time.Now()
	tr.SetRatio(0)
	if err := tc.KV("tr").Put(ctx, rowKey(2), []byte("v")); err != nil {
		t.Fatal(err)
	}
	tr.SetRatio(1)
	sentinel := write(3)
	waitFor(t, 20*time.Second, "the sentinel write's spans from three data nodes", func() bool {
		pids := map[string]bool{}
		for _, s := range readSpans(t, dir) {
			if s.SpanContext.TraceID == sentinel && s.attr("service.name") == "pcsnode" {
				pids[s.attr("process.pid")] = true
			}
		}
		return len(pids) == len(nodes)
	})
	for _, s := range readSpans(t, dir) {
		if id := s.SpanContext.TraceID; s.StartTime.After(off) && id != sentinel {
			t.Fatalf("a span made at ratio 0: %s %s on %s at %v", id, s.Name, s.attr("service.name"), s.StartTime)
		}
	}
}
