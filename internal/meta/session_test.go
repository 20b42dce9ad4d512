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

// TestForgottenRequestsAreUnknownNotReappliedV2: version 2's rules, kept for entries written
// before a cluster moved to version 3.
func TestForgottenRequestsAreUnknownNotReappliedV2(t *testing.T) {
	a := &applier{t: t, f: New(Options{}), version: VersionRequestIDs}
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

// TestClockJumpsKeepSessions: under version 3 a proposer's clock 11 minutes ahead or behind
// (a primary with a wrong clock, a failover to one) drops no session: a retry of a write in
// flight is answered from its record, not applied again.
func TestClockJumpsKeepSessions(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	const now = 5_000_000
	const jump = 11 * 60 * 1000
	first := a.apply(req(put("k", "1"), 1, 1, 1, false, now))
	a.apply(req(put("other", "x"), 2, 1, 1, false, now+jump))   // a primary 11 min ahead
	a.apply(req(put("other", "y"), 2, 2, 2, false, now-jump))   // then one 11 min behind
	a.apply(req(put("other", "z"), 3, 1, 1, false, now+3*jump)) // and far ahead again
	r := a.apply(req(put("k", "1"), 1, 1, 1, true, now+3*jump))
	if !r.Duplicate || r.KV.Version != first.KV.Version {
		t.Fatalf("retry after clock jumps: %+v, want the first attempt's outcome", r)
	}
	if kv, _ := a.f.Get([]byte("k")); kv.Version != 1 {
		t.Fatalf("applied again: version %d", kv.Version)
	}
}

// TestFirstAttemptBelowFloorRefused: a delayed first attempt of a seq the client has its answer
// for (its retry was applied, and the client moved its acked_below past it) is refused, not
// applied a second time.
func TestFirstAttemptBelowFloorRefused(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	a.apply(req(put("k", "1"), 1, 1, 1, true, 0))  // the retry applied seq 1
	a.apply(req(put("j", "2"), 1, 2, 2, false, 0)) // the client has seq 1's answer
	if r := a.apply(req(put("k", "1"), 1, 1, 1, false, 0)); !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Fatalf("delayed first attempt below the floor: %+v", r)
	}
	if kv, _ := a.f.Get([]byte("k")); kv.Version != 1 {
		t.Fatalf("applied again: version %d", kv.Version)
	}
}

// TestDroppedSessionsRefused: once more than MaxSessions sessions exist the oldest (by log
// position) is dropped and remembered: its retry is refused as unknown, its first attempt as
// an expired session (the client takes a new id); a retry of a session never seen applies.
func TestDroppedSessionsRefused(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	for c := uint64(1); c <= MaxSessions+1; c++ {
		a.apply(req(put("k", "v"), c, 1, 1, false, 0))
	}
	if r := a.apply(req(put("k", "v"), 1, 1, 1, true, 0)); !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Fatalf("retry of a dropped session: %+v", r)
	}
	if r := a.apply(req(put("k", "v"), 1, 2, 2, false, 0)); !errors.Is(r.Err, ErrSessionExpired) {
		t.Fatalf("first attempt of a dropped session: %+v", r)
	}
	if r := a.apply(req(put("k", "v"), 1<<40, 1, 1, true, 0)); r.Err != nil || r.Duplicate {
		t.Fatalf("retry of a session never seen: %+v", r)
	}
	n, b := a.f.mu.st.sess.size()
	if n != MaxSessions || b <= 0 || b > MaxSessionBytes {
		t.Fatalf("%d sessions of %d bytes", n, b)
	}
	// The dropped sessions survive a snapshot.
	data := snapshotBytes(t, a.f)
	g := New(Options{})
	if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	ga := &applier{t: t, f: g, index: a.index}
	if r := ga.apply(req(put("k", "v"), 1, 3, 3, false, 0)); !errors.Is(r.Err, ErrSessionExpired) {
		t.Fatalf("after a restore, first attempt of a dropped session: %+v", r)
	}
	da, _ := a.f.Digest()
	db, _ := g.Digest()
	if da == "" || db == "" {
		t.Fatal("no digest")
	}
}

// TestSessionBelongsToIdentity: a client id opened by one certificate identity cannot be used
// by another (which would turn the owner's real write into a duplicate never applied).
func TestSessionBelongsToIdentity(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	own := req(put("k", "1"), 5, 1, 1, false, 0)
	own.Request.Identity = "app"
	a.apply(own)
	thief := req(put("k", "evil"), 5, 2, 1, false, 0)
	thief.Request.Identity = "mallory"
	if r := a.apply(thief); !errors.Is(r.Err, ErrIdentity) {
		t.Fatalf("another identity's request under the session: %+v", r)
	}
	next := req(put("k", "2"), 5, 2, 1, false, 0)
	next.Request.Identity = "app"
	if r := a.apply(next); r.Err != nil || r.Duplicate || r.KV.Version != 2 {
		t.Fatalf("the owner's next write: %+v", r)
	}
}
