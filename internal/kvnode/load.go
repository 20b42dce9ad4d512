package kvnode

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadWindow is the shortest window read and write rates are measured over: long enough to
// smooth bursts, short enough for a hot shard to show within seconds.
const loadWindow = 5 * time.Second

// maxSamples bounds the keys a shard's sampler keeps per window (a reservoir: every access in
// the window has the same chance to be in it).
const maxSamples = 256

// shardLoad counts the keys and bytes each shard served reads and writes for, turns the counts
// into per-second rates one window at a time, and samples the keys accessed so that a split by
// load can find the key that halves a shard's traffic. Counting is lock-free (it is on every
// request); sampling takes a shard's own lock; turning counts into rates happens at
// heartbeats. Safe for concurrent use.
type shardLoad struct {
	now    func() time.Time
	counts sync.Map // shard id -> *loadCount, for the current window

	mu    sync.Mutex
	start time.Time // of the current window
	rates map[uint64]loadRate
}

// access is what one request did to a shard.
type access struct {
	reads, writes         int
	readBytes, writeBytes int
	// key, if set, is sampled (the first key of a request: a batch or scan counts once).
	key []byte
}

// loadRate is a shard's traffic per second over the last whole window.
type loadRate struct{ reads, writes, readBytes, writeBytes float64 }

type loadCount struct {
	reads, writes, readBytes, writeBytes atomic.Uint64

	mu        sync.Mutex
	seen      int      // accesses offered to the reservoir in this window
	cur, prev [][]byte // this window's samples and the last one's
}

func newShardLoad(now func() time.Time) *shardLoad {
	return &shardLoad{now: now, start: now(), rates: map[uint64]loadRate{}}
}

func (l *shardLoad) count(shard uint64) *loadCount {
	c, ok := l.counts.Load(shard)
	if !ok {
		c, _ = l.counts.LoadOrStore(shard, &loadCount{})
	}
	return c.(*loadCount)
}

// add records what a request did on a shard.
func (l *shardLoad) add(shard uint64, a access) {
	c := l.count(shard)
	c.reads.Add(uint64(a.reads))
	c.writes.Add(uint64(a.writes))
	c.readBytes.Add(uint64(a.readBytes))
	c.writeBytes.Add(uint64(a.writeBytes))
	if a.key == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	switch {
	case len(c.cur) < maxSamples:
		c.cur = append(c.cur, bytes.Clone(a.key))
	default:
		if i := rand.IntN(c.seen); i < maxSamples {
			c.cur[i] = bytes.Clone(a.key)
		}
	}
}

// rate returns a shard's traffic per second over the last whole window.
func (l *shardLoad) rate(shard uint64) loadRate {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); now.Sub(l.start) >= loadWindow {
		secs := now.Sub(l.start).Seconds()
		l.rates = map[uint64]loadRate{}
		l.counts.Range(func(k, v any) bool {
			c := v.(*loadCount)
			r, w, rb, wb := c.reads.Swap(0), c.writes.Swap(0), c.readBytes.Swap(0), c.writeBytes.Swap(0)
			if r+w > 0 {
				l.rates[k.(uint64)] = loadRate{float64(r) / secs, float64(w) / secs, float64(rb) / secs, float64(wb) / secs}
			}
			c.mu.Lock()
			c.prev, c.cur, c.seen = c.cur, nil, 0
			c.mu.Unlock()
			return true
		})
		l.start = now
	}
	return l.rates[shard]
}

// split gives a shard's new half half of the shard's counts in this window and half of its
// last rates (the parent's window would otherwise report the whole shard's traffic once more,
// and the new half none).
func (l *shardLoad) split(parent, child uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, c := l.count(parent), l.count(child)
	for _, pair := range [][2]*atomic.Uint64{{&p.reads, &c.reads}, {&p.writes, &c.writes}, {&p.readBytes, &c.readBytes}, {&p.writeBytes, &c.writeBytes}} {
		half := pair[0].Load() / 2
		pair[0].Add(^(half - 1)) // subtract half
		pair[1].Add(half)
	}
	r := l.rates[parent]
	r = loadRate{r.reads / 2, r.writes / 2, r.readBytes / 2, r.writeBytes / 2}
	l.rates[parent], l.rates[child] = r, r
}

// forget drops a shard's counts and samples (its replica left this node).
func (l *shardLoad) forget(shard uint64) { l.counts.Delete(shard) }

// minSplitSamples is the fewest sampled accesses a split by load decides on.
const minSplitSamples = 32

// splitKey returns the sampled key strictly inside [start, end) that best divides the shard's
// recent accesses into two halves (those before it, and it and those after), and the share of
// the larger half; nil if there are too few samples or no key inside.
func (l *shardLoad) splitKey(shard uint64, start, end []byte) ([]byte, float64) {
	c := l.count(shard)
	c.mu.Lock()
	keys := make([][]byte, 0, len(c.cur)+len(c.prev))
	for _, k := range slices.Concat(c.prev, c.cur) {
		if bytes.Compare(k, start) >= 0 && (len(end) == 0 || bytes.Compare(k, end) < 0) {
			keys = append(keys, k)
		}
	}
	c.mu.Unlock()
	if len(keys) < minSplitSamples {
		return nil, 1
	}
	slices.SortFunc(keys, bytes.Compare)
	var best []byte
	bestShare := 1.0
	for i := 1; i < len(keys); i++ {
		if bytes.Equal(keys[i], keys[i-1]) || bytes.Compare(keys[i], start) <= 0 {
			continue // split only between distinct keys, strictly inside the range
		}
		share := float64(max(i, len(keys)-i)) / float64(len(keys))
		if share < bestShare {
			best, bestShare = keys[i], share
		}
	}
	return best, bestShare
}
