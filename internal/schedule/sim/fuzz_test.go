package sim

import (
	"errors"
	"strings"
	"testing"
)

// FuzzScenarioLine: any one scenario line is run or refused with ErrScenario; it never panics.
// Lines that advance time are left out (a fuzzed "run 9999h" would only be slow).
func FuzzScenarioLine(f *testing.F) {
	for _, s := range []string{"nodes n=3 zones=a,b capacity=1TiB", "table shards=10 replicas=1 size=lognormal:64MiB:0.5",
		"table shards=3 replicas=1 size=one:10MiB", "config rebalance-speed max", "assert moves <= 3", "kill-node 1",
		"drain-node 2", "grow-sizes 1.5", "tstar drain", "mark", "add-nodes n=1 capacity=2x",
		"table shards=5 replicas=1 size=fixed:0 partitions=one", "drop-rows table=1", "assert shards-of:1 <= 4", "assert merges == 0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.Contains(line, "run") || strings.ContainsAny(line, "\n\r") {
			return
		}
		script := "nodes n=3\ntable shards=4 replicas=1 size=fixed:1MiB\n" + line
		if _, err := Run(strings.NewReader(script), 1, nil, nil); err != nil && !errors.Is(err, ErrScenario) && !errors.Is(err, ErrAssert) {
			t.Fatalf("%q: %v", line, err)
		}
	})
}
