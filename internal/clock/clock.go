// Package clock abstracts time so that the deterministic cores (TSO arithmetic, leases) can be
// driven by a manual clock in tests and by the system clock in production.
//
// A Clock has two readings: the wall clock in Unix milliseconds, which may step backwards
// (NTP, an operator), and a monotonic reading, which only goes forward and is the only one
// used to measure durations.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time.
type Clock interface {
	// WallMs is the wall clock in milliseconds since the Unix epoch.
	WallMs() int64
	// Mono is a monotonic reading: elapsed time since an arbitrary fixed origin.
	Mono() time.Duration
}

// Real is the system clock.
type Real struct{ origin time.Time }

// NewReal returns the system clock with its monotonic origin at the call.
func NewReal() *Real { return &Real{origin: time.Now()} }

// WallMs implements Clock.
func (*Real) WallMs() int64 { return time.Now().UnixMilli() }

// Mono implements Clock.
func (r *Real) Mono() time.Duration { return time.Since(r.origin) }

// Manual is a clock for tests: it moves only when told to.
type Manual struct {
	mu     sync.Mutex
	wallMs int64
	mono   time.Duration
}

// NewManual returns a manual clock whose wall reading is wallMs.
func NewManual(wallMs int64) *Manual { return &Manual{wallMs: wallMs} }

// WallMs implements Clock.
func (m *Manual) WallMs() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.wallMs
}

// Mono implements Clock.
func (m *Manual) Mono() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mono
}

// Advance moves both readings forward by d.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mono += d
	m.wallMs += d.Milliseconds()
}

// StepWall moves only the wall reading by ms (negative: the wall clock steps back).
func (m *Manual) StepWall(ms int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wallMs += ms
}
