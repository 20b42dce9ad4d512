package kvnode

import (
	"testing"
	"time"
)

// TestResources: the process's memory is reported at once, its CPU and IO rates once a window
// has passed (here on an injected clock, with real CPU spent in between).
func TestResources(t *testing.T) {
	r := newResources()
	t0 := time.Now()
	cores, rss, _ := r.sample(t0)
	if rss == 0 || cores != 0 {
		t.Fatalf("first sample: %v cores, %d bytes resident", cores, rss)
	}
	for spin := time.Now(); time.Since(spin) < 100*time.Millisecond; { // spend CPU
	}
	if cores, _, _ = r.sample(t0.Add(time.Second)); cores != 0 {
		t.Fatalf("a rate before the window ended: %v", cores)
	}
	if cores, _, _ = r.sample(t0.Add(resourceWindow)); cores <= 0 {
		t.Fatalf("no CPU over a window in which 100 ms were spent: %v", cores)
	}
}
