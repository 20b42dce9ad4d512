package raftgroup

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestLogTailTruncationSurvivesRestart: a follower that drops a conflicting log suffix and then
// restarts must still read its log. raft-wal v0.4.0 sealed the tail segment without an index
// block on a tail truncation, and the restarted node panicked in raft ("sealed segment has no
// index block", hashicorp/raft-wal#31); seen here when a SIGKILLed primary rejoined. v0.4.1
// fixes it; this pins the behaviour.
func TestLogTailTruncationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	logs, meta, err := openWAL(dir, DefaultConfig().SegmentSize)
	if err != nil {
		t.Fatal(err)
	}
	var batch []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		batch = append(batch, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")})
	}
	if err := logs.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := logs.DeleteRange(8, 10); err != nil { // a conflicting suffix
		t.Fatal(err)
	}
	if err := logs.StoreLog(&raft.Log{Index: 8, Term: 2, Type: raft.LogCommand, Data: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	logs.Close()
	meta.Close()

	logs, meta, err = openWAL(dir, DefaultConfig().SegmentSize)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { logs.Close(); meta.Close() }()
	for i := uint64(1); i <= 8; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("after restart, log %d: %v", i, err)
		}
	}
	if last, _ := logs.LastIndex(); last != 8 {
		t.Fatalf("last index %d, want 8", last)
	}
}
