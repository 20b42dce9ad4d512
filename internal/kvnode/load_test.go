package kvnode

import (
	"testing"
	"time"
)

func TestShardLoadRates(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newShardLoad(func() time.Time { return now })
	l.add(1, access{reads: 10})
	l.add(1, access{writes: 20})
	l.add(2, access{reads: 5, writes: 5})
	if r, w := rw(l.rate(1)); r != 0 || w != 0 {
		t.Fatalf("rates before a whole window: %v %v", r, w)
	}
	now = now.Add(2 * loadWindow)
	if r, w := rw(l.rate(1)); r != 10/(2*loadWindow.Seconds()) || w != 20/(2*loadWindow.Seconds()) {
		t.Fatalf("shard 1: %v %v", r, w)
	}
	if r, w := rw(l.rate(2)); r != 5/(2*loadWindow.Seconds()) || w != r {
		t.Fatalf("shard 2: %v %v", r, w)
	}
	// The next window starts empty; its rates replace the last ones only when it is whole.
	l.add(2, access{writes: 100})
	now = now.Add(loadWindow / 2)
	if r := l.rate(2).reads; r != 5/(2*loadWindow.Seconds()) {
		t.Fatalf("rate changed inside a window: %v", r)
	}
	now = now.Add(loadWindow / 2)
	if r, w := rw(l.rate(2)); r != 0 || w != 100/loadWindow.Seconds() {
		t.Fatalf("shard 2 second window: %v %v", r, w)
	}
	if r, w := rw(l.rate(1)); r != 0 || w != 0 {
		t.Fatalf("idle shard: %v %v", r, w)
	}
}

func rw(r loadRate) (float64, float64) { return r.reads, r.writes }

func TestShardLoadSplitKey(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newShardLoad(func() time.Time { return now })
	if k, _ := l.splitKey(1, nil, nil); k != nil {
		t.Fatalf("split key without samples: %q", k)
	}
	// Keys a..z, with "m" and after taking three times the traffic of the keys before it.
	for round := 0; round < 20; round++ {
		for c := byte('a'); c <= 'z'; c++ {
			times := 1
			if c >= 'm' {
				times = 3
			}
			for i := 0; i < times; i++ {
				l.add(1, access{writes: 1, writeBytes: 10, key: []byte{c}})
			}
		}
	}
	k, share := l.splitKey(1, nil, nil)
	if k == nil || share > 0.6 {
		t.Fatalf("split key %q share %.2f", k, share)
	}
	// The halves: accesses before k against k and after, within a few percent of each other
	// (the reservoir is a sample).
	if string(k) < "p" || string(k) > "t" {
		t.Fatalf("split key %q: want the key halving the load (about r), not the middle of the data (m)", k)
	}
	// Bounds are respected: no key at or before start.
	if k, _ := l.splitKey(1, []byte("x"), nil); k != nil && string(k) <= "x" {
		t.Fatalf("split key %q not after start x", k)
	}
	// One key taking everything cannot be split away.
	for i := 0; i < 500; i++ {
		l.add(2, access{writes: 1, key: []byte("hot")})
	}
	if k, share := l.splitKey(2, nil, nil); k != nil || share < 1 {
		t.Fatalf("one hot key: split key %q share %.2f", k, share)
	}
	// Samples survive one window rotation and are gone after two.
	now = now.Add(loadWindow)
	l.rate(1)
	if k, _ := l.splitKey(1, nil, nil); k == nil {
		t.Fatal("samples lost at the first rotation")
	}
	now = now.Add(loadWindow)
	l.rate(1)
	if k, _ := l.splitKey(1, nil, nil); k != nil {
		t.Fatalf("samples older than two windows used: %q", k)
	}
}
