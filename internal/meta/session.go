package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sort"
	"strings"

	"github.com/google/btree"

	"github.com/postdb/pcs/api/pcspb"
)

// Exactly-once application of client requests (Raft dissertation §6.3; RIFL). Each mutating
// request carries (client id, seq); the state machine records the outcome of each client's
// recent requests and answers a repeat with the recorded outcome instead of applying it again.
//
// From command version 3 (VersionSessionsByLog) the table trusts no clock. It is bounded by
// what every member agrees on — the log — and nothing a clock jump moves:
//   - a client's outcomes below its acked_below are forgotten (it has its answers), and a
//     session keeps at most MaxSessionOutcomes (the oldest go first, raising its floor);
//   - at most MaxSessions sessions and MaxSessionBytes are kept; the session whose last request
//     is oldest in the log is dropped first, and remembered as dropped (MaxDroppedSessions of
//     them; older drops are forgotten, which is remembered too).
//
// A request the table cannot vouch for is refused, never applied a second time: a retry whose
// session was dropped (or may have been), or whose seq is below its session's trimmed floor,
// and a first attempt below that floor (a delayed copy of an attempt whose retry was
// answered), fail with ErrOutcomeUnknown; a first attempt of a dropped session fails with
// ErrSessionExpired (nothing was applied; the client takes a new id and sends it again). A
// session belongs to the certificate identity that opened it: another identity's request with
// its id is refused (ErrIdentity).
//
// Entries of version 2 keep version 2's rules (so members of both builds agree while a cluster
// is upgraded): sessions idle for SessionTTL of the largest proposer clock seen are dropped.
const (
	SessionTTL         = 10 * 60 * 1000 // ms, version 2 only
	MaxSessions        = 50_000
	MaxSessionOutcomes = 1000
	MaxSessionBytes    = 64 << 20
	MaxDroppedSessions = 200_000
	// sessionSkew is the clock difference between proposers the drop check allows for.
	sessionSkew = 60 * 1000 // ms, version 2 only
)

// ErrSessionExpired: a first attempt of a client session that was dropped; nothing was
// applied. The client sends it again under a new client id.
var ErrSessionExpired = errors.New("meta: client session expired")

// ErrOutcomeUnknown: a retried request whose outcome is no longer recorded; it may or may not
// have been applied.
var ErrOutcomeUnknown = errors.New("meta: outcome of the retried request unknown")

type session struct {
	id         uint64
	floor      uint64 // every applied seq >= floor is in outcomes
	trimmed    bool   // floor was raised after creation
	lastActive uint64 // Raft index of its last request (version 2: proposer ms)
	identity   string
	bytes      int // what it holds, about
	outcomes   map[uint64]*pcspb.Outcome
}

// Sizes the byte bound counts, about what the Go structures take.
const (
	sessionBytes = 160
	outcomeBytes = 120
)

func outcomeSize(o *pcspb.Outcome) int { return outcomeBytes + len(o.ErrMsg) }

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
	clock       uint64 // ms, version 2 only
	dropHorizon uint64 // largest lastActive of a dropped session, version 2 only
	bytes       int    // of every session

	// Sessions dropped under version 3 rules, oldest first; lost: some were forgotten.
	dropped      map[uint64]struct{}
	droppedOrder []uint64
	droppedLost  bool
}

func newSessions() *sessions {
	return &sessions{byID: map[uint64]*session{}, byAge: btree.NewG(16, sessionLess), dropped: map[uint64]struct{}{}}
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
		t.drop(s, VersionRequestIDs)
	}
}

func (t *sessions) drop(s *session, version uint32) {
	t.byAge.Delete(s)
	delete(t.byID, s.id)
	t.bytes -= s.bytes
	if version < VersionSessionsByLog {
		t.dropHorizon = max(t.dropHorizon, s.lastActive)
		return
	}
	t.addDropped(s.id)
}

// addDropped remembers a dropped session, forgetting the oldest beyond MaxDroppedSessions.
func (t *sessions) addDropped(id uint64) {
	if _, ok := t.dropped[id]; ok {
		return
	}
	t.dropped[id] = struct{}{}
	t.droppedOrder = append(t.droppedOrder, id)
	if len(t.droppedOrder) > MaxDroppedSessions {
		delete(t.dropped, t.droppedOrder[0])
		t.droppedOrder = slices.Delete(t.droppedOrder, 0, 1)
		t.droppedLost = true
	}
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

// lookup decides what to do with request r in an entry of the given command version: a
// recorded outcome to answer with (dup), an error (ErrOutcomeUnknown, ErrSessionExpired,
// ErrIdentity), or neither (apply it and then call record).
func (t *sessions) lookup(r *pcspb.RequestID, version uint32) (dup *pcspb.Outcome, err error) {
	if version >= VersionSessionsByLog {
		return t.lookupByLog(r)
	}
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

// lookupByLog is lookup under version 3's rules.
func (t *sessions) lookupByLog(r *pcspb.RequestID) (*pcspb.Outcome, error) {
	s := t.byID[r.ClientId]
	switch {
	case s != nil && s.identity != r.Identity:
		return nil, fmt.Errorf("%w: client id %x belongs to another identity than %q", ErrIdentity, r.ClientId, r.Identity)
	case s != nil:
		if o := s.outcomes[r.Seq]; o != nil {
			return o, nil
		}
		if r.Seq < s.floor && s.trimmed {
			return nil, fmt.Errorf("%w: client %x seq %d is below the recorded window (from %d)", ErrOutcomeUnknown, r.ClientId, r.Seq, s.floor)
		}
		return nil, nil
	}
	if _, gone := t.dropped[r.ClientId]; gone {
		if r.Retry {
			return nil, fmt.Errorf("%w: client %x's session was dropped since the first attempt", ErrOutcomeUnknown, r.ClientId)
		}
		return nil, fmt.Errorf("%w: client %x", ErrSessionExpired, r.ClientId)
	}
	if r.Retry && t.droppedLost {
		return nil, fmt.Errorf("%w: client %x has no session, and some dropped sessions are no longer remembered", ErrOutcomeUnknown, r.ClientId)
	}
	return nil, nil
}

// record stores the outcome of an applied request of an entry at index of the given version.
func (t *sessions) record(r *pcspb.RequestID, o *pcspb.Outcome, version uint32, index uint64) {
	now := t.clock
	if version >= VersionSessionsByLog {
		now = index
	}
	s := t.byID[r.ClientId]
	if s == nil {
		s = &session{id: r.ClientId, floor: r.Seq, lastActive: now, outcomes: map[uint64]*pcspb.Outcome{}, bytes: sessionBytes}
		if version >= VersionSessionsByLog {
			s.identity = r.Identity
			s.bytes += len(r.Identity)
		}
		t.byID[s.id] = s
		t.byAge.ReplaceOrInsert(s)
		t.bytes += s.bytes
	} else if s.lastActive != now {
		t.byAge.Delete(s)
		s.lastActive = now
		t.byAge.ReplaceOrInsert(s)
	}
	if prev := s.outcomes[r.Seq]; prev != nil {
		t.resize(s, -outcomeSize(prev))
	}
	s.outcomes[r.Seq] = o
	t.resize(s, outcomeSize(o))
	t.trim(s, r.AckedBelow)
	for len(s.outcomes) > MaxSessionOutcomes {
		t.trim(s, minSeq(s.outcomes)+1)
	}
	for len(t.byID) > MaxSessions || (version >= VersionSessionsByLog && t.bytes > MaxSessionBytes && len(t.byID) > 1) {
		oldest, _ := t.byAge.Min()
		t.drop(oldest, version)
	}
}

func (t *sessions) resize(s *session, delta int) {
	s.bytes += delta
	t.bytes += delta
}

// trim forgets the outcomes below seq.
func (t *sessions) trim(s *session, seq uint64) {
	if seq <= s.floor {
		return
	}
	for q, o := range s.outcomes {
		if q < seq {
			t.resize(s, -outcomeSize(o))
			delete(s.outcomes, q)
		}
	}
	s.floor, s.trimmed = seq, true
}

// size is the number of sessions and about the bytes they hold.
func (t *sessions) size() (int, int) { return len(t.byID), t.bytes }

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
		cs := &pcspb.ClientSession{ClientId: s.id, Floor: s.floor, LastActiveMs: s.lastActive, Identity: s.identity}
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
	c.clock, c.dropHorizon, c.bytes, c.droppedLost = t.clock, t.dropHorizon, t.bytes, t.droppedLost
	c.droppedOrder = slices.Clone(t.droppedOrder)
	for id := range t.dropped {
		c.dropped[id] = struct{}{}
	}
	for id, s := range t.byID {
		cs := &session{id: s.id, floor: s.floor, trimmed: s.trimmed, lastActive: s.lastActive, identity: s.identity, bytes: s.bytes,
			outcomes: make(map[uint64]*pcspb.Outcome, len(s.outcomes))}
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
		lastActive: cs.LastActiveMs, identity: cs.Identity, bytes: sessionBytes + len(cs.Identity), outcomes: make(map[uint64]*pcspb.Outcome, len(cs.Outcomes))}
	for _, o := range cs.Outcomes {
		if o == nil {
			return fmt.Errorf("session %x: empty outcome", cs.ClientId)
		}
		s.outcomes[o.Seq] = o
		s.bytes += outcomeSize(o)
	}
	t.byID[s.id] = s
	t.byAge.ReplaceOrInsert(s)
	t.bytes += s.bytes
	return nil
}

// restoreDropped adds dropped sessions read from a snapshot.
func (t *sessions) restoreDropped(d *pcspb.DroppedSessions) error {
	if len(t.droppedOrder)+len(d.ClientIds) > MaxDroppedSessions {
		return fmt.Errorf("more than %d dropped sessions", MaxDroppedSessions)
	}
	for _, id := range d.ClientIds {
		if _, ok := t.dropped[id]; ok || id == 0 {
			return fmt.Errorf("dropped session %x: zero or repeated", id)
		}
		t.dropped[id] = struct{}{}
		t.droppedOrder = append(t.droppedOrder, id)
	}
	t.droppedLost = t.droppedLost || d.Lost
	return nil
}

// droppedProtos returns the dropped sessions in chunks of at most n (snapshots).
func (t *sessions) droppedProtos(n int) []*pcspb.DroppedSessions {
	var out []*pcspb.DroppedSessions
	for ids := range slices.Chunk(t.droppedOrder, n) {
		out = append(out, &pcspb.DroppedSessions{ClientIds: ids})
	}
	if t.droppedLost {
		if len(out) == 0 {
			out = append(out, &pcspb.DroppedSessions{})
		}
		out[len(out)-1].Lost = true
	}
	return out
}

func (t *sessions) digest(h hash.Hash) {
	var buf [8]byte
	u := func(v uint64) { binary.BigEndian.PutUint64(buf[:], v); h.Write(buf[:]) }
	u(t.clock)
	u(t.dropHorizon)
	for _, id := range t.droppedOrder {
		u(id) // (none before version 3: the digest of a version 2 table is unchanged)
	}
	if t.droppedLost {
		h.Write([]byte("lost"))
	}
	for _, cs := range t.protos() {
		u(cs.ClientId)
		u(cs.Floor)
		u(cs.LastActiveMs)
		h.Write([]byte(cs.Identity))
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
	"session_expired":   ErrSessionExpired,
	"identity":          ErrIdentity,
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
