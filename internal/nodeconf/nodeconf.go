// Package nodeconf holds the settings PCS carries to the data nodes (pcsctl node config set):
// which keys exist, what values they take, and the desired settings as PCS persists them — one
// set for every node (also those that register later) and one per node, which wins.
package nodeconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/postdb/pcs/internal/tracing"
)

// ErrUnknownKey and ErrBadValue are the errors of Validate.
var (
	ErrUnknownKey = errors.New("nodeconf: unknown node setting")
	ErrBadValue   = errors.New("nodeconf: bad value")
)

// Keys of the node settings.
const (
	// LogLevel is the node's log level: debug, info, warn or error.
	LogLevel = "log-level"
	// TraceRatio is the share of requests without a traced caller that are traced (0..1; 0,
	// the default, is off). A request whose caller traces it is traced at any ratio.
	TraceRatio = "trace-ratio"
	// TraceExporter is where spans go: host:port or otlp://host:port (OTLP over gRPC), or
	// file:DIR (JSON lines, DIR/SERVICE-PID.jsonl); empty: nowhere.
	TraceExporter = "trace-exporter"
	// ShardMetrics turns the per-shard Prometheus series on (on) or off (off, the default):
	// pcsnode_shard_{size_bytes,lsn,reads_per_second,writes_per_second}{shard="ID"}, one
	// set per replica the node holds — many series on a node with many shards.
	ShardMetrics = "shard-metrics"
	// Pprof serves Go's profiling endpoints under /debug/pprof/ on the node's HTTP address (on)
	// or not (off, the default); admin certificates only under mutual TLS.
	Pprof = "pprof"
)

// onOff checks a switch.
func onOff(key string) func(string) (string, error) {
	return func(v string) (string, error) {
		switch v {
		case "on", "true", "1":
			return "on", nil
		case "off", "false", "0":
			return "off", nil
		}
		return "", fmt.Errorf("%w: %s %q (on or off)", ErrBadValue, key, v)
	}
}

// keys maps each key to its check.
var keys = map[string]func(string) (string, error){
	LogLevel: func(v string) (string, error) {
		switch v {
		case "debug", "info", "warn", "error":
			return v, nil
		}
		return "", fmt.Errorf("%w: log-level %q (debug, info, warn, error)", ErrBadValue, v)
	},
	TraceRatio: func(v string) (string, error) {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 || r != r {
			return "", fmt.Errorf("%w: trace-ratio %q (a number in [0, 1])", ErrBadValue, v)
		}
		return FormatRatio(r), nil
	},
	ShardMetrics: onOff(ShardMetrics),
	Pprof:        onOff(Pprof),
	TraceExporter: func(v string) (string, error) {
		if err := tracing.ValidateTarget(v); err != nil {
			return "", fmt.Errorf("%w: %w", ErrBadValue, err)
		}
		return v, nil
	},
}

// FormatRatio is the canonical text of a trace ratio (as a node reports it).
func FormatRatio(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }

// Keys lists the setting names.
func Keys() []string { return slices.Sorted(maps.Keys(keys)) }

// Canonical checks a setting and returns its value as a node reports it in force ("1.0" is
// "1"); an empty value unsets it (back to the node's own flag).
func Canonical(key, value string) (string, error) {
	check, ok := keys[key]
	if !ok {
		return "", fmt.Errorf("%w: %q (known: %s)", ErrUnknownKey, key, strings.Join(Keys(), ", "))
	}
	if value == "" {
		return "", nil
	}
	return check(value)
}

// Desired is what PCS asks of the nodes.
type Desired struct {
	All   map[string]string            `json:"all,omitempty"`
	Nodes map[string]map[string]string `json:"nodes,omitempty"` // node id (decimal) -> settings
}

// Parse reads persisted settings (nil or empty: none).
func Parse(b []byte) (Desired, error) {
	var d Desired
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return Desired{}, fmt.Errorf("nodeconf: %w", err)
	}
	return d, nil
}

// Marshal encodes settings for persisting.
func (d Desired) Marshal() ([]byte, error) { return json.Marshal(d) }

// Set sets (value "": unsets) key on the listed nodes, or for all (nodes empty). It does not
// validate.
func (d *Desired) Set(nodes []uint64, key, value string) {
	put := func(m map[string]string) map[string]string {
		if m == nil {
			m = map[string]string{}
		}
		if value == "" {
			delete(m, key)
		} else {
			m[key] = value
		}
		return m
	}
	if len(nodes) == 0 {
		d.All = put(d.All)
		return
	}
	if d.Nodes == nil {
		d.Nodes = map[string]map[string]string{}
	}
	for _, n := range nodes {
		id := strconv.FormatUint(n, 10)
		if m := put(d.Nodes[id]); len(m) > 0 {
			d.Nodes[id] = m
		} else {
			delete(d.Nodes, id)
		}
	}
}

// For returns the settings asked of node: those for all, overridden by the node's own.
func (d Desired) For(node uint64) map[string]string {
	out := maps.Clone(d.All)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, d.Nodes[strconv.FormatUint(node, 10)])
	return out
}

// Pending returns the settings of want the node has not applied (absent or different in
// applied), or nil.
func Pending(want, applied map[string]string) map[string]string {
	var out map[string]string
	for k, v := range want {
		if applied[k] != v {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
