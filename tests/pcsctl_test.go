package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPcsctlCatalog drives the catalog commands of the real pcsctl against a real pcs.
func TestPcsctlCatalog(t *testing.T) {
	pc := startCluster(t, 1, "--node-warmup", "200ms")
	c := pc.client()
	pc.primary(c)
	startMemNodes(t, pc.endpoints(), 3, 3)
	ep := "--endpoints=" + pc.procs[0].client
	waitFor(t, 10*time.Second, "three nodes up", func() bool {
		code, out := run(t, 10*time.Second, "pcsctl", ep, "node", "list")
		return code == 0 && strings.Count(out, " up ") == 3
	})
	ctl := func(args ...string) (int, string) {
		return run(t, 20*time.Second, "pcsctl", append([]string{ep}, args...)...)
	}
	if code, out := ctl("table", "create", "users", "--columns", "id:int64,name:string", "--hash-columns", "id", "--hash-partitions", "8", "--replicas", "3", "--isolation-label", "zone"); code != 0 {
		t.Fatalf("create from flags: %s", out)
	}
	spec := filepath.Join(t.TempDir(), "events.yaml")
	os.WriteFile(spec, []byte(`
name: events
replicas: 2
columns:
  - {name: day, type: int64}
  - {name: id, type: uint64}
partition:
  strategy: PARTITION_STRATEGY_RANGE
  columns: [day]
  ranges:
    - {name: old, less_than: ["100"]}
    - {name: new, less_than: ["MAXVALUE"]}
  sub: {strategy: PARTITION_STRATEGY_HASH, columns: [id], hash_partitions: 4}
`), 0o644)
	if code, out := ctl("table", "create", "-f", spec); code != 0 {
		t.Fatalf("create from a YAML file: %s", out)
	}
	code, out := ctl("-o", "json", "table", "list")
	var tables []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &tables) != nil || len(tables) != 2 {
		t.Fatalf("table list: %d %s", code, out)
	}
	// The nodes create the replicas; the tables become public.
	waitFor(t, 20*time.Second, "tables public", func() bool {
		_, out := ctl("table", "list")
		return strings.Count(out, "public") == 2
	})
	if code, out := ctl("health"); code != 0 || strings.Count(out, " ok ") != 2+3+1 || !strings.Contains(out, "0 of 16 shards under-replicated") {
		t.Fatalf("health (primary, member, 3 nodes, shards): exit %d\n%s", code, out)
	}
	code, out = ctl("-o", "json", "shard", "list", "events")
	var shards []struct {
		Partition string `json:"partition"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &shards) != nil || len(shards) != 8 || shards[0].Partition != "old/h0" {
		t.Fatalf("shard list: %d %s", code, out)
	}
	code, out = ctl("-o", "json", "shard", "route", "events", "150,7")
	if code != 0 || !strings.Contains(out, `"partition": "new/h`) {
		t.Fatalf("shard route: %d %s", code, out)
	}
	if code, out := ctl("node", "list"); code != 0 || strings.Count(out, "127.0.0.1:900") != 3 {
		t.Fatalf("node list: %s", out)
	}
	// Shard groups: a second table in users' group gets users' placement, leaf by leaf.
	if code, out := ctl("table", "create", "orders", "--columns", "id:int64", "--hash-columns", "id", "--hash-partitions", "8", "--replicas", "3", "--shard-group", "g1"); code != 0 {
		t.Fatalf("create orders: %s", out)
	}
	if code, out := ctl("table", "create", "lines", "--columns", "id:int64", "--hash-columns", "id", "--hash-partitions", "8", "--replicas", "3", "--shard-group", "g1"); code != 0 {
		t.Fatalf("create lines: %s", out)
	}
	if code, out := ctl("group", "list"); code != 0 || !strings.Contains(out, "g1") || !strings.Contains(out, "orders,lines") {
		t.Fatalf("group list: %s", out)
	}
	_, a := ctl("-o", "json", "shard", "list", "orders")
	_, b := ctl("-o", "json", "shard", "list", "lines")
	var sa, sb []struct {
		Replicas []uint64 `json:"replicas"`
	}
	json.Unmarshal([]byte(a), &sa)
	json.Unmarshal([]byte(b), &sb)
	if len(sa) != 8 || len(sb) != 8 {
		t.Fatalf("shards: %d and %d", len(sa), len(sb))
	}
	for i := range sa {
		if fmt.Sprint(sa[i].Replicas) != fmt.Sprint(sb[i].Replicas) {
			t.Fatalf("leaf %d of the group is not co-located: %v vs %v", i, sa[i].Replicas, sb[i].Replicas)
		}
	}
	if code, out := ctl("job", "list"); code != 0 {
		t.Fatalf("job list: %s", out)
	}
	// Node admin states: an offline node takes no new replicas; a node holding replicas cannot
	// be tombstoned; node show.
	if code, out := ctl("node", "set-state", "1", "offline"); code != 0 {
		t.Fatalf("offline: %s", out)
	}
	code, out = ctl("-o", "json", "node", "show", "1")
	var shown struct {
		State string `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil || shown.State != "offline" {
		t.Fatalf("node show: %s", out)
	}
	if code, out := ctl("table", "create", "x3", "--columns", "id:int64", "--replicas", "3"); code == 0 {
		t.Fatalf("3 replicas placed with one of 3 nodes offline: %s", out)
	}
	if code, out := ctl("node", "set-state", "1", "tombstone"); code == 0 {
		t.Fatalf("tombstoned a node that holds replicas: %s", out)
	}
	if code, out := ctl("node", "set-state", "1", "up"); code != 0 {
		t.Fatalf("back up: %s", out)
	}
	// Errors: one line, non-zero exit.
	for _, args := range [][]string{
		{"table", "create", "users", "--columns", "id:int64"},
		{"table", "create", "x", "--columns", "id:int64", "--replicas", "5"},
		{"table", "show", "nope"},
		{"shard", "route", "events", "notanumber"},
		{"table", "alter", "users", "add-partition", "p9"},
		{"table", "alter", "users", "add-partition", "p9", "--less-than", "1", "--value", "2"},
		{"table", "alter", "users", "set-replicas", "ten"},
		{"table", "alter", "users", "set-replicas", "0"},
		{"table", "alter", "users", "rename-partition", "p0"},
		{"table", "alter", "users", "drop-partition", "p0"},
		{"table", "alter", "nope", "truncate-partition", "p0"},
		{"table", "create", "iv", "--columns", "ts:timestamp", "--interval", "1d"},
		{"table", "create", "iv", "--columns", "ts:timestamp", "--range-column", "ts", "--interval", "1x"},
		{"table", "create", "iv", "--columns", "name:string", "--range-column", "name", "--interval", "1d"},
		{"row", "get", "users", "1,ada", "--consistency", "eventual"},
	} {
		code, out := ctl(args...)
		if code == 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("pcsctl %v: exit %d, output %q; want one error line", args, code, out)
		}
	}
}

// TestPcsctlStatusAndEndpointsEnv: status exits 1 while an endpoint is down (0 with
// --allow-down) and shows the cluster id; PCS_ENDPOINTS stands in for --endpoints.
func TestPcsctlStatusAndEndpointsEnv(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	pc.primary(c)
	eps := "--endpoints=" + strings.Join(pc.endpoints(), ",")
	code, out := run(t, 20*time.Second, "pcsctl", eps, "-o", "json", "status")
	var rows []struct {
		ClusterID      string `json:"cluster_id"`
		Primary        string `json:"primary"`
		ClusterVersion uint32 `json:"cluster_version"`
		CommandVersion uint32 `json:"command_version"`
		Version        string `json:"version"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 || len(rows[0].ClusterID) != 16 || rows[1].ClusterID != rows[0].ClusterID ||
		rows[0].CommandVersion == 0 || rows[0].Version == "" {
		t.Fatalf("status of a healthy cluster: exit %d\n%s", code, out)
	}
	pc.waitVersion(c)
	if _, out := run(t, 20*time.Second, "pcsctl", eps, "-o", "json", "status"); !strings.Contains(out, `"cluster_version"`) {
		t.Fatalf("status -o json shows no cluster_version:\n%s", out)
	}
	if code, out := run(t, 20*time.Second, "pcsctl", eps, "health"); code != 0 || strings.Count(out, " ok ") != 5 {
		t.Fatalf("health of a healthy cluster (primary, 3 members, shards): exit %d\n%s", code, out)
	}
	var follower *proc
	for _, p := range pc.procs {
		if p != pc.primary(c) {
			follower = p
		}
	}
	follower.kill()
	if code, out := run(t, 20*time.Second, "pcsctl", eps, "--timeout", "3s", "status"); code == 0 {
		t.Fatalf("status with an endpoint down exited 0:\n%s", out)
	}
	if code, out := run(t, 20*time.Second, "pcsctl", eps, "--timeout", "3s", "status", "--allow-down"); code != 0 {
		t.Fatalf("status --allow-down: exit %d\n%s", code, out)
	}
	if code, out := run(t, 20*time.Second, "pcsctl", eps, "--timeout", "8s", "health"); code == 0 || !strings.Contains(out, "UNHEALTHY") || !strings.Contains(out, follower.name) {
		t.Fatalf("health with a member down: exit %d\n%s", code, out)
	}
	cmd := exec.Command(filepath.Join(binDir, "pcsctl"), "kv", "put", "env", "ok")
	cmd.Env = append(os.Environ(), "PCS_ENDPOINTS="+strings.Join(pc.endpoints(), ","))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pcsctl with PCS_ENDPOINTS: %v\n%s", err, out)
	}
	if kv, err := c.Get(t.Context(), []byte("env")); err != nil || kv.Kv == nil || string(kv.Kv.Value) != "ok" {
		t.Fatalf("the put through PCS_ENDPOINTS: %v %v", kv, err)
	}
}

// TestPcsctlRows: pcsctl row put/get/del/scan against real pcs and pcsnode processes, keys
// typed as values of the key columns.
func TestPcsctlRows(t *testing.T) {
	pc := startCluster(t, 1, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	startNodeProcs(t, pc, 3)
	ctl := func(args ...string) (int, string) {
		return run(t, 20*time.Second, "pcsctl", append([]string{"--endpoints=" + pc.procs[0].client}, args...)...)
	}
	waitFor(t, 20*time.Second, "three nodes up", func() bool {
		code, out := ctl("node", "list")
		return code == 0 && strings.Count(out, " up ") == 3
	})
	if code, out := ctl("table", "create", "users", "--columns", "id:int64,name:string", "--hash-columns", "id", "--hash-partitions", "4", "--replicas", "3"); code != 0 {
		t.Fatalf("create: %s", out)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		_, out := ctl("table", "list")
		return strings.Contains(out, "public")
	})
	for _, r := range [][2]string{{"2,grace", "hopper"}, {"1,ada", "lovelace"}, {"3,edsger", "dijkstra"}} {
		if code, out := ctl("row", "put", "users", r[0], r[1]); code != 0 {
			t.Fatalf("row put %s: %s", r[0], out)
		}
	}
	if code, out := ctl("-o", "json", "row", "get", "users", "1,ada"); code != 0 || !strings.Contains(out, `"value": "lovelace"`) {
		t.Fatalf("row get: exit %d\n%s", code, out)
	}
	if code, out := ctl("row", "get", "users", "1,nobody"); code == 0 || !strings.Contains(out, "not found") {
		t.Fatalf("row get of a missing row: exit %d\n%s", code, out)
	}
	if code, out := ctl("row", "get", "users", "1"); code == 0 || !strings.Contains(out, "key columns") {
		t.Fatalf("row get with one of two key values: exit %d\n%s", code, out)
	}
	if code, out := ctl("row", "del", "users", "3,edsger"); code != 0 {
		t.Fatalf("row del: %s", out)
	}
	code, out := ctl("-o", "json", "row", "scan", "users")
	var rows []struct{ Key, Value string }
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("row scan: exit %d\n%s", code, out)
	}
	if fmt.Sprint(rows) != "[{1,ada lovelace} {2,grace hopper}]" {
		t.Fatalf("row scan: %v, want the two rows left in key order", rows)
	}

	// The load the rows made shows in shard list and node list: written shards have a size and
	// a write rate, every replica is level with its primary, and the nodes' rates add up.
	type shardLoad struct {
		Load *struct {
			SizeBytes   uint64            `json:"size_bytes"`
			WritePerSec float64           `json:"write_per_sec"`
			ReadPerSec  float64           `json:"read_per_sec"`
			Lag         map[string]uint64 `json:"replica_lag"`
		} `json:"load"`
		Replicas []uint64 `json:"replicas"`
	}
	var lastShards string
	defer func() {
		if t.Failed() {
			t.Logf("last shard list:\n%s", lastShards)
		}
	}()
	waitFor(t, 30*time.Second, "shard list to show the writes", func() bool {
		code, out := ctl("-o", "json", "shard", "list", "users")
		var shards []shardLoad
		if code != 0 || json.Unmarshal([]byte(out), &shards) != nil || len(shards) != 4 {
			return false
		}
		written, level := 0, true
		for _, sh := range shards {
			if sh.Load == nil {
				return false
			}
			if sh.Load.WritePerSec > 0 { // size stays 0 until Pebble flushes the memtable
				written++
			}
			if len(sh.Load.Lag) != len(sh.Replicas)-1 {
				level = false
			}
			for _, l := range sh.Load.Lag {
				level = level && l == 0
			}
		}
		if written == 0 || !level {
			lastShards = out
		}
		return written > 0 && level
	})
	waitFor(t, 30*time.Second, "node list to show write rates and the nodes' resources", func() bool {
		code, out := ctl("-o", "json", "node", "list")
		var nodes []struct {
			Writes   float64 `json:"write_per_sec"`
			Capacity uint64  `json:"capacity_bytes"`
			Memory   uint64  `json:"memory_bytes"`
			CPU      float64 `json:"cpu_cores"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil || len(nodes) != 3 {
			return false
		}
		for _, n := range nodes {
			// Every node holds a replica of every shard; a node offers its disk's size by
			// default and reports its process's memory and CPU.
			if n.Writes <= 0 || n.Capacity == 0 || n.Memory == 0 || n.CPU <= 0 {
				return false
			}
		}
		return true
	})
	if code, out := ctl("shard", "list", "users"); code != 0 || !strings.Contains(out, "WRITE/S") || !strings.Contains(out, "LAG") {
		t.Fatalf("shard list: exit %d\n%s", code, out)
	}
}
