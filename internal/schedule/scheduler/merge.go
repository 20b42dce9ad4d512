package scheduler

import "time"

// MergeConfig says which neighbouring shards merge (PD's max-merge-region-size with TiKV's
// region-max-size, and split-merge-interval, are the model).
type MergeConfig struct {
	// MaxBytes: a shard this small or smaller merges with a neighbour (0: no merges). Default
	// 20 MiB.
	MaxBytes uint64
	// MaxResultBytes: unless the two would hold more than this together. Default 48 MiB, below
	// the size at which a node splits a shard (64 MiB), so the survivor is not split again.
	MaxResultBytes uint64
	// MaxKeys: nor when together they serve more than this many keys per second (a hot shard
	// never merges). Default 100.
	MaxKeys float64
	// AfterSplit: a shard split does not merge again within it. Default 1 h.
	AfterSplit time.Duration
}

// DefaultMerge are the defaults.
var DefaultMerge = MergeConfig{MaxBytes: 20 << 20, MaxResultBytes: 48 << 20, MaxKeys: 100, AfterSplit: time.Hour}

// Fits reports whether shards of these sizes and keys per second may merge.
func (c MergeConfig) Fits(leftSize, rightSize uint64, keys float64) bool {
	return c.MaxBytes > 0 && min(leftSize, rightSize) <= c.MaxBytes && leftSize+rightSize <= c.MaxResultBytes && keys <= c.MaxKeys
}
