package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
