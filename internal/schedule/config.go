package schedule

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postdb/pcs/internal/schedule/scheduler"
	"github.com/postdb/pcs/internal/schedule/view"
)

// ErrInvalidConfig means a setting's name or value is not accepted; nothing changes.
var ErrInvalidConfig = errors.New("invalid schedule setting")

// Speed is the one knob for how fast balancing may go: the share of every budget (snapshot
// bytes, concurrent snapshots, operators) the unreserved kinds may use.
type Speed uint8

const (
	SpeedOff Speed = iota
	SpeedLow
	SpeedNormal
	SpeedMax
)

var speedNames = []string{"off", "low", "normal", "max"}

func (s Speed) String() string { return speedNames[s] }

// Share is the fraction of each budget balancing may use: off 0, low 1/8, normal 1/4, max 1/2.
func (s Speed) Share() float64 { return [...]float64{0, 0.125, 0.25, 0.5}[s] }

// Limits are the controller's budgets.
type Limits struct {
	// SnapshotBytesPerSec is each node's snapshot budget, in and out separately. Default 128 MiB/s.
	SnapshotBytesPerSec uint64
	// SnapshotsPerNode bounds concurrent snapshots per node, in and out separately. Default 8.
	SnapshotsPerNode int
	// MaxOperators bounds running operators in total. Default 512.
	MaxOperators int
	// Speed sets the share of these budgets balancing may use. Default normal.
	Speed Speed
	// Halt stops admitting any new operator (halt-scheduling); running ones go on.
	Halt bool
}

// Config is the coordinator's runtime configuration.
type Config struct {
	Limits
	// Paused schedulers by name: they propose nothing.
	Paused map[string]bool
	// PatrolBatch is how many shards the checkers look at each tick. Default 1024.
	PatrolBatch int
	// StepTimeout is the base timeout of a step; steps that copy a shard get size / MinRate
	// more. Default 60 s and 4 MiB/s.
	StepTimeout time.Duration
	MinRate     uint64
	// Cooldown: a replica a move added does not leave its node again by balancing within it.
	// Default 10 min.
	Cooldown time.Duration
	// Bands are the balancers' deadband.
	Bands scheduler.Bands
	// LowSpaceRatio: a node using more than this share of its capacity receives no new
	// replica (PD's low-space-ratio). Default 0.8.
	LowSpaceRatio float64
	// HighSpaceRatio: a node using more than this share moves replicas away until it uses
	// less (PD's high-space-ratio). Default 0.9.
	HighSpaceRatio float64
	// Hot says when a node's load is hot (hot-ratio, hot-hold, hot-min-keys).
	Hot scheduler.HotConfig
	// EvictPrimaries: nodes to lead no shard (evict-primaries: before a restart). Their
	// primaries move to other replicas and none are given to them; their replicas stay.
	EvictPrimaries map[uint64]bool
	// PrimaryPolicies by table name (primary-policy:TABLE); a table not named is balanced.
	PrimaryPolicies map[string]view.PrimaryPolicy
	// Merge says which neighbours merge (merge-max-bytes, merge-max-result-bytes, merge-max-keys,
	// split-merge-interval).
	Merge scheduler.MergeConfig
	// DefaultReplicas is the replica count of a table created without one. Default 3.
	DefaultReplicas int
	// IntervalCreateAhead is how many intervals past the current one an interval table with a
	// timestamp column has partitions for, made ahead of the rows (interval-create-ahead, 0..
	// MaxCreateAhead). Default 2.
	IntervalCreateAhead int
}

// MaxCreateAhead bounds interval-create-ahead.
const MaxCreateAhead = 64

// MaxReplicas is the most replicas a table may ask for (as the catalog allows).
const MaxReplicas = 9

// PrimaryPolicyPrefix starts the setting of a table's primary policy: primary-policy:TABLE.
const PrimaryPolicyPrefix = "primary-policy:"

// ParsePrimaryPolicy reads "balanced", "none" or "preferred K=V[,K=V...]" (node=ID names a node).
func ParsePrimaryPolicy(value string) (view.PrimaryPolicy, error) {
	mode, rest, _ := strings.Cut(strings.TrimSpace(value), " ")
	switch mode {
	case view.Balanced, view.None:
		if strings.TrimSpace(rest) != "" {
			return view.PrimaryPolicy{}, fmt.Errorf("%w: primary policy %q takes no preferences", ErrInvalidConfig, mode)
		}
		return view.PrimaryPolicy{Mode: mode}, nil
	case view.Preferred:
		var prefs []string
		for _, c := range strings.Split(rest, ",") {
			c = strings.TrimSpace(c)
			k, v, ok := strings.Cut(c, "=")
			if !ok || k == "" || v == "" || len(c) > 256 {
				return view.PrimaryPolicy{}, fmt.Errorf("%w: preference %q is not label=value (or node=ID)", ErrInvalidConfig, c)
			}
			if k == "node" {
				if id, err := strconv.ParseUint(v, 10, 64); err != nil || id == 0 {
					return view.PrimaryPolicy{}, fmt.Errorf("%w: preference %q: node=ID", ErrInvalidConfig, c)
				}
			}
			prefs = append(prefs, c)
		}
		if len(prefs) == 0 || len(prefs) > 16 {
			return view.PrimaryPolicy{}, fmt.Errorf("%w: preferred takes 1 to 16 preferences", ErrInvalidConfig)
		}
		return view.PrimaryPolicy{Mode: view.Preferred, Preferred: prefs}, nil
	}
	return view.PrimaryPolicy{}, fmt.Errorf("%w: primary policy %q (balanced, none, or preferred zone=a,zone=b)", ErrInvalidConfig, value)
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Limits: Limits{SnapshotBytesPerSec: 128 << 20, SnapshotsPerNode: 8, MaxOperators: 512, Speed: SpeedNormal},
		Paused: map[string]bool{}, EvictPrimaries: map[uint64]bool{}, PatrolBatch: 1024, StepTimeout: time.Minute, MinRate: 4 << 20,
		Cooldown: 10 * time.Minute, Bands: scheduler.DefaultBands, LowSpaceRatio: 0.8, HighSpaceRatio: 0.9,
		Hot: scheduler.DefaultHot, Merge: scheduler.DefaultMerge, DefaultReplicas: 3,
		IntervalCreateAhead: 2,
	}
}

// Validate checks the config without changing it.
func (c Config) Validate() error {
	switch {
	case c.SnapshotBytesPerSec == 0:
		return fmt.Errorf("%w: snapshot-bytes-per-sec must be positive", ErrInvalidConfig)
	case c.SnapshotsPerNode < 1 || c.MaxOperators < 1:
		return fmt.Errorf("%w: snapshots-per-node and max-operators must be at least 1", ErrInvalidConfig)
	case c.PatrolBatch < 1 || c.StepTimeout <= 0:
		return fmt.Errorf("%w: patrol batch and step timeout must be positive", ErrInvalidConfig)
	case c.Bands.Stop <= 0 || c.Bands.Start < c.Bands.Stop:
		return fmt.Errorf("%w: bands need 0 < stop <= start", ErrInvalidConfig)
	case c.LowSpaceRatio <= 0 || c.LowSpaceRatio > 1 || c.HighSpaceRatio < c.LowSpaceRatio || c.HighSpaceRatio > 1:
		return fmt.Errorf("%w: low-space-ratio and high-space-ratio must be in (0, 1], low <= high", ErrInvalidConfig)
	case c.Hot.Ratio <= 0 || c.Hot.Hold < 0 || c.Hot.MinKeys < 0 || c.Hot.PerPass < 1:
		return fmt.Errorf("%w: hot-ratio must be positive, hot-hold and hot-min-keys not negative", ErrInvalidConfig)
	}
	return nil
}

// SchedulerNames lists the schedulers that may be paused.
func SchedulerNames() []string {
	var out []string
	for _, s := range scheduler.All() {
		out = append(out, s.Name())
	}
	return out
}

// Settings are the names `pcsctl config set` accepts.
var Settings = []string{"rebalance-speed", "snapshot-bytes-per-sec", "snapshots-per-node", "max-operators", "halt-scheduling", "paused-schedulers", "low-space-ratio",
	"high-space-ratio", "hot-ratio", "hot-hold", "hot-min-keys", "evict-primaries", "merge-max-bytes", "merge-max-result-bytes", "merge-max-keys", "split-merge-interval",
	"default-replicas", "interval-create-ahead"}

// Set changes one setting by name, validating it; c is unchanged on error.
func (c *Config) Set(key, value string) error {
	n := *c
	n.Paused = maps.Clone(c.Paused)
	n.EvictPrimaries = maps.Clone(c.EvictPrimaries)
	n.PrimaryPolicies = maps.Clone(c.PrimaryPolicies)
	if table, ok := strings.CutPrefix(key, PrimaryPolicyPrefix); ok {
		if table == "" || len(table) > 256 {
			return fmt.Errorf("%w: %s needs a table name", ErrInvalidConfig, PrimaryPolicyPrefix)
		}
		p, err := ParsePrimaryPolicy(value)
		if err != nil {
			return err
		}
		if n.PrimaryPolicies == nil {
			n.PrimaryPolicies = map[string]view.PrimaryPolicy{}
		}
		if p.Mode == view.Balanced {
			delete(n.PrimaryPolicies, table) // the default
		} else {
			n.PrimaryPolicies[table] = p
		}
		*c = n
		return nil
	}
	switch key {
	case "rebalance-speed":
		i := slices.Index(speedNames, value)
		if i < 0 {
			return fmt.Errorf("%w: rebalance-speed %q (one of %s)", ErrInvalidConfig, value, strings.Join(speedNames, ", "))
		}
		n.Speed = Speed(i)
	case "snapshot-bytes-per-sec":
		v, err := parseBytes(value)
		if err != nil {
			return err
		}
		n.SnapshotBytesPerSec = v
	case "snapshots-per-node", "max-operators":
		v, err := strconv.Atoi(value)
		if err != nil || v < 1 || v > 1_000_000 {
			return fmt.Errorf("%w: %s %q must be an integer in [1, 1000000]", ErrInvalidConfig, key, value)
		}
		if key == "max-operators" {
			n.MaxOperators = v
		} else {
			n.SnapshotsPerNode = v
		}
	case "low-space-ratio", "high-space-ratio":
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || !(v > 0 && v <= 1) { // NaN too
			return fmt.Errorf("%w: %s %q must be a number in (0, 1]", ErrInvalidConfig, key, value)
		}
		if key == "low-space-ratio" {
			n.LowSpaceRatio = v
		} else {
			n.HighSpaceRatio = v
		}
	case "hot-ratio", "hot-min-keys":
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || !(v > 0 && v <= 1e12) || (key == "hot-ratio" && v > 10) { // NaN too
			return fmt.Errorf("%w: %s %q must be a positive number (hot-ratio at most 10)", ErrInvalidConfig, key, value)
		}
		if key == "hot-ratio" {
			n.Hot.Ratio = v
		} else {
			n.Hot.MinKeys = v
		}
	case "hot-hold":
		d, err := time.ParseDuration(value)
		if err != nil || d < 0 || d > time.Hour {
			return fmt.Errorf("%w: hot-hold %q must be a duration in [0, 1h]", ErrInvalidConfig, value)
		}
		n.Hot.Hold = d
	case "default-replicas":
		v, err := strconv.Atoi(value)
		if err != nil || v < 1 || v > MaxReplicas {
			return fmt.Errorf("%w: default-replicas %q must be an integer in [1, %d]", ErrInvalidConfig, value, MaxReplicas)
		}
		n.DefaultReplicas = v
	case "interval-create-ahead":
		v, err := strconv.Atoi(value)
		if err != nil || v < 0 || v > MaxCreateAhead {
			return fmt.Errorf("%w: interval-create-ahead %q must be an integer in [0, %d]", ErrInvalidConfig, value, MaxCreateAhead)
		}
		n.IntervalCreateAhead = v
	case "merge-max-bytes":
		v, err := parseBytes(value)
		if err != nil && value != "0" {
			return err
		}
		n.Merge.MaxBytes = v
	case "merge-max-result-bytes":
		v, err := parseBytes(value)
		if err != nil {
			return err
		}
		n.Merge.MaxResultBytes = v
	case "merge-max-keys":
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || !(v >= 0 && v <= 1e12) { // NaN too
			return fmt.Errorf("%w: merge-max-keys %q must be a number in [0, 1e12]", ErrInvalidConfig, value)
		}
		n.Merge.MaxKeys = v
	case "split-merge-interval":
		d, err := time.ParseDuration(value)
		if err != nil || d < 0 || d > 7*24*time.Hour {
			return fmt.Errorf("%w: split-merge-interval %q must be a duration in [0, 168h]", ErrInvalidConfig, value)
		}
		n.Merge.AfterSplit = d
	case "halt-scheduling":
		v, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%w: halt-scheduling %q must be true or false", ErrInvalidConfig, value)
		}
		n.Halt = v
	case "evict-primaries":
		n.EvictPrimaries = map[uint64]bool{}
		for _, f := range strings.Split(value, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			id, err := strconv.ParseUint(f, 10, 64)
			if err != nil || id == 0 {
				return fmt.Errorf("%w: evict-primaries %q: a comma-separated list of node ids", ErrInvalidConfig, value)
			}
			n.EvictPrimaries[id] = true
		}
		if len(n.EvictPrimaries) > 1000 {
			return fmt.Errorf("%w: evict-primaries names %d nodes (at most 1000)", ErrInvalidConfig, len(n.EvictPrimaries))
		}
	case "paused-schedulers":
		n.Paused = map[string]bool{}
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if !slices.Contains(SchedulerNames(), s) {
				return fmt.Errorf("%w: no scheduler %q (schedulers: %s)", ErrInvalidConfig, s, strings.Join(SchedulerNames(), ", "))
			}
			n.Paused[s] = true
		}
	default:
		return fmt.Errorf("%w: unknown setting %q (settings: %s)", ErrInvalidConfig, key, strings.Join(Settings, ", "))
	}
	if err := n.Validate(); err != nil {
		return err
	}
	*c = n
	return nil
}

// Get returns every setting as text.
func (c *Config) Get() map[string]string {
	var paused []string
	for s, p := range c.Paused {
		if p {
			paused = append(paused, s)
		}
	}
	sort.Strings(paused)
	out := map[string]string{
		"rebalance-speed":        c.Speed.String(),
		"snapshot-bytes-per-sec": strconv.FormatUint(c.SnapshotBytesPerSec, 10),
		"snapshots-per-node":     strconv.Itoa(c.SnapshotsPerNode),
		"max-operators":          strconv.Itoa(c.MaxOperators),
		"halt-scheduling":        strconv.FormatBool(c.Halt),
		"paused-schedulers":      strings.Join(paused, ","),
		"low-space-ratio":        strconv.FormatFloat(c.LowSpaceRatio, 'g', -1, 64),
		"high-space-ratio":       strconv.FormatFloat(c.HighSpaceRatio, 'g', -1, 64),
		"hot-ratio":              strconv.FormatFloat(c.Hot.Ratio, 'g', -1, 64),
		"hot-hold":               c.Hot.Hold.String(),
		"hot-min-keys":           strconv.FormatFloat(c.Hot.MinKeys, 'g', -1, 64),
		"evict-primaries":        c.evictList(),
		"merge-max-bytes":        strconv.FormatUint(c.Merge.MaxBytes, 10),
		"default-replicas":       strconv.Itoa(c.DefaultReplicas),
		"interval-create-ahead":  strconv.Itoa(c.IntervalCreateAhead),
		"merge-max-result-bytes": strconv.FormatUint(c.Merge.MaxResultBytes, 10),
		"merge-max-keys":         strconv.FormatFloat(c.Merge.MaxKeys, 'g', -1, 64),
		"split-merge-interval":   c.Merge.AfterSplit.String(),
	}
	for table, p := range c.PrimaryPolicies {
		out[PrimaryPolicyPrefix+table] = p.String()
	}
	return out
}

func (c *Config) evictList() string {
	ids := slices.Sorted(maps.Keys(c.EvictPrimaries))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if c.EvictPrimaries[id] {
			out = append(out, strconv.FormatUint(id, 10))
		}
	}
	return strings.Join(out, ",")
}

// parseBytes reads a byte count with an optional KiB/MiB/GiB suffix.
func parseBytes(s string) (uint64, error) {
	mult := uint64(1)
	for suf, m := range map[string]uint64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || v == 0 || v > (1<<50)/mult {
		return 0, fmt.Errorf("%w: %q is not a positive byte count (e.g. 64MiB)", ErrInvalidConfig, s)
	}
	return v * mult, nil
}
