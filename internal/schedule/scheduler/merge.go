package scheduler

import "time"

// MergeConfig says which neighbouring shards merge (PD's max-merge-region-size and
// split-merge-interval are the model).
type MergeConfig struct {
	// MaxBytes: two neighbours merge when together they hold at most this much (0: no merges).
	// Default 20 MiB, well below the size at which a node splits a shard, so the survivor is
	// not split again.
	MaxBytes uint64
	// MaxKeys: nor when together they serve more than this many keys per second (a hot shard
	// never merges). Default 100.
	MaxKeys float64
	// AfterSplit: a shard split by PCS does not merge again within it. Default 1 h.
	AfterSplit time.Duration
}

// DefaultMerge are the defaults.
var DefaultMerge = MergeConfig{MaxBytes: 20 << 20, MaxKeys: 100, AfterSplit: time.Hour}
