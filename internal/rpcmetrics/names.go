package rpcmetrics

import (
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// Names lists the metric families a collector describes whose names start with prefix, each
// as name{label,...} (labels sorted), sorted: what a golden test of metric names compares.
func Names(c prometheus.Collector, prefix string) []string {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var out []string
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil || !strings.HasPrefix(m[1], prefix) {
			continue
		}
		name := m[1]
		if labels := strings.Fields(strings.ReplaceAll(m[2], ",", " ")); len(labels) > 0 {
			slices.Sort(labels)
			name += "{" + strings.Join(labels, ",") + "}"
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
