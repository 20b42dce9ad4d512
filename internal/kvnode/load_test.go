package kvnode

import (
	"testing"
	"time"
)

func TestShardLoadRates(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newShardLoad(func() time.Time { return now })
	l.add(1, 10, 0)
	l.add(1, 0, 20)
	l.add(2, 5, 5)
	if r, w := l.rate(1); r != 0 || w != 0 {
		t.Fatalf("rates before a whole window: %v %v", r, w)
	}
	now = now.Add(2 * loadWindow)
	if r, w := l.rate(1); r != 10/(2*loadWindow.Seconds()) || w != 20/(2*loadWindow.Seconds()) {
		t.Fatalf("shard 1: %v %v", r, w)
	}
	if r, w := l.rate(2); r != 5/(2*loadWindow.Seconds()) || w != r {
		t.Fatalf("shard 2: %v %v", r, w)
	}
	// The next window starts empty; its rates replace the last ones only when it is whole.
	l.add(2, 0, 100)
	now = now.Add(loadWindow / 2)
	if r, _ := l.rate(2); r != 5/(2*loadWindow.Seconds()) {
		t.Fatalf("rate changed inside a window: %v", r)
	}
	now = now.Add(loadWindow / 2)
	if r, w := l.rate(2); r != 0 || w != 100/loadWindow.Seconds() {
		t.Fatalf("shard 2 second window: %v %v", r, w)
	}
	if r, w := l.rate(1); r != 0 || w != 0 {
		t.Fatalf("idle shard: %v %v", r, w)
	}
}
