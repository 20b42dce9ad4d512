package kvnode

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postdb/pcs/internal/rpcmetrics"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/metrics.golden")

// TestMetricNamesGolden: the metric names and labels are an interface (dashboards, alerts,
// operators' queries); a change shows here and must be made on purpose (go test -update).
// Names follow etcd's pcs_<subsystem>_<name>_<unit> form.
func TestMetricNamesGolden(t *testing.T) {
	names := rpcmetrics.Names(newMetrics(&Node{}).reg, "pcsnode_")
	form := regexp.MustCompile(`^pcsnode_[a-z]+_[a-z0-9_]+(\{[a-z_,]+\})?$`)
	for _, n := range names {
		if !form.MatchString(n) {
			t.Errorf("metric %s is not pcsnode_<subsystem>_<name>", n)
		}
	}
	got := strings.Join(names, "\n") + "\n"
	path := filepath.Join("testdata", "metrics.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("metric names changed (go test -run TestMetricNamesGolden -update to accept):\n got:\n%s\nwant:\n%s", got, want)
	}
}
