package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"

	"github.com/google/btree"

	"github.com/postdb/pcs/api/pcspb"
)

// Exactly-once application of client requests (Raft dissertation §6.3; RIFL). Each mutating
// request carries (client id, seq); the state machine records the outcome of each client's
// recent requests and answers a repeat with the recorded outcome instead of applying it again.
//
// The table is bounded three ways, all deterministic (they depend only on the log):
//   - a client's outcomes below its acked_below are forgotten (it has its answers), and a
//     session keeps at most MaxSessionOutcomes (the oldest go first, raising its floor);
//   - a session idle for SessionTTL of the state machine's clock (the largest proposer wall
//     clock seen in the log) is dropped;
//   - at most MaxSessions sessions are kept; the least recently active is dropped first.
//
// A retry the table cannot vouch for — its session, or the part of it holding the seq, may have
// been dropped after the first attempt — fails with ErrOutcomeUnknown rather than being
// applied a second time. A first attempt is always applied: one attempt is proposed at most once.
const (
	SessionTTL         = 10 * 60 * 1000 // ms
	MaxSessions        = 50_000
	MaxSessionOutcomes = 1000
	// sessionSkew is the clock difference between proposers the drop check allows for.
	sessionSkew = 60 * 1000 // ms
)

// ErrOutcomeUnknown: a retried request whose outcome is no longer recorded; it may or may not
// have been applied.
var ErrOutcomeUnknown = errors.New("meta: outcome of the retried request unknown")

type session struct {
	id         uint64
	floor      uint64 // every applied seq >= floor is in outcomes
	trimmed    bool   // floor was raised after creation
	lastActive uint64
	outcomes   map[uint64]*pcspb.Outcome
}

func sessionLess(a, b *session) bool {
	if a.lastActive != b.lastActive {
		return a.lastActive < b.lastActive
	}
	return a.id < b.id
}

// sessions is the table of client sessions.
type sessions struct {
	byID        map[uint64]*session
	byAge       *btree.BTreeG[*session]
	clock       uint64 // ms
	dropHorizon uint64 // largest lastActive of a dropped session
}

func newSessions() *sessions {
	return &sessions{byID: map[uint64]*session{}, byAge: btree.NewG(16, sessionLess)}
}

// advance moves the clock and drops expired sessions.
func (t *sessions) advance(nowMs uint64) {
	if nowMs <= t.clock {
		return
	}
	t.clock = nowMs
	for {
		s, ok := t.byAge.Min()
		if !ok || s.lastActive+SessionTTL >= t.clock {
			return
		}
		t.drop(s)
	}
}

func (t *sessions) drop(s *session) {
	t.byAge.Delete(s)
	delete(t.byID, s.id)
	t.dropHorizon = max(t.dropHorizon, s.lastActive)
}

// mayHaveDropped reports whether a session active when a request of age ageMs was first sent
// may have been dropped since.
func (t *sessions) mayHaveDropped(ageMs uint64) bool {
	if t.dropHorizon == 0 {
		return false
	}
	sent := uint64(0)
	if t.clock > ageMs+sessionSkew {
		sent = t.clock - ageMs - sessionSkew
	}
	return t.dropHorizon >= sent
}

// lookup decides what to do with request r: a recorded outcome to answer with (dup), an error
// (ErrOutcomeUnknown), or neither (apply it and then call record).
func (t *sessions) lookup(r *pcspb.RequestID) (dup *pcspb.Outcome, err error) {
	s := t.byID[r.ClientId]
	if s != nil {
		if o := s.outcomes[r.Seq]; o != nil {
			return o, nil
		}
	}
	if !r.Retry {
		return nil, nil
	}
	switch {
	case s != nil && r.Seq >= s.floor:
		return nil, nil
	case s != nil && s.trimmed:
		return nil, fmt.Errorf("%w: client %x seq %d is below the recorded window (from %d)", ErrOutcomeUnknown, r.ClientId, r.Seq, s.floor)
	case t.mayHaveDropped(r.AgeMs):
		return nil, fmt.Errorf("%w: client %x's session may have expired since the first attempt", ErrOutcomeUnknown, r.ClientId)
	}
	return nil, nil
}

// record stores the outcome of an applied request.
func (t *sessions) record(r *pcspb.RequestID, o *pcspb.Outcome) {
	s := t.byID[r.ClientId]
	if s == nil {
		s = &session{id: r.ClientId, floor: r.Seq, lastActive: t.clock, outcomes: map[uint64]*pcspb.Outcome{}}
		t.byID[s.id] = s
		t.byAge.ReplaceOrInsert(s)
		for len(t.byID) > MaxSessions {
			oldest, _ := t.byAge.Min()
			t.drop(oldest)
		}
	} else if s.lastActive != t.clock {
		t.byAge.Delete(s)
		s.lastActive = t.clock
		t.byAge.ReplaceOrInsert(s)
	}
	s.outcomes[r.Seq] = o
	t.trim(s, r.AckedBelow)
	for len(s.outcomes) > MaxSessionOutcomes {
		t.trim(s, minSeq(s.outcomes)+1)
	}
}

// trim forgets the outcomes below seq.
func (t *sessions) trim(s *session, seq uint64) {
	if seq <= s.floor {
		return
	}
	for q := range s.outcomes {
		if q < seq {
			delete(s.outcomes, q)
		}
	}
	s.floor, s.trimmed = seq, true
}

func minSeq(m map[uint64]*pcspb.Outcome) uint64 {
	first := true
	var lo uint64
	for q := range m {
		if first || q < lo {
			lo, first = q, false
		}
	}
	return lo
}

// protos returns the sessions in client id order (snapshots and digests).
func (t *sessions) protos() []*pcspb.ClientSession {
	out := make([]*pcspb.ClientSession, 0, len(t.byID))
	for _, s := range t.byID {
		cs := &pcspb.ClientSession{ClientId: s.id, Floor: s.floor, LastActiveMs: s.lastActive}
		if s.trimmed {
			// A trimmed session's floor is not its first seq; the snapshot keeps that through
			// an outcome-less marker: floor is stored negated in the top bit.
			cs.Floor |= trimmedBit
		}
		for _, o := range s.outcomes {
			cs.Outcomes = append(cs.Outcomes, o)
		}
		sort.Slice(cs.Outcomes, func(i, j int) bool { return cs.Outcomes[i].Seq < cs.Outcomes[j].Seq })
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientId < out[j].ClientId })
	return out
}

const trimmedBit = 1 << 63

// clone deep-copies the table (outcomes are immutable once recorded and are shared).
func (t *sessions) clone() *sessions {
	c := newSessions()
	c.clock, c.dropHorizon = t.clock, t.dropHorizon
	for id, s := range t.byID {
		cs := &session{id: s.id, floor: s.floor, trimmed: s.trimmed, lastActive: s.lastActive, outcomes: make(map[uint64]*pcspb.Outcome, len(s.outcomes))}
		for q, o := range s.outcomes {
			cs.outcomes[q] = o
		}
		c.byID[id] = cs
		c.byAge.ReplaceOrInsert(cs)
	}
	return c
}

// restore adds a session read from a snapshot.
func (t *sessions) restore(cs *pcspb.ClientSession) error {
	if cs.ClientId == 0 || t.byID[cs.ClientId] != nil {
		return fmt.Errorf("session %x: zero or repeated client id", cs.ClientId)
	}
	if len(cs.Outcomes) > MaxSessionOutcomes {
		return fmt.Errorf("session %x: %d outcomes exceed %d", cs.ClientId, len(cs.Outcomes), MaxSessionOutcomes)
	}
	s := &session{id: cs.ClientId, floor: cs.Floor &^ trimmedBit, trimmed: cs.Floor&trimmedBit != 0,
		lastActive: cs.LastActiveMs, outcomes: make(map[uint64]*pcspb.Outcome, len(cs.Outcomes))}
	for _, o := range cs.Outcomes {
		if o == nil {
			return fmt.Errorf("session %x: empty outcome", cs.ClientId)
		}
		s.outcomes[o.Seq] = o
	}
	t.byID[s.id] = s
	t.byAge.ReplaceOrInsert(s)
	return nil
}

func (t *sessions) digest(h hash.Hash) {
	var buf [8]byte
	u := func(v uint64) { binary.BigEndian.PutUint64(buf[:], v); h.Write(buf[:]) }
	u(t.clock)
	u(t.dropHorizon)
	for _, cs := range t.protos() {
		u(cs.ClientId)
		u(cs.Floor)
		u(cs.LastActiveMs)
		for _, o := range cs.Outcomes {
			u(o.Seq)
			u(o.Revision)
			u(o.Index)
			h.Write([]byte(o.ErrKind))
		}
	}
}

// Error kinds: the sentinels an outcome's error may wrap, by a stable name (recorded in the
// log's outcomes, so names never change).
var errorKinds = map[string]error{
	"version_mismatch":  ErrVersionMismatch,
	"invalid":           ErrInvalid,
	"bad_command":       ErrBadCommand,
	"table_exists":      ErrTableExists,
	"table_not_found":   ErrTableNotFound,
	"shard_not_found":   ErrShardNotFound,
	"node_not_found":    ErrNodeNotFound,
	"alter_in_progress": ErrAlterInProgress,
	"table_not_public":  ErrTableNotPublic,
	"stale_epoch":       ErrStaleEpoch,
}

func errorKind(err error) string {
	names := make([]string, 0, len(errorKinds))
	for n := range errorKinds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if errors.Is(err, errorKinds[n]) {
			return n
		}
	}
	return "other"
}

// recordedError is an error read back from an outcome.
type recordedError struct {
	kind error
	msg  string
}

func (e *recordedError) Error() string { return e.msg }
func (e *recordedError) Unwrap() error { return e.kind }

func outcomeError(o *pcspb.Outcome) error {
	if o.ErrKind == "" {
		return nil
	}
	return &recordedError{kind: errorKinds[o.ErrKind], msg: o.ErrMsg}
}

// outcomeOf records a result.
func outcomeOf(seq uint64, res *Result) *pcspb.Outcome {
	o := &pcspb.Outcome{Seq: seq, Revision: res.Revision, Index: res.Index, Deleted: res.Deleted, First: res.First, Id: res.ID}
	if res.KV != nil {
		o.Kv = &pcspb.KeyValue{CreateRevision: res.KV.CreateRevision, ModRevision: res.KV.ModRevision, Version: res.KV.Version}
	}
	if res.Err != nil {
		o.ErrKind, o.ErrMsg = errorKind(res.Err), strings.Clone(res.Err.Error())
	}
	return o
}

// resultOf answers a repeated command from its recorded outcome.
func resultOf(cmd *pcspb.Command, o *pcspb.Outcome) *Result {
	res := &Result{Revision: o.Revision, Index: o.Index, Deleted: o.Deleted, First: o.First, ID: o.Id, Err: outcomeError(o), Duplicate: true}
	if o.Kv != nil {
		if p := cmd.GetPut(); p != nil {
			res.KV = &pcspb.KeyValue{Key: p.Key, Value: p.Value, CreateRevision: o.Kv.CreateRevision, ModRevision: o.Kv.ModRevision, Version: o.Kv.Version}
		}
	}
	return res
}
