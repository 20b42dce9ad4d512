//go:build chaos

package faults

// Enabled reports whether this binary carries the fault hooks (built with -tags chaos).
const Enabled = true
