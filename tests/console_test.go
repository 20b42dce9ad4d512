package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// browser starts Debian's headless Chromium (.ci/run installs it) and returns a tab's context
// and the console errors and uncaught exceptions its pages raised so far.
func browser(t testing.TB) (context.Context, func() []string) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the console tests need Debian's chromium (apt-get install chromium; .ci/run installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	tctx, cancelRun := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(cancelRun)
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(tctx) // starts the browser; subscribed from here on
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				mu.Lock()
				errs = append(errs, m.String())
				mu.Unlock()
			}
		}
	}()
	if err := chromedp.Do(tctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return tctx, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), errs...) }
}

// screenshotDir is where the console test writes a screenshot of each page:
// $PCS_SCREENSHOTS, or a directory under the system's temporary one (logged).
func screenshotDir(t testing.TB) string {
	dir := os.Getenv("PCS_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "pcs-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsoleInBrowser drives the web console in a real headless Chromium against a live
// cluster of real processes (3 PCS, 4 data nodes), through a member that is not the primary
// (so every view is forwarded, the heatmap proxied): every page loads with no console error and
// shows the cluster's real members, nodes, tables and shards; the heatmap's hottest range is the
// partition the test makes hot; a drain clicked in the console drains the node.
func TestConsoleInBrowser(t *testing.T) {
	ctx, consoleErrors := browser(t)
	pc := startCluster(t, 3, "--node-warmup", "300ms", "--heatmap-interval", "300ms")
	c := pc.client()
	primary := pc.primary(c)
	nodes := startNodeProcs(t, pc, 4)
	waitFor(t, 30*time.Second, "4 data nodes up", func() bool { return upNodes(ctx, c) == 4 })
	var follower *proc
	for _, p := range pc.procs {
		if p != primary {
			follower = p
			break
		}
	}
	pcsctl := pcsctlFor(t, pc)
	createRangeTable(ctx, t, c, pcsctl, "hot", "1000", "2000", "3000", "MAXVALUE")
	// Keep the shards where they are while the heatmap is read (load-based moves and splits
	// would be right, but make the test's picture move).
	pcsctl("config", "set", "paused-schedulers", "hot")
	kv := c.KV("hot")
	hot := startWriters(ctx, kv, 6, func(i int) []byte { return int64Key(2000 + i%1000) })
	cold := startWriters(ctx, kv, 1, func(i int) []byte { return int64Key(i % 1000) })
	defer func() {
		for _, w := range []*writers{hot, cold} {
			w.stop.Store(true)
			w.wg.Wait()
			w.check(t)
		}
	}()

	base := "http://" + follower.http + "/console/"
	shots := screenshotDir(t)
	visit := func(name, hash string, check func() error) {
		t.Helper()
		var last error
		deadline := time.Now().Add(30 * time.Second)
		err := chromedp.Do(ctx, chromedp.Navigate(base+hash), chromedp.WaitVisible(chromedp.CSS(`#page[data-loaded="true"]`)))
		for err == nil && time.Now().Before(deadline) {
			if last = check(); last == nil {
				break
			}
			time.Sleep(200 * time.Millisecond) // the page redraws itself every few seconds
		}
		if err == nil {
			err = last
		}
		if png, shotErr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); shotErr == nil {
			os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		}
		if err != nil {
			t.Fatalf("page %s: %v", name, err)
		}
		if errs := consoleErrors(); len(errs) > 0 {
			t.Fatalf("page %s raised console errors: %v", name, errs)
		}
	}
	text := func(sel string) string {
		s, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		return s
	}
	eval := func(expr string) any {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		if err != nil {
			return err.Error()
		}
		return v
	}
	contains := func(sel string, want ...string) error {
		got := text(sel)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return fmt.Errorf("%s does not show %q (shows %q)", sel, w, got)
			}
		}
		return nil
	}

	// Cluster: the members, with the real primary.
	var names []string
	for _, p := range pc.procs {
		names = append(names, p.name, p.client)
	}
	visit("cluster", "#/", func() error {
		if err := contains("#page", names...); err != nil {
			return err
		}
		return contains("#card-primary", primary.name)
	})
	// Nodes: every data node's address, up.
	nl, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	visit("nodes", "#/nodes", func() error {
		var want []string
		for _, n := range nodes {
			want = append(want, n.addr)
		}
		if err := contains("#page", want...); err != nil {
			return err
		}
		ups := eval(`[...document.querySelectorAll(".node-state")].filter(e => e.textContent === "up").length`)
		if ups != float64(len(nl.Nodes)) {
			return fmt.Errorf("%d nodes shown up, want %d", ups, len(nl.Nodes))
		}
		return nil
	})
	// Tables and a table's shards: the same shards as the catalog's.
	visit("tables", "#/tables", func() error { return contains("#page", "hot", "range(id)") })
	shards, err := c.ScanShards(ctx, "hot", nil, nil, client.WithLimit(1000))
	if err != nil {
		t.Fatal(err)
	}
	visit("table", "#/table/hot", func() error {
		rows := eval(`document.querySelectorAll("table.grid tbody tr").length`)
		if rows != float64(len(shards.Shards)) {
			return fmt.Errorf("%d shard rows, the catalog has %d shards", rows, len(shards.Shards))
		}
		var want []string
		for _, s := range shards.Shards {
			want = append(want, s.Partition)
		}
		return contains("#page", want...)
	})
	// Shard finder: table + key -> the shard the catalog routes the key to.
	sh, err := c.GetShard(ctx, "hot", int64Key(2500))
	if err != nil {
		t.Fatal(err)
	}
	visit("shard", "#/shard?table=hot&key=2500", func() error {
		if err := contains("#card-shard-id", fmt.Sprint(sh.Shard.Id)); err != nil {
			return err
		}
		return contains("#found", "p2", "Replicas", "Lag")
	})
	visit("operators", "#/operators", func() error { return contains("#page", "balance-replica", "hot", "paused", "Schedulers") })
	visit("events", "#/events", func() error {
		return contains("#page", "table hot created", "registered at "+nodes[0].addr)
	})
	// The heatmap: the brightest range is p2, which the writers made hot.
	visit("heatmap", "#/heatmap", func() error {
		part := eval(`(document.querySelector("#heat-hot-label") || {dataset: {}}).dataset.partition || ""`)
		if part != "p2" {
			return fmt.Errorf("hottest range is %q, want p2 (%s)", part, text("#heat-hottest"))
		}
		return nil
	})

	// Drain from the console: the node is marked offline and its replicas move away.
	victim := nl.Nodes[0].Node.Id
	btn := fmt.Sprintf("#drain-%d", victim)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#/nodes"), chromedp.WaitVisible(chromedp.CSS(btn)),
		chromedp.Click(chromedp.CSS(btn)), chromedp.WaitVisible(chromedp.CSS(btn+".confirm")), chromedp.Click(chromedp.CSS(btn))); err != nil {
		t.Fatalf("clicking drain: %v", err)
	}
	waitFor(t, 90*time.Second, fmt.Sprintf("node %d drained", victim), func() bool {
		resp, err := c.ListNodes(ctx)
		if err != nil {
			return false
		}
		for _, n := range resp.Nodes {
			if n.Node.Id == victim {
				return n.Node.Offline && n.Shards == 0
			}
		}
		return false
	})
	visit("nodes-drained", "#/nodes", func() error {
		return contains(fmt.Sprintf(`.node-state[data-node="%d"]`, victim), "offline")
	})
	visit("events-after-drain", "#/events", func() error {
		return contains("#page", fmt.Sprintf("node %d set offline (draining)", victim), "operator ")
	})
	t.Logf("screenshots in %s", shots)
}

// BenchmarkConsolePages: the console against one PCS member holding 100,000 shards (25 tables
// of 4,000 hash partitions, 3 replicas, on 6 simulated data nodes) with a full heatmap ring:
// the time from navigation until each page has drawn its data in headless Chromium, and the
// time of each JSON call the pages make, median of 5 (ms). Run it with
// go test ./tests -run XXX -bench ConsolePages -benchtime 1x (about 3 minutes).
func BenchmarkConsolePages(b *testing.B) {
	const tables, perTable = 25, 4000
	ctx, _ := browser(b)
	pc := startCluster(b, 1, "--heatmap-interval", "200ms", "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	hb := exec.CommandContext(ctx, filepath.Join(binDir, "pcsbench"), "heartbeat", "--endpoints", pc.procs[0].client, "--nodes", "6", "--duration", "30m")
	if err := hb.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hb.Process.Kill(); hb.Wait() })
	waitFor(b, 30*time.Second, "6 nodes up", func() bool { return upNodes(ctx, c) == 6 })
	for i := range tables {
		name := fmt.Sprintf("t%02d", i)
		if _, err := c.CreateTable(ctx, &pcspb.Table{Name: name, Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "id", Type: "int64"}},
			Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: perTable}}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 2*time.Minute, name+" public", func() bool {
			tr, err := c.GetTable(ctx, name)
			return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
		})
	}
	base := "http://" + pc.procs[0].http + "/console/"
	waitFor(b, 3*time.Minute, "a full heatmap ring", func() bool {
		resp, err := http.Get(base + "api/heatmap")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h struct {
			Times []int64 `json:"times_ms"`
		}
		json.NewDecoder(resp.Body).Decode(&h)
		return len(h.Times) >= 360
	})
	median := func(f func() error) float64 {
		var ds []time.Duration
		for range 5 {
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return float64(ds[2].Microseconds()) / 1000
	}
	b.ResetTimer()
	for b.Loop() {
		for _, api := range []string{"overview", "nodes", "tables", "table?name=t00", "shard?table=t00&key=42", "operators", "events", "heatmap"} {
			ms := median(func() error {
				resp, err := http.Get(base + "api/" + api)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
					return fmt.Errorf("%s: %d %v", api, resp.StatusCode, err)
				}
				return nil
			})
			b.ReportMetric(ms, "ms/api-"+strings.SplitN(api, "?", 2)[0])
		}
		for _, pg := range []struct{ name, hash string }{{"cluster", "#/"}, {"nodes", "#/nodes"}, {"tables", "#/tables"}, {"table", "#/table/t00"},
			{"shard", "#/shard?table=t00&key=42"}, {"operators", "#/operators"}, {"events", "#/events"}, {"heatmap", "#/heatmap"}} {
			ms := median(func() error {
				return chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(base+pg.hash),
					chromedp.WaitVisible(chromedp.CSS(`#page[data-loaded="true"][data-page="`+pg.name+`"]`)))
			})
			b.ReportMetric(ms, "ms/page-"+pg.name)
		}
	}
}
