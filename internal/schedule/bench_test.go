package schedule

import (
	"testing"
	"time"

	"github.com/postdb/pcs/internal/schedule/schedtest"
)

// BenchmarkTick is one coordinator tick over a balanced cluster of 6 nodes (the steady state:
// patrol a batch, compute loads, find nothing to do), for 10k and 100k shards.
func BenchmarkTick(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(map[int]string{10_000: "10k", 100_000: "100k"}[n], func(b *testing.B) {
			v := schedtest.Cluster(6, 0, 3, "")
			for i := 0; i < n; i++ {
				a := uint64(i%6 + 1)
				schedtest.Shard(v, 64*mib, a, a%6+1, (a+1)%6+1)
			}
			c := newCoord()
			now := time.Duration(0)
			for b.Loop() {
				now += 100 * time.Millisecond
				c.Tick(now, v)
			}
		})
	}
}
