package pcspb

// MinInSyncOrOne is how many replicas of the shard, the primary included, must persist a write
// before it is acknowledged: its min_in_sync, or 1 for shards made before it existed.
func (x *Shard) MinInSyncOrOne() uint32 { return max(x.GetMinInSync(), 1) }
