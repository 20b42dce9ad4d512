// Package deploy holds the Grafana dashboard and the Prometheus alert rules (no Go code); its
// tests check them: promtool's unit tests of every rule, and every metric they name exported
// by a live cluster.
package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/kvnode"
	"github.com/postdb/pcs/keyenc"
	"github.com/postdb/pcs/server"
)

// TestAlertRules runs promtool's unit tests of the alert rules (Debian's prometheus package
// ships promtool; .ci/run installs it).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found (apt-get install prometheus): the alert rules cannot be tested")
	}
	for _, args := range [][]string{{"check", "rules", "pcs-alerts.yml"}, {"test", "rules", "pcs-alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var metricName = regexp.MustCompile(`\b(?:pcs|pcsnode|process)_[a-z0-9_]+`)

// namedMetrics lists the PCS, data-node and process metrics the dashboard's queries and the
// alert rules' expressions name.
func namedMetrics(t *testing.T) (pcs, node []string) {
	t.Helper()
	var exprs []string
	b, err := os.ReadFile("grafana/pcs-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	b, err = os.ReadFile("prometheus/pcs-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("rules: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			if seen[m] {
				continue
			}
			seen[m] = true
			switch {
			case strings.HasPrefix(m, "pcsnode_"):
				node = append(node, m)
			case strings.HasPrefix(m, "pcs_"):
				pcs = append(pcs, m)
			default: // process_*: both export them
				pcs, node = append(pcs, m), append(node, m)
			}
		}
	}
	if len(pcs) < 20 || len(node) < 8 {
		t.Fatalf("only %d PCS and %d node metrics named: the files were not read as meant", len(pcs), len(node))
	}
	return pcs, node
}

// scrape returns the sample names an HTTP /metrics endpoint exports.
func scrape(ctx context.Context, addr string) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return names, sc.Err()
}

// TestDashboardAndRulesNameLiveMetrics: every metric the dashboard and the alert rules name is
// exported by a live PCS primary or data node once the cluster has served some work.
func TestDashboardAndRulesNameLiveMetrics(t *testing.T) {
	pcsWant, nodeWant := namedMetrics(t)
	dir := t.TempDir()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	log := slog.New(slog.DiscardHandler)
	cfg := server.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Logger = "p1", filepath.Join(dir, "pcs"), log
	cfg.ClientListener, cfg.Raft.PeerListener, cfg.HTTPListener = listen(), listen(), listen()
	cfg.Nodes = cluster.Config{DisconnectAfter: 300 * time.Millisecond, DownAfter: time.Second, Warmup: 300 * time.Millisecond}
	cfg.DDLInterval = 20 * time.Millisecond
	pcs, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pcs.Start()
	t.Cleanup(func() { pcs.Close() })
	var nodes []*kvnode.Server
	for i := 0; i < 3; i++ {
		n, err := kvnode.Start(kvnode.Config{DataDir: filepath.Join(dir, fmt.Sprint("n", i)), Listener: listen(), HTTPAddr: "127.0.0.1:0",
			Endpoints: []string{pcs.ClientAddr()}, Labels: map[string]string{"zone": fmt.Sprint("z", i)}, HeartbeatInterval: 50 * time.Millisecond, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	c, err := client.New([]string{pcs.ClientAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("three data nodes up", func() bool {
		resp, err := c.ListNodes(ctx)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == 3
	})
	// Some work of every kind: DDL, rows, TSO, ids.
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "m", Replicas: 3, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 3}}); err != nil {
		t.Fatal(err)
	}
	waitFor("the table public", func() bool {
		tr, err := c.GetTable(ctx, "m")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	cols := []keyenc.Column{{Type: keyenc.Int64}}
	for i := range 30 {
		k, _ := keyenc.Encode(nil, cols, []keyenc.Value{keyenc.I64(int64(i))})
		if err := c.KV("m").Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.GetTS(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AllocIDs(ctx, "txn", 10); err != nil {
		t.Fatal(err)
	}

	var missing []string
	mctx, mcancel := context.WithTimeout(ctx, 20*time.Second)
	defer mcancel()
	for exported := false; !exported; {
		select {
		case <-mctx.Done():
			t.Fatalf("named but not exported: %v", missing)
		case <-time.After(50 * time.Millisecond):
		}
		exported = func() bool {
			missing = missing[:0]
			got, err := scrape(mctx, pcs.HTTPAddr())
			if err != nil {
				missing = append(missing, err.Error())
				return false
			}
			for _, n := range nodes {
				ng, err := scrape(mctx, n.HTTPAddr())
				if err != nil {
					missing = append(missing, err.Error())
					return false
				}
				for _, m := range nodeWant {
					if !ng[m] {
						missing = append(missing, m+" (data node)")
					}
				}
			}
			for _, m := range pcsWant {
				if !got[m] {
					missing = append(missing, m+" (PCS)")
				}
			}
			slices.Sort(missing)
			missing = slices.Compact(missing)
			return len(missing) == 0
		}()
	}
}
