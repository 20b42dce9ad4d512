package faults

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/clock"
)

func TestClockJumpAndRate(t *testing.T) {
	base := clock.NewManual(1_000_000)
	c := NewClock(base)
	if c.WallMs() != 1_000_000 {
		t.Fatalf("no skew: %d", c.WallMs())
	}
	c.Jump(-10 * time.Second)
	if got := c.WallMs(); got != 990_000 {
		t.Fatalf("after a jump back: %d", got)
	}
	if err := c.SetRate(2); err != nil {
		t.Fatal(err)
	}
	base.Advance(time.Second)
	if got := c.WallMs(); got != 992_000 {
		t.Fatalf("at rate 2 one second on: %d, want 992000", got)
	}
	if c.Mono() != time.Second {
		t.Fatalf("monotonic reading skewed: %v", c.Mono())
	}
	for _, bad := range []float64{0, -1, 1000} {
		if err := c.SetRate(bad); err == nil {
			t.Errorf("rate %v accepted", bad)
		}
	}
	c.Reset()
	if c.WallMs() != base.WallMs() || c.Skew() != 0 {
		t.Fatalf("reset: %d vs %d", c.WallMs(), base.WallMs())
	}
}

func TestStalls(t *testing.T) {
	var none *Stalls
	none.Wait(RaftLog) // nil never stalls
	if none.Hook(RaftLog) != nil {
		t.Fatal("nil Stalls gave a hook")
	}
	s := NewStalls()
	s.Set(Pebble, 50*time.Millisecond)
	start := time.Now()
	s.Hook(Pebble)()
	if time.Since(start) < 40*time.Millisecond {
		t.Fatalf("stall did not hold: %v", time.Since(start))
	}
	s.Wait(RaftLog) // another point is not stalled
	if s.counts()[Pebble] != 1 || s.counts()[RaftLog] != 0 {
		t.Fatalf("counts %v", s.counts())
	}
}

func TestHandler(t *testing.T) {
	base := clock.NewManual(5_000)
	c, s := NewClock(base), NewStalls()
	h := Handler(c, s)
	do := func(method, url string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, url, nil))
		return w
	}
	for _, tc := range []struct {
		method, url string
		code        int
	}{
		{"POST", "/debug/faults/clock?jump=10s", 200},
		{"POST", "/debug/faults/clock?jump=ten", 400},
		{"POST", "/debug/faults/clock?rate=0", 400},
		{"POST", "/debug/faults/clock", 400},
		{"POST", "/debug/faults/stall?point=raft-log&for=1ms", 200},
		{"POST", "/debug/faults/stall?point=disk&for=1s", 400},
		{"POST", "/debug/faults/stall?point=pebble&for=2h", 400},
		{"POST", "/debug/faults/stall?point=pebble", 400},
		{"GET", "/debug/faults", 200},
	} {
		if w := do(tc.method, tc.url); w.Code != tc.code {
			t.Errorf("%s %s: %d %q, want %d", tc.method, tc.url, w.Code, w.Body, tc.code)
		}
	}
	if c.Skew() != 10*time.Second {
		t.Fatalf("skew %v after jump=10s (bad requests must change nothing)", c.Skew())
	}
	if w := do("GET", "/debug/faults"); !strings.Contains(w.Body.String(), `"clock_skew_ms":10000`) {
		t.Fatalf("state %s", w.Body)
	}
	// A process without hooks says so.
	w := httptest.NewRecorder()
	Handler(nil, nil).ServeHTTP(w, httptest.NewRequest("POST", "/debug/faults/clock?jump=1s", nil))
	if w.Code != http.StatusNotFound {
		t.Fatalf("no clock hook: %d", w.Code)
	}
}
