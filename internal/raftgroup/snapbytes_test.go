package raftgroup

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// byteFSM keeps the bytes of every command applied; its snapshot is their concatenation.
type byteFSM struct {
	mu   sync.Mutex
	data []byte
}

func (f *byteFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = append(f.data, l.Data...)
	return nil
}

func (f *byteFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return byteSnap(bytes.Clone(f.data)), nil
}

func (f *byteFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.data = b
	f.mu.Unlock()
	return nil
}

func (f *byteFSM) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.data)
}

type byteSnap []byte

func (s byteSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}
func (byteSnap) Release() {}

func openOne(t *testing.T, dir string, snapshotBytes uint64, fsm raft.FSM) *Group {
	return openMember(t, dir, snapshotBytes, fsm, true)
}

func openMember(t *testing.T, dir string, snapshotBytes uint64, fsm raft.FSM, bootstrap bool) *Group {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name, cfg.Dir, cfg.PeerAddr = "one", dir, "127.0.0.1:0"
	cfg.SnapshotThreshold = 1 << 40 // never by entries
	cfg.SnapshotInterval = time.Hour
	cfg.SnapshotBytes = snapshotBytes
	if bootstrap {
		cfg.Bootstrap = func(local raft.ServerAddress) raft.Configuration {
			return raft.Configuration{Servers: []raft.Server{{ID: "one", Address: local, Suffrage: raft.Voter}}}
		}
	}
	g, err := Open(cfg, fsm)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSnapshotByLogBytes: a few large entries trigger a snapshot that an entry count never
// would, the log before it is compacted away, and a restart restores it rather than replaying.
func TestSnapshotByLogBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	fsm := &byteFSM{}
	g := openOne(t, dir, 64<<10, fsm)
	waitFor(ctx, t, "leadership", func() bool { return g.Raft.State() == raft.Leader })

	entry := bytes.Repeat([]byte("x"), 16<<10)
	for i := 0; i < 4; i++ { // 64 KiB: the limit
		if err := g.Raft.Apply(entry, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, "a snapshot by log size", func() bool {
		metas, err := g.Snapshots.List()
		return err == nil && len(metas) == 1 && metas[0].Size >= int64(len(entry)*4)
	})
	metas, _ := g.Snapshots.List()
	if metas[0].Index < 5 { // the configuration entry and four commands
		t.Fatalf("snapshot at index %d, want every command in it", metas[0].Index)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	restored := &byteFSM{}
	g = openMember(t, dir, 64<<10, restored, false)
	defer g.Close()
	if restored.len() != 4*len(entry) { // NewRaft restores the snapshot before it returns
		t.Fatalf("restored %d bytes at open, want %d from the snapshot", restored.len(), 4*len(entry))
	}
}

// TestSnapshotBytesGrowsWithState: the limit is a share of the newest snapshot when that is
// above the floor, so a large state is not rewritten for every floor's worth of log.
func TestSnapshotBytesGrowsWithState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fsm := &byteFSM{}
	const floor = 4 << 10
	g := openOne(t, t.TempDir(), floor, fsm)
	defer g.Close()
	waitFor(ctx, t, "leadership", func() bool { return g.Raft.State() == raft.Leader })

	entry := bytes.Repeat([]byte("y"), 64<<10)
	if err := g.Raft.Apply(entry, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the limit to follow the snapshot", func() bool {
		metas, err := g.Snapshots.List()
		return err == nil && len(metas) == 1 && g.sizedLimit() == uint64(metas[0].Size)/snapshotShare
	})
	if got := g.sizedLimit(); got <= floor {
		t.Fatalf("limit %d after a %d-byte snapshot, want a share of it", got, len(entry))
	}
}
