package sim

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/hashes.golden with the trace hashes of this run")

// hashesFile pins every scenario's trace hash at every seed: a change to the coordinator that
// changes any decision shows here, and is either a bug or a change to pin again (-update) and
// explain in its commit.
const hashesFile = "testdata/hashes.golden"

func readHashes(t *testing.T) map[string]string {
	f, err := os.Open(hashesFile)
	if err != nil {
		t.Fatalf("%v (write it with go test ./internal/schedule/sim -run TestScenarios -update)", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			k, v, ok := strings.Cut(line, " = ")
			if !ok {
				t.Fatalf("%s: bad line %q", hashesFile, line)
			}
			out[k] = v
		}
	}
	return out
}

// seeds each scenario runs at.
var seeds = []uint64{1, 2, 3}

// only, if set, names the scenario files that run (see race_test.go).
var only map[string]bool

func runFile(t testing.TB, path string, seed uint64) *Result {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Run(f, seed, nil, nil)
	if err != nil {
		t.Fatalf("%s seed %d: %v", filepath.Base(path), seed, err)
	}
	return res
}

// TestScenarios runs every scenario in testdata at three seeds; each asserts its own figures.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	var want map[string]string
	if !*update {
		want = readHashes(t)
	}
	var mu sync.Mutex
	got := map[string]string{}
	t.Cleanup(func() {
		if !*update || t.Failed() {
			return
		}
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b strings.Builder
		b.WriteString("# Trace hashes of every scenario at every seed (go test ./internal/schedule/sim -run TestScenarios -update).\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s = %s\n", k, got[k])
		}
		if err := os.WriteFile(hashesFile, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	})
	for _, path := range files {
		if only != nil && !only[filepath.Base(path)] {
			t.Logf("%s: not run under the race detector (.ci/run runs it without)", filepath.Base(path))
			continue
		}
		for _, seed := range seeds {
			t.Run(filepath.Base(path), func(t *testing.T) {
				t.Parallel()
				res := runFile(t, path, seed)
				t.Logf("seed %d: simulated %s, hash %016x, %v", seed, res.Simulated, res.Hash, res.Metrics)
				key, h := fmt.Sprintf("%s seed %d", filepath.Base(path), seed), fmt.Sprintf("%016x", res.Hash)
				mu.Lock()
				got[key] = h
				mu.Unlock()
				if want != nil && want[key] != h {
					t.Errorf("%s: trace hash %s, pinned %q: a decision changed (if meant, pin again with -update and say why in the commit)", key, h, want[key])
				}
			})
		}
	}
}

func TestScenarioErrors(t *testing.T) {
	for _, bad := range []string{
		"frobnicate", "nodes n=x", "table shards=10 replicas=3 size=weird", "run forever", "assert moves ~ 3",
		"assert nosuch <= 1", "config rebalance-speed warp", "kill-node 99", "nodes n=1\ntable shards=1 replicas=3 size=fixed:1MiB",
	} {
		if _, err := Run(strings.NewReader(bad), 1, nil, nil); !errors.Is(err, ErrScenario) {
			t.Errorf("%q: %v, want ErrScenario", bad, err)
		}
	}
}

func BenchmarkS1(b *testing.B) {
	for b.Loop() {
		runFile(b, "testdata/s1_scale_out.txt", 1)
	}
}
