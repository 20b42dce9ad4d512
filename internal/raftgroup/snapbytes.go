package raftgroup

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A snapshot by log size. Raft's own trigger counts entries, and PCS's entries differ in size by
// five orders of magnitude: a put is a few hundred bytes, a create-table command with thousands
// of partitions is megabytes. A log of a few thousand such entries holds millions of shards and
// is replayed whole at start. sizedFSM counts the bytes applied since the last snapshot, and the
// group asks Raft for a snapshot once they exceed the larger of Config.SnapshotBytes and an
// eighth of the newest snapshot's size (snapshotShare): the replay at start then stays a
// fraction of the restore, and at most eight states' worth of snapshots are written per state's
// worth of log. (A log byte of a create-table command costs about four times a snapshot byte to
// apply: an eighth of the snapshot in log is about half its restore.)

// sizedFSM wraps the application's FSM and counts the command bytes applied since the last
// snapshot was taken or restored.
type sizedFSM struct {
	raft.FSM
	applied atomic.Uint64
	limit   atomic.Uint64 // 0: off
	over    chan struct{} // capacity 1: applied has reached limit
}

func newSizedFSM(fsm raft.FSM, limit uint64) *sizedFSM {
	s := &sizedFSM{FSM: fsm, over: make(chan struct{}, 1)}
	s.limit.Store(limit)
	return s
}

// Apply implements raft.FSM.
func (s *sizedFSM) Apply(l *raft.Log) any {
	res := s.FSM.Apply(l)
	if n, limit := s.applied.Add(uint64(len(l.Data))), s.limit.Load(); limit > 0 && n >= limit {
		select {
		case s.over <- struct{}{}:
		default:
		}
	}
	return res
}

// Snapshot implements raft.FSM. Raft calls it on the FSM's goroutine, between applies, so the
// count restarts exactly at the snapshot's index.
func (s *sizedFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := s.FSM.Snapshot()
	if err == nil {
		s.applied.Store(0)
	}
	return snap, err
}

// Restore implements raft.FSM.
func (s *sizedFSM) Restore(rc io.ReadCloser) error {
	err := s.FSM.Restore(rc)
	if err == nil {
		s.applied.Store(0)
	}
	return err
}

// StoreConfiguration implements raft.ConfigurationStore when the wrapped FSM does.
func (s *sizedFSM) StoreConfiguration(index uint64, c raft.Configuration) {
	if cs, ok := s.FSM.(raft.ConfigurationStore); ok {
		cs.StoreConfiguration(index, c)
	}
}

// snapshotRetry is the pause after a failed snapshot by log size.
const snapshotRetry = time.Second

// snapshotBySize asks Raft for a snapshot each time the log applied since the last one reaches
// the limit (at least floor), until Close.
func (g *Group) snapshotBySize(floor uint64) {
	defer close(g.sizerDone)
	fsm := g.sized
	g.resizeLimit(floor)
	for {
		select {
		case <-g.sizerStop:
			return
		case <-fsm.over:
		}
		limit := fsm.limit.Load()
		n := fsm.applied.Load()
		if n < limit {
			continue // a snapshot by entry count came first
		}
		err := g.Raft.Snapshot().Error()
		switch {
		case errors.Is(err, raft.ErrRaftShutdown):
			return
		case err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot):
			g.hlog.Warn("snapshot by log size failed", "log_bytes", n, "error", err)
			select { // every apply asks again: do not retry in a loop
			case <-g.sizerStop:
				return
			case <-time.After(snapshotRetry):
			}
		default:
			g.hlog.Info("took a snapshot by log size", "log_bytes", n, "limit", limit)
		}
		g.resizeLimit(floor)
	}
}

// snapshotShare: the log since the last snapshot may hold 1/snapshotShare of its size.
const snapshotShare = 8

// resizeLimit sets the limit to the larger of floor and a share of the newest snapshot.
func (g *Group) resizeLimit(floor uint64) {
	limit := floor
	if metas, err := g.Snapshots.List(); err == nil && len(metas) > 0 && metas[0].Size > 0 {
		limit = max(limit, uint64(metas[0].Size)/snapshotShare)
	}
	g.sized.limit.Store(limit)
}

// sizedLimit is the current limit of the snapshot by log size.
func (g *Group) sizedLimit() uint64 { return g.sized.limit.Load() }
