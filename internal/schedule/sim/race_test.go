//go:build race

package sim

// Under the race detector the simulator (single-threaded and deterministic, so the detector has
// nothing to find in it but the scheduling code it drives) runs 5-10x slower: the 10k-shard
// scenarios alone take minutes. So under -race only the small scenarios run, at one seed; .ci/run
// runs every scenario again without the detector, at all three seeds.
func init() {
	seeds = seeds[:1]
	only = map[string]bool{"s6_one_big_shard.txt": true, "s8_zones.txt": true}
}
