package kvnode

import (
	"sync"
	"time"
)

// loadWindow is the shortest window read and write rates are measured over: long enough to
// smooth bursts, short enough for a hot shard to show within seconds.
const loadWindow = 5 * time.Second

// shardLoad counts the keys each shard served reads and writes for and turns the counts into
// per-second rates, one window at a time. Safe for concurrent use.
type shardLoad struct {
	now func() time.Time

	mu     sync.Mutex
	start  time.Time            // of the current window
	counts map[uint64][2]uint64 // shard -> keys read, keys written in the window
	rates  map[uint64][2]float64
}

func newShardLoad(now func() time.Time) *shardLoad {
	return &shardLoad{now: now, start: now(), counts: map[uint64][2]uint64{}, rates: map[uint64][2]float64{}}
}

// add records keys read and written on a shard.
func (l *shardLoad) add(shard uint64, reads, writes int) {
	l.mu.Lock()
	c := l.counts[shard]
	c[0] += uint64(reads)
	c[1] += uint64(writes)
	l.counts[shard] = c
	l.mu.Unlock()
}

// rate returns a shard's reads and writes per second over the last whole window.
func (l *shardLoad) rate(shard uint64) (reads, writes float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= loadWindow {
		secs := now.Sub(l.start).Seconds()
		l.rates = make(map[uint64][2]float64, len(l.counts))
		for id, c := range l.counts {
			l.rates[id] = [2]float64{float64(c[0]) / secs, float64(c[1]) / secs}
		}
		clear(l.counts)
		l.start = now
	}
	r := l.rates[shard]
	return r[0], r[1]
}
