// Package metricstest holds the golden test of metric names, for the packages that export metrics.
package metricstest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postdb/pcs/internal/rpcmetrics"
)

// CheckGolden is the golden test of a registry's metric names: every name under prefix is in
// the prefix_<subsystem>_<name> form, and the list (with label sets) equals
// testdata/metrics.golden, which update rewrites. Names and labels are an interface
// (dashboards, alerts, operators' queries): a change shows here and is made on purpose.
func CheckGolden(t testing.TB, c prometheus.Collector, prefix string, update bool) {
	t.Helper()
	names := rpcmetrics.Names(c, prefix+"_")
	form := regexp.MustCompile(`^` + prefix + `_[a-z]+_[a-z0-9_]+(\{[a-z_,]+\})?$`)
	for _, n := range names {
		if !form.MatchString(n) {
			t.Errorf("metric %s is not %s_<subsystem>_<name>", n, prefix)
		}
	}
	got := strings.Join(names, "\n") + "\n"
	path := filepath.Join("testdata", "metrics.golden")
	if update {
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
