package meta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/google/btree"
	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/api/pcspb"
)

// DefaultHistory is the default number of key-value events kept for watches.
const DefaultHistory = 100_000

// Result is what Apply returns for a command; the proposer reads it from the ApplyFuture.
type Result struct {
	// Revision is the cluster revision the command produced.
	Revision uint64
	// Index is the Raft index of the command.
	Index uint64
	// KV is the key after a successful put.
	KV *pcspb.KeyValue
	// Deleted reports whether a delete removed a key.
	Deleted bool
	// First is the first id of an id block.
	First uint64
	// ID is the id a catalog command assigned (node, table).
	ID uint64
	// Err is the command's failure (validation or condition); the state is unchanged but for
	// the revision.
	Err error
	// Duplicate reports that the command repeated a request applied before: the result is the
	// recorded one and nothing was applied again.
	Duplicate bool
}

// Options configure an FSM.
type Options struct {
	// History is the number of key-value events kept for watches. Default DefaultHistory.
	History int
	// Logger; nil discards.
	Logger *slog.Logger
	// ObserveApply, if set, is called with the duration of each applied command.
	ObserveApply func(time.Duration)
	// OnBadEntry is called with an entry this build cannot read (a newer command version or
	// operation). Skipping it would silently fork this node's state from the others', so the
	// default panics; it must not return normally either.
	OnBadEntry func(error)
	// OnPrimaryChange, if set, is called (under the FSM's lock: it must not call the FSM)
	// when an applied command makes another node the primary of a shard, with the primary it
	// replaces and the new term. OnRestore is called after a snapshot replaced the state.
	// PCS fences the old primary's grant with them (DESIGN §6).
	OnPrimaryChange func(shard, oldPrimary, newTerm uint64)
	OnRestore       func()
	// OnEvent, if set, is called (under the FSM's lock: it must not call the FSM) with each
	// applied command that is an event (see Event), in log order.
	OnEvent func(Event)
}

// FSM is the metadata state machine. It implements raft.FSM and raft.ConfigurationStore (so
// that configuration entries advance the applied index too).
type FSM struct {
	opts Options
	log  *slog.Logger

	mu struct {
		sync.RWMutex
		st      *state
		changed chan struct{} // closed and replaced after every apply or restore
		// catalogGen counts catalog commands applied and restores: equal values mean the
		// tables, shards and nodes are unchanged (a planner that scans every shard may reuse
		// what it found).
		catalogGen uint64
	}
}

// CatalogGeneration changes whenever the catalog may have changed: a catalog command was
// applied (accepted or not) or a snapshot restored.
func (f *FSM) CatalogGeneration() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.catalogGen
}

// state is everything a snapshot holds.
type state struct {
	revision  uint64
	applied   uint64 // Raft index of the last command or configuration applied
	tsoWindow uint64 // ms
	kv        *btree.BTreeG[*pcspb.KeyValue]
	kvBytes   int64             // keys and values in kv
	ids       map[string]uint64 // next id to hand out per kind; absent means 1
	members   map[string]*pcspb.Member
	hist      history
	cat       *catalogState
	sess      *sessions
	version   uint32 // cluster version: the command format the primary writes
}

func kvLess(a, b *pcspb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }

func newState() *state {
	return &state{
		kv:      btree.NewG(32, kvLess),
		ids:     map[string]uint64{},
		members: map[string]*pcspb.Member{},
		hist:    history{start: 1},
		cat:     newCatalogState(),
		sess:    newSessions(),
	}
}

// New returns an empty FSM.
func New(opts Options) *FSM {
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FSM{opts: opts, log: log}
	f.mu.st = newState()
	f.mu.changed = make(chan struct{})
	return f
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	start := time.Now()
	cmd, err := DecodeEntry(l.Data)
	if err != nil {
		err = fmt.Errorf("cannot apply raft entry %d: %w; this build (command version %d) cannot read it: upgrade this node", l.Index, err, CommandVersion)
		f.log.Error("stopping: unreadable raft entry", "index", l.Index, "err", err)
		if f.opts.OnBadEntry != nil {
			f.opts.OnBadEntry(err)
		}
		panic(err)
	}
	f.mu.Lock()
	st := f.mu.st
	st.revision++
	st.applied = l.Index
	if cmd.Version < VersionSessionsByLog {
		st.sess.advance(cmd.ProposedAtMs)
	}
	res := &Result{Revision: st.revision, Index: l.Index}
	var ev Event
	var isEvent bool
	if f.opts.OnEvent != nil {
		ev.Index, ev.AtMs = l.Index, cmd.ProposedAtMs
		ev.Kind, ev.Text, isEvent = describeLocked(st, cmd)
	}
	req := cmd.Request
	if cmd.Version < VersionRequestIDs {
		req = nil // (an entry of version 1 never carries one; a member of that version ignored it)
	}
	if req != nil && req.ClientId != 0 && req.Seq != 0 {
		dup, err := st.sess.lookup(req, cmd.Version)
		switch {
		case dup != nil:
			res = resultOf(cmd, dup)
		case err != nil:
			res.Err = err
		default:
			f.applyLocked(st, cmd, res)
			st.sess.record(req, outcomeOf(req.Seq, res), cmd.Version, l.Index)
		}
	} else {
		f.applyLocked(st, cmd, res)
	}
	if isEvent && res.Err == nil && !res.Duplicate {
		if rn := cmd.GetRegisterNode(); rn != nil && rn.Node.GetId() == 0 {
			ev.Text = fmt.Sprintf("node %d registered at %s", res.ID, rn.Node.Address)
		}
		if ev.AtMs == 0 { // (commands of the bootstrap carry no proposer time)
			ev.AtMs = uint64(max(time.Now().UnixMilli(), 0))
		}
		f.opts.OnEvent(ev)
	}
	f.notifyLocked()
	f.mu.Unlock()
	if f.opts.ObserveApply != nil {
		f.opts.ObserveApply(time.Since(start))
	}
	return res
}

// StoreConfiguration implements raft.ConfigurationStore.
func (f *FSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.mu.Lock()
	if index > f.mu.st.applied {
		f.mu.st.applied = index
	}
	f.notifyLocked()
	f.mu.Unlock()
}

func (f *FSM) notifyLocked() {
	close(f.mu.changed)
	f.mu.changed = make(chan struct{})
}

func (f *FSM) applyLocked(st *state, cmd *pcspb.Command, res *Result) {
	switch op := cmd.Op.(type) {
	case *pcspb.Command_Put:
		p := op.Put
		old, exists := st.kv.Get(&pcspb.KeyValue{Key: p.Key})
		if p.ExpectedVersion != nil {
			have := uint64(0)
			if exists {
				have = old.Version
			}
			if have != *p.ExpectedVersion {
				res.Err = fmt.Errorf("%w: key has version %d, expected %d", ErrVersionMismatch, have, *p.ExpectedVersion)
				return
			}
		}
		kv := &pcspb.KeyValue{Key: p.Key, Value: p.Value, CreateRevision: st.revision, ModRevision: st.revision, Version: 1}
		if exists {
			kv.CreateRevision = old.CreateRevision
			kv.Version = old.Version + 1
		}
		st.kv.ReplaceOrInsert(kv)
		st.kvBytes += kvSize(kv)
		if exists {
			st.kvBytes -= kvSize(old)
		}
		st.hist.append(&pcspb.Event{Type: pcspb.EventType_EVENT_TYPE_PUT, Kv: kv}, f.opts.History)
		res.KV = kv
	case *pcspb.Command_Delete:
		d := op.Delete
		old, exists := st.kv.Get(&pcspb.KeyValue{Key: d.Key})
		if d.ExpectedVersion != nil {
			have := uint64(0)
			if exists {
				have = old.Version
			}
			if have != *d.ExpectedVersion {
				res.Err = fmt.Errorf("%w: key has version %d, expected %d", ErrVersionMismatch, have, *d.ExpectedVersion)
				return
			}
		}
		if !exists {
			return
		}
		st.kv.Delete(old)
		st.kvBytes -= kvSize(old)
		res.Deleted = true
		st.hist.append(&pcspb.Event{Type: pcspb.EventType_EVENT_TYPE_DELETE,
			Kv: &pcspb.KeyValue{Key: d.Key, ModRevision: st.revision}}, f.opts.History)
	case *pcspb.Command_TsoWindow:
		st.tsoWindow = max(st.tsoWindow, op.TsoWindow.PhysicalMs)
	case *pcspb.Command_AllocIds:
		if _, known := st.ids[op.AllocIds.Kind]; !known && cmd.Version >= VersionSessionsByLog && len(st.ids) >= MaxIDKinds {
			res.Err = fmt.Errorf("%w: %d id kinds exist, the most there may be; use one of them", ErrInvalid, len(st.ids))
			return
		}
		next := max(st.ids[op.AllocIds.Kind], 1)
		res.First = next
		st.ids[op.AllocIds.Kind] = next + op.AllocIds.Count
	case *pcspb.Command_SetMember:
		m := op.SetMember.Member
		st.members[m.Name] = &pcspb.Member{Name: m.Name, PeerAddr: m.PeerAddr, ClientAddr: m.ClientAddr, HttpAddr: m.HttpAddr}
	case *pcspb.Command_RemoveMember:
		delete(st.members, op.RemoveMember.Name)
	case *pcspb.Command_SetClusterVersion:
		st.version = max(st.version, op.SetClusterVersion.Version)
	default:
		f.mu.catalogGen++
		f.applyCatalogLocked(st, cmd, res)
	}
}

// Snapshot implements raft.FSM. It is O(1): the trees are copied on write.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.mu.st
	return &fsmSnapshot{st: st.cloneLocked()}, nil
}

func (st *state) cloneLocked() *state {
	c := &state{
		revision:  st.revision,
		applied:   st.applied,
		tsoWindow: st.tsoWindow,
		kv:        st.kv.Clone(),
		kvBytes:   st.kvBytes,
		ids:       make(map[string]uint64, len(st.ids)),
		members:   make(map[string]*pcspb.Member, len(st.members)),
		hist:      history{start: st.hist.start, events: append([]*pcspb.Event(nil), st.hist.events[st.hist.head:]...)},
		cat:       st.cat.clone(),
		sess:      st.sess.clone(),
		version:   st.version,
	}
	for k, v := range st.ids {
		c.ids[k] = v
	}
	for k, v := range st.members {
		c.members[k] = v
	}
	return c
}

// Restore implements raft.FSM. The state is replaced only after the whole snapshot has been
// read and verified.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.mu.st = st
	f.mu.catalogGen++
	f.notifyLocked()
	f.mu.Unlock()
	if f.opts.OnRestore != nil {
		f.opts.OnRestore()
	}
	f.log.Info("restored snapshot", "revision", st.revision, "applied_index", st.applied, "keys", st.kv.Len())
	return nil
}

func kvSize(kv *pcspb.KeyValue) int64 { return int64(len(kv.Key) + len(kv.Value)) }

// KVBytes is the bytes of keys and values in the system key-value namespace (the quota counts
// them).
func (f *FSM) KVBytes() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.st.kvBytes
}

// SessionSize is the number of client sessions and about the bytes they hold.
func (f *FSM) SessionSize() (int, int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.st.sess.size()
}

// Position is the applied position of the state.
type Position struct {
	Revision     uint64
	AppliedIndex uint64
}

// Position returns the current revision and applied index.
func (f *FSM) Position() Position {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Position{f.mu.st.revision, f.mu.st.applied}
}

// WaitApplied blocks until the applied index reaches index or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) (Position, error) {
	for {
		f.mu.RLock()
		pos := Position{f.mu.st.revision, f.mu.st.applied}
		ch := f.mu.changed
		f.mu.RUnlock()
		if pos.AppliedIndex >= index {
			return pos, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return pos, fmt.Errorf("waiting for applied index %d (at %d): %w", index, pos.AppliedIndex, ctx.Err())
		}
	}
}

// Changed returns a channel closed at the next apply or restore.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.changed
}

// Get returns a key, or nil, and the position it was read at.
func (f *FSM) Get(key []byte) (*pcspb.KeyValue, Position) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	kv, _ := f.mu.st.kv.Get(&pcspb.KeyValue{Key: key})
	return kv, Position{f.mu.st.revision, f.mu.st.applied}
}

// Range returns up to limit keys with prefix that sort after `after`, and whether more match.
func (f *FSM) Range(prefix, after []byte, limit int) ([]*pcspb.KeyValue, bool, Position) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pcspb.KeyValue
	more := false
	from := prefix
	if bytes.Compare(after, from) >= 0 {
		from = append(append([]byte(nil), after...), 0)
	}
	f.mu.st.kv.AscendGreaterOrEqual(&pcspb.KeyValue{Key: from}, func(kv *pcspb.KeyValue) bool {
		if !bytes.HasPrefix(kv.Key, prefix) {
			return false
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, kv)
		return true
	})
	return out, more, Position{f.mu.st.revision, f.mu.st.applied}
}

// Events returns up to max events with revision >= from whose key has prefix, and the revision
// through which the result is complete (every matching event up to it is included). from must
// not precede the retained history (ErrCompacted).
func (f *FSM) Events(from uint64, prefix []byte, max int) ([]*pcspb.Event, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.st.hist.since(from, prefix, max, f.mu.st.revision)
}

// ClusterVersion returns the cluster version in force (1 until the primary has raised it).
func (f *FSM) ClusterVersion() uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return max(f.mu.st.version, 1)
}

// TsoWindow returns the persisted TSO window in ms.
func (f *FSM) TsoWindow() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.st.tsoWindow
}

// Members returns the recorded member addresses by name.
func (f *FSM) Members() map[string]*pcspb.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]*pcspb.Member, len(f.mu.st.members))
	for k, v := range f.mu.st.members {
		out[k] = v
	}
	return out
}

// Digest returns a hex SHA-256 of the state (revision, TSO window, id counters, members, keys)
// and the position it was computed at. Equal logs give equal digests on every node.
func (f *FSM) Digest() (string, Position) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.mu.st
	h := sha256.New()
	var buf [8]byte
	u := func(v uint64) { binary.BigEndian.PutUint64(buf[:], v); h.Write(buf[:]) }
	b := func(p []byte) { u(uint64(len(p))); h.Write(p) }
	u(st.revision)
	u(st.tsoWindow)
	u(uint64(st.version))
	kinds := make([]string, 0, len(st.ids))
	for k := range st.ids {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		b([]byte(k))
		u(st.ids[k])
	}
	names := make([]string, 0, len(st.members))
	for k := range st.members {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		m := st.members[n]
		b([]byte(m.Name))
		b([]byte(m.PeerAddr))
		b([]byte(m.ClientAddr))
		b([]byte(m.HttpAddr))
	}
	st.kv.Ascend(func(kv *pcspb.KeyValue) bool {
		b(kv.Key)
		b(kv.Value)
		u(kv.CreateRevision)
		u(kv.ModRevision)
		u(kv.Version)
		return true
	})
	st.cat.digest(h)
	st.sess.digest(h)
	return hex.EncodeToString(h.Sum(nil)), Position{st.revision, st.applied}
}
