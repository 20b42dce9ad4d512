package server

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/postdb/pcs/internal/meta"
)

// Sizes of the event log's two rings: shard and operator events (splits, primary and replica
// changes, operators finished) come in bursts of thousands when a node fails, so they get a ring of their own and cannot push the
// rarer cluster events (members, nodes, tables, DDL) out.
const (
	clusterEventsKept = 1000
	shardEventsKept   = 2000
)

// eventLog is this member's recent events: every applied command that is an event (the same on
// every member, with the proposer's time) and the primary changes this member observed.
type eventLog struct {
	mu      sync.Mutex
	cluster ring[meta.Event]
	shard   ring[meta.Event]
}

func newEventLog() *eventLog {
	return &eventLog{cluster: newRing[meta.Event](clusterEventsKept), shard: newRing[meta.Event](shardEventsKept)}
}

func (l *eventLog) add(ev meta.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ev.Kind == "shard" || ev.Kind == "operator" {
		l.shard.push(ev)
	} else {
		l.cluster.push(ev)
	}
}

// observe records something this member saw that is not a command (a primary change).
func (l *eventLog) observe(kind, text string, now time.Time) {
	l.add(meta.Event{AtMs: uint64(max(now.UnixMilli(), 0)), Kind: kind, Text: text})
}

// recent returns up to limit events, newest first, of the given kinds (all if empty).
func (l *eventLog) recent(kinds []string, limit int) []meta.Event {
	l.mu.Lock()
	all := append(l.cluster.items(), l.shard.items()...)
	l.mu.Unlock()
	if len(kinds) > 0 {
		all = slices.DeleteFunc(all, func(e meta.Event) bool { return !slices.Contains(kinds, e.Kind) })
	}
	slices.SortStableFunc(all, func(a, b meta.Event) int {
		if c := cmp.Compare(b.AtMs, a.AtMs); c != 0 {
			return c
		}
		return cmp.Compare(b.Index, a.Index)
	})
	return all[:min(limit, len(all))]
}

// ring keeps the last n items pushed.
type ring[T any] struct {
	buf  []T
	next int // where the next push goes once buf is full
}

func newRing[T any](n int) ring[T] { return ring[T]{buf: make([]T, 0, n)} }

func (r *ring[T]) push(v T) {
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, v)
		return
	}
	r.buf[r.next] = v
	r.next = (r.next + 1) % len(r.buf)
}

// items returns the items, oldest first, in a new slice.
func (r *ring[T]) items() []T {
	out := make([]T, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
