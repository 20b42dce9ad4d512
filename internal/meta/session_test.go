package meta

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/postdb/pcs/api/pcspb"
)

// req stamps a command with a request id and a proposer clock.
func req(cmd *pcspb.Command, client, seq, ackedBelow uint64, retry bool, nowMs uint64) *pcspb.Command {
	cmd.Request = &pcspb.RequestID{ClientId: client, Seq: seq, AckedBelow: ackedBelow, Retry: retry}
	cmd.ProposedAtMs = nowMs
	return cmd
}

func TestRepeatedRequestAppliesOnce(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	const now = 1_000_000
	first := a.apply(req(put("k", "v"), 7, 1, 1, false, now))
	again := a.apply(req(put("k", "v"), 7, 1, 1, true, now+5))
	if !again.Duplicate || again.KV.Version != 1 || again.KV.ModRevision != first.KV.ModRevision || string(again.KV.Value) != "v" {
		t.Fatalf("repeat of a put: %+v (first %+v)", again, first)
	}
	if kv, _ := a.f.Get([]byte("k")); kv.Version != 1 {
		t.Fatalf("repeat applied again: version %d", kv.Version)
	}
	// A compare-and-swap repeated after it succeeded reports its success, not a mismatch.
	okCAS := a.apply(req(cas("k", "w", 1), 7, 2, 1, false, now+6))
	repCAS := a.apply(req(cas("k", "w", 1), 7, 2, 1, true, now+7))
	if okCAS.Err != nil || repCAS.Err != nil || repCAS.KV.Version != 2 {
		t.Fatalf("cas %v, repeated cas %v %+v", okCAS.Err, repCAS.Err, repCAS.KV)
	}
	// A failed CAS repeated reports the same failure, still errors.Is-able.
	bad := a.apply(req(cas("k", "x", 9), 7, 3, 1, false, now+8))
	repBad := a.apply(req(cas("k", "x", 9), 7, 3, 1, true, now+9))
	if !errors.Is(bad.Err, ErrVersionMismatch) || !errors.Is(repBad.Err, ErrVersionMismatch) || repBad.Err.Error() != bad.Err.Error() {
		t.Fatalf("failed cas %v, repeated %v", bad.Err, repBad.Err)
	}
	// Another client's seq 1 is its own.
	if r := a.apply(req(put("k", "z"), 8, 1, 1, false, now+10)); r.Duplicate || r.KV.Version != 3 {
		t.Fatalf("other client: %+v", r)
	}
	evs, _, _ := a.f.Events(1, nil, 100)
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (one per applied put)", len(evs))
	}
}

func TestForgottenRequestsAreUnknownNotReapplied(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	const now = 5_000_000
	a.apply(req(put("k", "1"), 1, 1, 1, false, now))
	a.apply(req(put("k", "2"), 1, 2, 2, false, now)) // the client has its answer for seq 1
	if r := a.apply(req(put("k", "1"), 1, 1, 2, true, now)); !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Fatalf("retry below acked_below: %+v", r)
	}
	// A retry whose first attempt never arrived (seq 3 not recorded, above the floor) applies.
	if r := a.apply(req(put("k", "3"), 1, 3, 3, true, now)); r.Err != nil || r.Duplicate || r.KV.Version != 3 {
		t.Fatalf("retry of a lost attempt: %+v", r)
	}
	// Sessions expire after SessionTTL of the log's clock; a retry from before that is unknown
	// (its session may have held the outcome), a first attempt applies.
	a.apply(req(put("other", "x"), 2, 1, 1, false, now+SessionTTL+1))
	old := req(put("k", "3"), 1, 3, 3, true, now+SessionTTL+2)
	old.Request.AgeMs = SessionTTL
	if r := a.apply(old); !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Fatalf("retry after expiry: %+v", r)
	}
	if r := a.apply(req(put("k", "4"), 1, 4, 4, false, now+SessionTTL+3)); r.Err != nil || r.KV.Version != 4 {
		t.Fatalf("first attempt after expiry: %+v", r)
	}
	// A retry by a brand-new client whose first attempt was lost, long after any drop, applies.
	later := uint64(now + 3*SessionTTL)
	a.apply(req(put("tick", "x"), 3, 1, 1, false, later))
	if r := a.apply(req(put("new", "x"), 9, 1, 1, true, later)); r.Err != nil {
		t.Fatalf("retry by a new client: %v", r.Err)
	}
}

func TestSessionsSurviveSnapshots(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	for i := uint64(1); i <= 50; i++ {
		a.apply(req(put("k", "v"), 100+i%5, i, 1, false, 10_000+i))
	}
	data := snapshotBytes(t, a.f)
	b := New(Options{})
	if err := b.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	da, _ := a.f.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("digest after restore differs")
	}
	ab := &applier{t: t, f: b, index: a.index}
	if r := ab.apply(req(put("k", "v"), 100+7%5, 7, 1, true, 20_000)); !r.Duplicate {
		t.Fatalf("restored state re-applied a recorded request: %+v", r)
	}
	// Snapshot bytes round-trip exactly.
	if again := snapshotBytes(t, b); len(again) == 0 {
		t.Fatal("empty snapshot")
	}
}

func TestSessionTableIsBounded(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	for i := uint64(1); i <= MaxSessionOutcomes+10; i++ {
		a.apply(req(put("k", "v"), 1, i, 1, false, 1000))
	}
	s := a.f.mu.st.sess.byID[1]
	if len(s.outcomes) > MaxSessionOutcomes || !s.trimmed {
		t.Fatalf("session holds %d outcomes", len(s.outcomes))
	}
	if r := a.apply(req(put("k", "v"), 1, 1, 1, true, 1000)); !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Fatalf("retry of a trimmed seq: %+v", r)
	}
}
