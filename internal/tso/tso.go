// Package tso is the timestamp oracle's arithmetic (DESIGN §9), free of I/O.
//
// A timestamp is physical_ms << 18 | logical. The primary persists, through Raft, a window: an
// upper bound on the physical part of every timestamp it may serve. The Oracle serves only
// below the committed window; a new primary starts at or above the saved window, so timestamps
// strictly increase across primary changes. The physical part never goes backwards, whatever
// the wall clock does; when the logical part of one millisecond is used up, the Oracle waits
// for the next millisecond (measured on the monotonic clock) and moves the physical part on.
//
// The Oracle is safe for concurrent use. Persisting the window and checking leadership are the
// caller's: it calls Reset when it takes office, SetLimit when a window commits and Stop when it
// loses office.
package tso

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postdb/pcs/internal/clock"
)

// LogicalBits is the width of the logical counter.
const LogicalBits = 18

// MaxLogical is the number of logical values in one millisecond.
const MaxLogical = 1 << LogicalBits

// MaxBatch is the largest count a single request may ask for.
const MaxBatch = MaxLogical

var (
	// ErrNotServing means the Oracle has no committed window (not primary, or not ready).
	ErrNotServing = errors.New("tso: not serving")
	// ErrWindowExhausted means the next timestamp would reach the committed window; the caller
	// must wait for a window extension to commit.
	ErrWindowExhausted = errors.New("tso: window exhausted")
	// ErrLogicalOverflow means the current millisecond's logical counter is used up; the caller
	// must wait for the next millisecond.
	ErrLogicalOverflow = errors.New("tso: logical counter overflow")
	// ErrBadCount means a request asked for zero or more than MaxBatch timestamps.
	ErrBadCount = errors.New("tso: count out of range")
)

// Compose builds a timestamp.
func Compose(physicalMs int64, logical int64) uint64 {
	return uint64(physicalMs)<<LogicalBits | uint64(logical)
}

// Split returns a timestamp's physical milliseconds and logical counter.
func Split(ts uint64) (physicalMs int64, logical int64) {
	return int64(ts >> LogicalBits), int64(ts & (MaxLogical - 1))
}

// Oracle hands out timestamps from memory below a committed window.
type Oracle struct {
	clk clock.Clock

	mu struct {
		sync.Mutex
		serving  bool
		physical int64         // ms of the last timestamp served
		logical  int64         // next logical value to hand out in physical
		tick     time.Duration // monotonic reading when physical last advanced
		limit    int64         // committed window: physical must stay < limit
	}
}

// NewOracle returns an Oracle that is not serving.
func NewOracle(clk clock.Clock) *Oracle { return &Oracle{clk: clk} }

// Reset starts serving after a primary takes office: the first timestamp will be at least
// savedWindow << 18 and never below the wall clock. It returns the physical start, the value
// from which the caller computes and commits the first window (SetLimit) before anything is
// served.
func (o *Oracle) Reset(savedWindowMs int64) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	start := max(o.clk.WallMs(), savedWindowMs)
	o.mu.serving = true
	o.mu.physical = start
	o.mu.logical = 0
	o.mu.tick = o.clk.Mono()
	o.mu.limit = start // nothing may be served until a window above start commits
	return start
}

// Stop stops serving (the primary lost office).
func (o *Oracle) Stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mu.serving = false
	o.mu.limit = 0
}

// SetLimit raises the committed window; lower values are ignored.
func (o *Oracle) SetLimit(limitMs int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.mu.serving && limitMs > o.mu.limit {
		o.mu.limit = limitMs
	}
}

// Window reports the physical part of the last timestamp served and the committed window.
// NeedsExtension callers compare them against the wall clock.
func (o *Oracle) Window() (physicalMs, limitMs int64, serving bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.physical, o.mu.limit, o.mu.serving
}

// Next reserves count consecutive timestamps in one millisecond and returns the first. On
// ErrLogicalOverflow the caller waits about a millisecond and retries; on ErrWindowExhausted it
// waits for a window extension to commit.
func (o *Oracle) Next(count uint32) (uint64, error) {
	if count == 0 || count > MaxBatch {
		return 0, fmt.Errorf("%w: %d (1..%d)", ErrBadCount, count, MaxBatch)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.mu.serving {
		return 0, ErrNotServing
	}
	if now := o.clk.WallMs(); now > o.mu.physical {
		o.mu.physical, o.mu.logical, o.mu.tick = now, 0, o.clk.Mono()
	}
	if o.mu.logical+int64(count) > MaxLogical {
		// This millisecond is used up. Move on once a millisecond has really passed, even if
		// the wall clock has stepped back and still shows an earlier time.
		mono := o.clk.Mono()
		if mono-o.mu.tick < time.Millisecond {
			return 0, ErrLogicalOverflow
		}
		o.mu.physical, o.mu.logical, o.mu.tick = o.mu.physical+1, 0, mono
	}
	if o.mu.physical >= o.mu.limit {
		return 0, ErrWindowExhausted
	}
	first := Compose(o.mu.physical, o.mu.logical)
	o.mu.logical += int64(count)
	return first, nil
}
