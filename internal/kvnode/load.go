package kvnode

import (
	"sync"
	"sync/atomic"
	"time"
)

// loadWindow is the shortest window read and write rates are measured over: long enough to
// smooth bursts, short enough for a hot shard to show within seconds.
const loadWindow = 5 * time.Second

// shardLoad counts the keys each shard served reads and writes for and turns the counts into
// per-second rates, one window at a time. Counting is lock-free (it is on every request);
// turning counts into rates happens at heartbeats. Safe for concurrent use.
type shardLoad struct {
	now    func() time.Time
	counts sync.Map // shard id -> *loadCount, for the current window

	mu    sync.Mutex
	start time.Time // of the current window
	rates map[uint64][2]float64
}

type loadCount struct{ reads, writes atomic.Uint64 }

func newShardLoad(now func() time.Time) *shardLoad {
	return &shardLoad{now: now, start: now(), rates: map[uint64][2]float64{}}
}

// add records keys read and written on a shard.
func (l *shardLoad) add(shard uint64, reads, writes int) {
	c, ok := l.counts.Load(shard)
	if !ok {
		c, _ = l.counts.LoadOrStore(shard, &loadCount{})
	}
	c.(*loadCount).reads.Add(uint64(reads))
	c.(*loadCount).writes.Add(uint64(writes))
}

// rate returns a shard's reads and writes per second over the last whole window.
func (l *shardLoad) rate(shard uint64) (reads, writes float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= loadWindow {
		secs := now.Sub(l.start).Seconds()
		l.rates = map[uint64][2]float64{}
		l.counts.Range(func(k, v any) bool {
			c := v.(*loadCount)
			r, w := c.reads.Swap(0), c.writes.Swap(0)
			if r+w > 0 {
				l.rates[k.(uint64)] = [2]float64{float64(r) / secs, float64(w) / secs}
			}
			return true
		})
		l.start = now
	}
	r := l.rates[shard]
	return r[0], r[1]
}
