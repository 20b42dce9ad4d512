package tso

import (
	"errors"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/clock"
)

func serving(t *testing.T, clk *clock.Manual, saved int64) *Oracle {
	t.Helper()
	o := NewOracle(clk)
	start := o.Reset(saved)
	o.SetLimit(start + 3000)
	return o
}

func TestComposeSplit(t *testing.T) {
	ts := Compose(1_700_000_000_123, 42)
	if p, l := Split(ts); p != 1_700_000_000_123 || l != 42 {
		t.Fatalf("split %d: %d %d", ts, p, l)
	}
}

func TestStrictlyIncreasing(t *testing.T) {
	clk := clock.NewManual(1_000_000)
	o := serving(t, clk, 0)
	var last uint64
	for i := 0; i < 10_000; i++ {
		ts, err := o.Next(uint32(i%5 + 1))
		if err != nil {
			t.Fatal(err)
		}
		if ts <= last && i > 0 {
			t.Fatalf("timestamp %d after %d", ts, last)
		}
		last = ts + uint64(i%5)
		if i%100 == 0 {
			clk.Advance(time.Millisecond)
		}
	}
}

func TestWallClockStepsBack(t *testing.T) {
	clk := clock.NewManual(1_000_000)
	o := serving(t, clk, 0)
	a, _ := o.Next(1)
	clk.StepWall(-500)
	b, err := o.Next(1)
	if err != nil || b <= a {
		t.Fatalf("after a step back: %d then %d (%v)", a, b, err)
	}
	if p, _ := Split(b); p != 1_000_000 {
		t.Fatalf("physical moved to %d while the clock was behind", p)
	}
}

func TestLogicalOverflowWaitsForNextMillisecond(t *testing.T) {
	clk := clock.NewManual(1_000_000)
	o := serving(t, clk, 0)
	if _, err := o.Next(MaxBatch); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Next(1); !errors.Is(err, ErrLogicalOverflow) {
		t.Fatalf("full millisecond: %v, want ErrLogicalOverflow", err)
	}
	// The wall clock stands still (or stepped back), but a millisecond really passes.
	clk.StepWall(-10)
	clk.Advance(time.Millisecond)
	ts, err := o.Next(1)
	if err != nil {
		t.Fatal(err)
	}
	if p, l := Split(ts); p != 1_000_001 || l != 0 {
		t.Fatalf("after overflow: %d.%d, want 1000001.0", p, l)
	}
}

func TestWindow(t *testing.T) {
	clk := clock.NewManual(1_000_000)
	o := NewOracle(clk)
	if _, err := o.Next(1); !errors.Is(err, ErrNotServing) {
		t.Fatalf("before Reset: %v", err)
	}
	start := o.Reset(0)
	if _, err := o.Next(1); !errors.Is(err, ErrWindowExhausted) {
		t.Fatalf("before the first window commits: %v", err)
	}
	o.SetLimit(start + 10)
	clk.Advance(10 * time.Millisecond)
	if _, err := o.Next(1); !errors.Is(err, ErrWindowExhausted) {
		t.Fatalf("at the window: %v", err)
	}
	o.SetLimit(start + 5) // lower limits are ignored
	o.SetLimit(start + 20)
	if _, err := o.Next(1); err != nil {
		t.Fatal(err)
	}
	o.Stop()
	if _, err := o.Next(1); !errors.Is(err, ErrNotServing) {
		t.Fatalf("after Stop: %v", err)
	}
	if _, err := o.Next(0); !errors.Is(err, ErrBadCount) {
		t.Fatalf("count 0: %v", err)
	}
}

// A new primary starts at or above the saved window even if its clock is behind, so its
// timestamps exceed every one the old primary served.
func TestResetStartsAboveSavedWindow(t *testing.T) {
	old := clock.NewManual(2_000_000)
	o1 := serving(t, old, 0)
	var last uint64
	for i := 0; i < 100; i++ {
		last, _ = o1.Next(1)
	}
	_, limit, _ := o1.Window()
	behind := clock.NewManual(1_000_000) // the new primary's clock is 1000 s behind
	o2 := serving(t, behind, limit)
	ts, err := o2.Next(1)
	if err != nil || ts <= last {
		t.Fatalf("new primary's first timestamp %d, old primary's last %d (%v)", ts, last, err)
	}
}
