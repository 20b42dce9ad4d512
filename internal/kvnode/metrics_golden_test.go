package kvnode

import (
	"flag"
	"testing"

	"github.com/postdb/pcs/internal/rpcmetrics/metricstest"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/metrics.golden")

// TestMetricNamesGolden: the metric names and label sets, in etcd's
// pcsnode_<subsystem>_<name>_<unit> form, are those of testdata/metrics.golden.
func TestMetricNamesGolden(t *testing.T) {
	metricstest.CheckGolden(t, newMetrics(&Node{}).reg, "pcsnode", *updateGolden)
}
