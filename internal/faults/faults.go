// Package faults holds the fault hooks the chaos suite (cmd/pcschaos) drives inside real
// processes: a wall clock whose offset and rate can be changed while the process runs, and named
// disk stalls that hold every fsync at a point for a while. Monotonic clocks are never touched,
// as in production, where only the wall clock jumps.
//
// The hooks are switched over an admin HTTP endpoint (Handler) that the binaries serve only when
// built with -tags chaos and started with --debug-faults-addr: a production build has no way to
// move its clock or stall its disk from outside.
package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/postdb/pcs/internal/clock"
)

// Stall points.
const (
	// RaftLog is every write of the PCS Raft log (raft-wal fsyncs each batch it stores).
	RaftLog = "raft-log"
	// Pebble is every fsync of a data node's Pebble database (WAL and tables).
	Pebble = "pebble"
)

// ErrDisabled is returned when fault hooks are asked of a binary built without them.
var ErrDisabled = errors.New("faults: this binary was built without fault hooks (build with -tags chaos)")

// ErrBadRequest wraps a malformed admin request.
var ErrBadRequest = errors.New("faults: bad request")

// Clock is a wall clock that reads base's wall time moved by an offset and, since the last
// Set, running at rate times real speed. Its monotonic reading is base's, untouched.
type Clock struct {
	base clock.Clock

	mu       sync.Mutex
	offsetMs int64   // added to the wall reading
	rate     float64 // wall speed relative to real time since anchorMs
	anchorMs int64   // base wall reading at the last Set
}

// NewClock returns a Clock over base with no offset and rate 1.
func NewClock(base clock.Clock) *Clock { return &Clock{base: base, rate: 1} }

// WallMs implements clock.Clock.
func (c *Clock) WallMs() int64 {
	now := c.base.WallMs()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wallLocked(now)
}

func (c *Clock) wallLocked(now int64) int64 {
	drift := int64(float64(now-c.anchorMs) * (c.rate - 1))
	return now + c.offsetMs + drift
}

// Mono implements clock.Clock: the base clock's monotonic reading, never skewed.
func (c *Clock) Mono() time.Duration { return c.base.Mono() }

// Jump moves the wall reading by d at once (negative: backwards).
func (c *Clock) Jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offsetMs += d.Milliseconds()
}

// SetRate makes the wall reading run at rate times real speed from now on (continuous from
// the current reading). rate must be positive.
func (c *Clock) SetRate(rate float64) error {
	if !(rate > 0) || rate > 100 {
		return fmt.Errorf("%w: rate %v must be in (0, 100]", ErrBadRequest, rate)
	}
	now := c.base.WallMs()
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.wallLocked(now)
	c.anchorMs, c.rate = now, rate
	c.offsetMs = cur - now
	return nil
}

// Reset drops the offset and the rate: the wall reading is the base's again.
func (c *Clock) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offsetMs, c.rate, c.anchorMs = 0, 1, 0
}

// Skew returns the current offset of the wall reading from the base's.
func (c *Clock) Skew() time.Duration {
	now := c.base.WallMs()
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.wallLocked(now)-now) * time.Millisecond
}

// Stalls holds named disk stalls: while a point's stall lasts, every Wait at it blocks until the
// stall ends. A nil *Stalls never stalls.
type Stalls struct {
	mu    sync.Mutex
	until map[string]time.Time
	count map[string]uint64 // waits that stalled, per point
}

// NewStalls returns Stalls with none set.
func NewStalls() *Stalls {
	return &Stalls{until: map[string]time.Time{}, count: map[string]uint64{}}
}

// Set stalls point for d from now (0 ends a stall at once).
func (s *Stalls) Set(point string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.until[point] = time.Now().Add(d)
}

// Wait blocks while point is stalled.
func (s *Stalls) Wait(point string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	until := s.until[point]
	d := time.Until(until)
	if d > 0 {
		s.count[point]++
	}
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// Hook returns a function that waits at point, or nil for a nil *Stalls (production).
func (s *Stalls) Hook(point string) func() {
	if s == nil {
		return nil
	}
	return func() { s.Wait(point) }
}

// State is what the admin endpoint reports.
type State struct {
	ClockSkewMs int64             `json:"clock_skew_ms"`
	Stalled     map[string]uint64 `json:"stalled_waits"`
}

func (s *Stalls) counts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.count))
	for k, v := range s.count {
		out[k] = v
	}
	return out
}

// Handler serves the admin endpoint:
//
//	GET  /debug/faults                               the State as JSON
//	POST /debug/faults/clock?jump=10s                move the wall clock (jump=-10s: back)
//	POST /debug/faults/clock?rate=1.5                wall clock speed from now on
//	POST /debug/faults/clock?reset=1                 back to the real wall clock
//	POST /debug/faults/stall?point=raft-log&for=2s   stall a point's fsyncs
//
// clk or stalls may be nil (a process without that hook): asking for it is a 404.
func Handler(clk *Clock, stalls *Stalls) http.Handler {
	mux := http.NewServeMux()
	points := map[string]bool{RaftLog: true, Pebble: true}
	mux.HandleFunc("GET /debug/faults", func(w http.ResponseWriter, _ *http.Request) {
		st := State{Stalled: map[string]uint64{}}
		if clk != nil {
			st.ClockSkewMs = clk.Skew().Milliseconds()
		}
		if stalls != nil {
			st.Stalled = stalls.counts()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /debug/faults/clock", func(w http.ResponseWriter, r *http.Request) {
		if clk == nil {
			http.Error(w, "this process has no clock hook", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		var err error
		switch {
		case q.Get("reset") != "":
			clk.Reset()
		case q.Get("jump") != "":
			var d time.Duration
			if d, err = time.ParseDuration(q.Get("jump")); err == nil {
				clk.Jump(d)
			}
		case q.Get("rate") != "":
			var rate float64
			if rate, err = strconv.ParseFloat(q.Get("rate"), 64); err == nil {
				err = clk.SetRate(rate)
			}
		default:
			err = fmt.Errorf("%w: want jump=, rate= or reset=", ErrBadRequest)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "clock skew %v\n", clk.Skew())
	})
	mux.HandleFunc("POST /debug/faults/stall", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		point := q.Get("point")
		if !points[point] {
			http.Error(w, fmt.Sprintf("unknown stall point %q (want %s or %s)", point, RaftLog, Pebble), http.StatusBadRequest)
			return
		}
		if stalls == nil {
			http.Error(w, "this process has no stall hooks", http.StatusNotFound)
			return
		}
		d, err := time.ParseDuration(q.Get("for"))
		if err != nil || d < 0 || d > time.Minute {
			http.Error(w, fmt.Sprintf("bad for=%q: a duration in [0, 1m]", q.Get("for")), http.StatusBadRequest)
			return
		}
		stalls.Set(point, d)
		fmt.Fprintf(w, "%s stalled for %v\n", point, d)
	})
	return mux
}
