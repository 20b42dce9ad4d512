// Package kvnode is the storage and serving side of pcsnode, the reference data node: shard
// replicas in one Pebble database, a gRPC key-value service that checks every request's shard,
// epoch, primary role and key range, and the nodeagent.Handler that lets PCS create and drop
// replicas.
//
// Pebble key layout (all keys of a shard share a prefix, so a replica is one range):
//
//	'd' shardID(8, big-endian) routingKey  -> value
//	'm' shardID(8, big-endian)             -> the replica's pcspb.Shard (range, epoch, role)
//	'p' shardID(8, big-endian)             -> the replica's log position (8 bytes), written in
//	                                          the same batch as the data it covers
//	's' shardID(8, big-endian)             -> the shard it was split from (8 bytes), reported to
//	                                          PCS until the catalog records the split
//
// Every write is committed with Sync: an acknowledged write survives a crash.
//
// Replication (PacificA, DESIGN §6): the primary gives each write the next log position of its
// shard and sends it to every other replica of the configuration and to the learners it has
// brought in line; it acknowledges the client only when every replica has persisted it.
// Replicas refuse writes from a primary of a lower term than they have seen, and positions out
// of order. Before serving a new term, and for a replica or learner that missed a write, the
// primary sends its data as a snapshot. A split is an entry of the shard's log, so every
// replica splits at the same position.
//
// Who may serve (DESIGN §6). A node serves shard S as primary only while (1) its own record of
// S names it primary at term T and (2) it holds PCS's grant of (S, T), renewed by heartbeat
// answers for the node lease from the heartbeat's send time. PCS grants (S, T) only to the
// node its catalog names S's primary at T, and a new primary's first grant only once the old
// primary's grant can have run out or the old primary reports the new term; a record never
// goes back to an earlier term. So at no moment do two nodes serve S: a node paused or cut off
// at any time wakes up without a grant of the shards it lost, and its first heartbeat answer
// denies them. A write is acknowledged only once every replica of the configuration persisted
// it, and the configuration never shrinks below the shard's min_in_sync replicas (two copies).
//
// Files: service.go (the node, its handler for PCS's commands), serve.go (admission, reads,
// group commit of writes), replicate.go (the primary's replication and a replica's side of it),
// snapshot.go (catch-up by snapshot), split.go, store.go and requests.go (Pebble), run.go (the
// process: gRPC, HTTP, the node agent).
package kvnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// ErrNoReplica: the store holds no replica of the shard.
var ErrNoReplica = errors.New("kvnode: no replica of the shard")

// Store is a node's replicas in Pebble.
type Store struct {
	db  *pebble.DB
	dir string

	mu      sync.RWMutex
	shards  map[uint64]*pcspb.Shard
	lsns    map[uint64]Position
	parents map[uint64]uint64
	merged  map[uint64]Absorbed // survivor -> the neighbour it absorbed last
	written map[uint64]uint64   // bytes of keys and values written per replica since the store opened
}

func dataPrefix(shard uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'d'}, shard) }
func metaKey(shard uint64) []byte    { return binary.BigEndian.AppendUint64([]byte{'m'}, shard) }
func lsnKey(shard uint64) []byte     { return binary.BigEndian.AppendUint64([]byte{'p'}, shard) }

// Position is where a replica's log ends: its last position and the term of the primary that
// wrote it (or whose snapshot the replica installed). A term's primary writes each of its
// positions once, so replicas at the same Position hold the same data.
type Position struct {
	LSN, Term uint64
}

func (p Position) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, p.LSN), p.Term)
}

func decodePosition(v []byte) (Position, error) {
	switch len(v) {
	case 8: // written before positions carried their term
		return Position{LSN: binary.BigEndian.Uint64(v)}, nil
	case 16:
		return Position{LSN: binary.BigEndian.Uint64(v), Term: binary.BigEndian.Uint64(v[8:])}, nil
	}
	return Position{}, fmt.Errorf("kvnode: a log position of %d bytes", len(v))
}
func parentKey(shard uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'s'}, shard) }
func mergedKey(shard uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'g'}, shard) }

// Absorbed is the neighbour a shard absorbed in its last merge, at the version it had then:
// the primary reports it (ShardStats.MergedFrom) until PCS records the merge.
type Absorbed struct {
	Shard, Version uint64
}

// prefixEnd is the first key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// pebbleLogger sends Pebble's logs to slog: its chatter at debug level, errors as errors.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}

// DiskFree returns the bytes available on the store's disk (0 if it cannot be read).
func (s *Store) DiskFree() uint64 {
	du, err := vfs.Default.GetDiskUsage(s.dir)
	if err != nil {
		return 0
	}
	return du.AvailBytes
}

// DiskTotal is the size of the disk holding the store (0 if it cannot be read).
func (s *Store) DiskTotal() uint64 {
	du, err := vfs.Default.GetDiskUsage(s.dir)
	if err != nil {
		return 0
	}
	return du.TotalBytes
}

// Open opens (or creates) the store in dir and loads its replicas. log may be nil.
func Open(dir string, log *slog.Logger) (*Store, error) { return open(dir, log, nil) }

// open is Open with syncStall, if not nil, called before every fsync of the database (the
// chaos suite's disk-stall hook).
func open(dir string, log *slog.Logger, syncStall func()) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &pebble.Options{Logger: pebbleLogger{log}}
	if syncStall != nil {
		opts.FS = stallFS{FS: vfs.Default, stall: syncStall}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("kvnode: opening %s: %w", dir, err)
	}
	s := &Store{db: db, dir: dir, shards: map[uint64]*pcspb.Shard{}, lsns: map[uint64]Position{}, parents: map[uint64]uint64{}, merged: map[uint64]Absorbed{}, written: map[uint64]uint64{}}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{'m'}, UpperBound: []byte{'n'}})
	if err != nil {
		db.Close()
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		sh := &pcspb.Shard{}
		if err := proto.Unmarshal(it.Value(), sh); err != nil {
			it.Close()
			db.Close()
			return nil, fmt.Errorf("kvnode: corrupt replica record %x: %w", it.Key(), err)
		}
		s.shards[sh.Id] = sh
		v, closer, err := db.Get(lsnKey(sh.Id))
		if err == nil {
			pos, derr := decodePosition(v)
			closer.Close()
			if derr != nil {
				it.Close()
				db.Close()
				return nil, fmt.Errorf("kvnode: replica %d: %w", sh.Id, derr)
			}
			s.lsns[sh.Id] = pos
		}
		if v, closer, err := db.Get(parentKey(sh.Id)); err == nil {
			if len(v) == 8 {
				s.parents[sh.Id] = binary.BigEndian.Uint64(v)
			}
			closer.Close()
		}
		if v, closer, err := db.Get(mergedKey(sh.Id)); err == nil {
			if len(v) == 16 {
				s.merged[sh.Id] = Absorbed{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}
			}
			closer.Close()
		}
	}
	if err := it.Close(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// PutReplica records a replica (or its new metadata).
func (s *Store) PutReplica(sh *pcspb.Shard) error {
	b, err := proto.Marshal(sh)
	if err != nil {
		return err
	}
	if err := s.db.Set(metaKey(sh.Id), b, pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: recording replica %d: %w", sh.Id, err)
	}
	s.mu.Lock()
	s.shards[sh.Id] = proto.Clone(sh).(*pcspb.Shard)
	s.mu.Unlock()
	return nil
}

// DropReplica deletes a replica and its data.
func (s *Store) DropReplica(id uint64) error {
	b := s.db.NewBatch()
	p := dataPrefix(id)
	if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
		return err
	}
	if err := b.DeleteRange(reqPrefix(id), prefixEnd(reqPrefix(id)), nil); err != nil {
		return err
	}
	if err := b.Delete(metaKey(id), nil); err != nil {
		return err
	}
	if err := b.Delete(lsnKey(id), nil); err != nil {
		return err
	}
	if err := b.Delete(parentKey(id), nil); err != nil {
		return err
	}
	if err := b.Delete(mergedKey(id), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: dropping replica %d: %w", id, err)
	}
	s.mu.Lock()
	delete(s.shards, id)
	delete(s.lsns, id)
	delete(s.parents, id)
	delete(s.merged, id)
	delete(s.written, id)
	s.mu.Unlock()
	return nil
}

// LSN is the last log position a replica has persisted.
func (s *Store) LSN(shard uint64) uint64 { return s.Position(shard).LSN }

// Position is where a replica's log ends.
func (s *Store) Position(shard uint64) Position {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lsns[shard]
}

// Replica returns a replica's metadata.
func (s *Store) Replica(id uint64) (*pcspb.Shard, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh, ok := s.shards[id]
	return sh, ok
}

// Covering returns a replica other than sh of sh's table and partition whose range overlaps
// sh's at a version at least sh's (nil: none): the node holds newer data for part of sh's range
// (sh's metadata predates a merge, or a split, this node has carried out).
func (s *Store) Covering(sh *pcspb.Shard) *pcspb.Shard {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, r := range s.shards {
		if id != sh.Id && r.TableId == sh.TableId && r.Partition == sh.Partition && r.Epoch.GetVersion() >= sh.Epoch.GetVersion() &&
			(len(r.End) == 0 || bytes.Compare(sh.Start, r.End) < 0) && (len(sh.End) == 0 || bytes.Compare(r.Start, sh.End) < 0) {
			return r
		}
	}
	return nil
}

// Held lists the replicas, by id.
func (s *Store) Held() []uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]uint64, 0, len(s.shards))
	for id := range s.shards {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Get reads a key of a replica.
func (s *Store) Get(shard uint64, key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(append(dataPrefix(shard), key...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// Write applies puts and deletes at log position pos to a replica, atomically and durably, with
// the records of the client requests they carry out (reqs) and the deletion of expired ones.
func (s *Store) Write(shard uint64, pos Position, puts []*pcspb.KVPair, deletes [][]byte, reqs, expired []*pcspb.AppliedRequest) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(lsnKey(shard), pos.encode(), nil); err != nil {
		return err
	}
	fl := newFloors(s.db, shard)
	if err := deleteRequests(b, fl, expired); err != nil {
		return err
	}
	if err := setRequests(b, fl, reqs); err != nil {
		return err
	}
	p := dataPrefix(shard)
	for _, kv := range puts {
		if err := b.Set(append(bytes.Clone(p), kv.Key...), kv.Value, nil); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		if err := b.Delete(append(bytes.Clone(p), k...), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	n := 0
	for _, kv := range puts {
		n += len(kv.Key) + len(kv.Value)
	}
	s.mu.Lock()
	s.lsns[shard] = pos
	s.written[shard] += uint64(n)
	s.mu.Unlock()
	return nil
}

// Written returns the bytes of keys and values put into a replica since the store was opened
// (for a replica split from another, including the rows it took over).
func (s *Store) Written(shard uint64) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.written[shard]
}

// Replacement replaces a replica's data and metadata with a primary's snapshot, received in
// chunks: nothing changes until Commit, which applies the whole of it atomically and durably
// (a replica never holds half a snapshot, whatever happens to the stream or the process).
type Replacement struct {
	s  *Store
	sh *pcspb.Shard
	b  *pebble.Batch
}

// Replace starts replacing a replica's data, and its metadata with sh.
func (s *Store) Replace(sh *pcspb.Shard) (*Replacement, error) {
	meta, err := proto.Marshal(sh)
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	p := dataPrefix(sh.Id)
	if err := b.Set(metaKey(sh.Id), meta, nil); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.DeleteRange(reqPrefix(sh.Id), prefixEnd(reqPrefix(sh.Id)), nil); err != nil {
		b.Close()
		return nil, err
	}
	return &Replacement{s: s, sh: proto.Clone(sh).(*pcspb.Shard), b: b}, nil
}

// Add adds pairs of the snapshot.
func (r *Replacement) Add(pairs []*pcspb.KVPair) error {
	p := dataPrefix(r.sh.Id)
	for _, kv := range pairs {
		if err := r.b.Set(append(bytes.Clone(p), kv.Key...), kv.Value, nil); err != nil {
			return err
		}
	}
	return nil
}

// AddRequests adds request records (and floors, seq 0) of the snapshot.
func (r *Replacement) AddRequests(reqs []*pcspb.AppliedRequest) error {
	for _, q := range reqs {
		if q.ClientId == 0 {
			return fmt.Errorf("kvnode: a request record without a client")
		}
		if err := r.b.Set(reqKey(r.sh.Id, q.ClientId, q.Seq), binary.BigEndian.AppendUint64(nil, q.At), nil); err != nil {
			return err
		}
	}
	return nil
}

// SetMeta makes sh the metadata the replacement installs (the replica's record when the
// replacement commits, which may have changed since it began).
func (r *Replacement) SetMeta(sh *pcspb.Shard) error {
	meta, err := proto.Marshal(sh)
	if err != nil {
		return err
	}
	r.sh = proto.Clone(sh).(*pcspb.Shard)
	return r.b.Set(metaKey(sh.Id), meta, nil)
}

// Commit applies the replacement at log position pos.
func (r *Replacement) Commit(pos Position) error {
	defer r.b.Close()
	if err := r.b.Set(lsnKey(r.sh.Id), pos.encode(), nil); err != nil {
		return err
	}
	if err := r.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: installing a snapshot of shard %d: %w", r.sh.Id, err)
	}
	r.s.mu.Lock()
	r.s.lsns[r.sh.Id] = pos
	r.s.shards[r.sh.Id] = r.sh
	r.s.mu.Unlock()
	return nil
}

// Abort drops the replacement.
func (r *Replacement) Abort() { r.b.Close() }

// Chunks calls f with the pairs of a replica in key order, in chunks of about chunkBytes, and
// then reqs (if set) with its request records, from one consistent view of the store.
func (s *Store) Chunks(shard uint64, chunkBytes int, f func([]*pcspb.KVPair) error, reqs func([]*pcspb.AppliedRequest) error) error {
	p := dataPrefix(shard)
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	var chunk []*pcspb.KVPair
	size := 0
	for it.First(); it.Valid(); it.Next() {
		kv := &pcspb.KVPair{Key: bytes.Clone(it.Key()[len(p):]), Value: bytes.Clone(it.Value())}
		chunk = append(chunk, kv)
		if size += len(kv.Key) + len(kv.Value); size >= chunkBytes {
			if err := f(chunk); err != nil {
				return err
			}
			chunk, size = nil, 0
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if len(chunk) > 0 {
		if err := f(chunk); err != nil {
			return err
		}
	}
	if reqs == nil {
		return nil
	}
	var recs []*pcspb.AppliedRequest
	if err := requestsIn(snap, shard, func(r *pcspb.AppliedRequest) bool { recs = append(recs, r); return true }); err != nil {
		return err
	}
	for len(recs) > 0 {
		n := min(len(recs), 20_000) // ~ 1 MiB a message
		if err := reqs(recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// Split splits a replica at log position at: left is its new metadata (a narrower range),
// right the new replica, which takes the data from right.Start on and starts at the same
// position. Atomic and durable.
func (s *Store) Split(left, right *pcspb.Shard, at Position) error {
	lm, err := proto.Marshal(left)
	if err != nil {
		return err
	}
	rm, err := proto.Marshal(right)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	pos := at.encode()
	for _, kv := range [][2][]byte{{metaKey(left.Id), lm}, {metaKey(right.Id), rm}, {lsnKey(left.Id), pos}, {lsnKey(right.Id), pos},
		{parentKey(right.Id), binary.BigEndian.AppendUint64(nil, left.Id)}} {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	lp, rp := dataPrefix(left.Id), dataPrefix(right.Id)
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: append(bytes.Clone(lp), right.Start...), UpperBound: prefixEnd(lp)})
	if err != nil {
		return err
	}
	moved := 0
	for it.First(); it.Valid(); it.Next() {
		if err := b.Set(append(bytes.Clone(rp), it.Key()[len(lp):]...), it.Value(), nil); err != nil {
			it.Close()
			return err
		}
		moved += len(it.Key()) - len(lp) + len(it.Value())
	}
	if err := it.Close(); err != nil {
		return err
	}
	if err := b.DeleteRange(append(bytes.Clone(lp), right.Start...), prefixEnd(lp), nil); err != nil {
		return err
	}
	if err := b.Delete(mergedKey(left.Id), nil); err != nil { // a merge before is recorded by now
		return err
	}
	// Both halves keep the request records and floors: a retry routed to either finds its
	// record.
	var recs []*pcspb.AppliedRequest
	if err := requestsIn(snap, left.Id, func(r *pcspb.AppliedRequest) bool { recs = append(recs, r); return true }); err != nil {
		return err
	}
	for _, r := range recs {
		if err := b.Set(reqKey(right.Id, r.ClientId, r.Seq), binary.BigEndian.AppendUint64(nil, r.At), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: splitting replica %d: %w", left.Id, err)
	}
	s.mu.Lock()
	s.shards[left.Id] = proto.Clone(left).(*pcspb.Shard)
	s.shards[right.Id] = proto.Clone(right).(*pcspb.Shard)
	s.lsns[left.Id], s.lsns[right.Id] = at, at
	s.parents[right.Id] = left.Id
	delete(s.merged, left.Id)
	s.written[right.Id] += uint64(moved)
	s.mu.Unlock()
	return nil
}

// ErrMergeMismatch: a merge found the absorbed replica missing, or at another log position than
// the primary's (it would lose or invent writes).
var ErrMergeMismatch = errors.New("kvnode: merge: the absorbed replica is not at the primary's position")

// Merge absorbs replica right into its left neighbour at log position at of left's log:
// left is the survivor's new metadata (its range extended over right's, a newer epoch). right
// must be at position rightAt (every write the primary acknowledged on it, nothing more). Its
// data moves under left, its request records too (stamped at at, so they outlive the merge by
// a whole window; floors: the higher of the two), and it is gone; the survivor remembers it
// (Merged) for the report that has PCS record the merge. Atomic and durable.
func (s *Store) Merge(left *pcspb.Shard, right uint64, at, rightAt Position) error {
	s.mu.RLock()
	r, ok := s.shards[right]
	l, lok := s.shards[left.Id]
	have := s.lsns[right]
	s.mu.RUnlock()
	if !ok || !lok || have != rightAt {
		return fmt.Errorf("%w: shard %d is at %+v, the primary's at %+v (held: %v; survivor %d held: %v)", ErrMergeMismatch, right, have, rightAt, ok, left.Id, lok)
	}
	if !bytes.Equal(l.End, r.Start) || !bytes.Equal(left.Start, l.Start) || !bytes.Equal(left.End, r.End) {
		return fmt.Errorf("%w: shards %d [%x, %x) and %d [%x, %x) are not neighbours making [%x, %x)", ErrMergeMismatch,
			l.Id, l.Start, l.End, r.Id, r.Start, r.End, left.Start, left.End)
	}
	lm, err := proto.Marshal(left)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	from := Absorbed{right, r.Epoch.GetVersion()}
	for _, kv := range [][2][]byte{{metaKey(left.Id), lm}, {lsnKey(left.Id), at.encode()},
		{mergedKey(left.Id), binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, from.Shard), from.Version)}} {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	lp, rp := dataPrefix(left.Id), dataPrefix(right)
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: rp, UpperBound: prefixEnd(rp)})
	if err != nil {
		return err
	}
	moved := 0
	for it.First(); it.Valid(); it.Next() {
		if err := b.Set(append(bytes.Clone(lp), it.Key()[len(rp):]...), it.Value(), nil); err != nil {
			it.Close()
			return err
		}
		moved += len(it.Key()) - len(rp) + len(it.Value())
	}
	if err := it.Close(); err != nil {
		return err
	}
	fl := newFloors(snap, left.Id)
	var recs []*pcspb.AppliedRequest
	if err := requestsIn(snap, right, func(r *pcspb.AppliedRequest) bool { recs = append(recs, r); return true }); err != nil {
		return err
	}
	for _, r := range recs {
		if r.Seq == 0 {
			if err := fl.raise(b, r.ClientId, r.At); err != nil { // a floor's value is in At
				return err
			}
			continue
		}
		if err := b.Set(reqKey(left.Id, r.ClientId, r.Seq), binary.BigEndian.AppendUint64(nil, at.LSN), nil); err != nil {
			return err
		}
	}
	for _, p := range [][]byte{rp, reqPrefix(right)} {
		if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return err
		}
	}
	for _, k := range [][]byte{metaKey(right), lsnKey(right), parentKey(right), mergedKey(right)} {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: merging replica %d into %d: %w", right, left.Id, err)
	}
	s.mu.Lock()
	s.shards[left.Id] = proto.Clone(left).(*pcspb.Shard)
	s.lsns[left.Id] = at
	delete(s.shards, right)
	delete(s.lsns, right)
	delete(s.parents, right)
	delete(s.merged, right)
	s.merged[left.Id] = from
	s.written[left.Id] += uint64(moved)
	delete(s.written, right)
	s.mu.Unlock()
	return nil
}

// Flush flushes the memtable, so that Size counts what was written.
func (s *Store) Flush() error { return s.db.Flush() }

// Merged returns the neighbour a replica absorbed in its last merge (zero: none).
func (s *Store) Merged(id uint64) Absorbed {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.merged[id]
}

// Parent returns the shard a replica was split from (0: none).
func (s *Store) Parent(id uint64) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.parents[id]
}

// SplitPoint scans a replica's live data: it returns the bytes its keys and values take and the
// key that splits them into halves of about equal size (nil if the replica has fewer than two
// keys). Unlike Size, it does not count data that was deleted but not yet compacted away.
func (s *Store) SplitPoint(shard uint64) (live uint64, key []byte, err error) {
	p := dataPrefix(shard)
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return 0, nil, err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		live += uint64(len(it.Key()) - len(p) + len(it.Value()))
		n++
	}
	if err := it.Error(); err != nil || n < 2 {
		return live, nil, err
	}
	var sum uint64
	i := 0
	for it.First(); it.Valid(); it.Next() {
		if i > 0 && (sum >= live/2 || i == n-1) {
			return live, bytes.Clone(it.Key()[len(p):]), nil
		}
		sum += uint64(len(it.Key()) - len(p) + len(it.Value()))
		i++
	}
	return live, nil, it.Error()
}

// Scan returns up to limit pairs of a replica in [start, end) (nil end: to the replica's end).
func (s *Store) Scan(shard uint64, start, end []byte, limit int) ([]*pcspb.KVPair, bool, error) {
	p := dataPrefix(shard)
	upper := prefixEnd(p)
	if len(end) > 0 {
		upper = append(bytes.Clone(p), end...)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: append(bytes.Clone(p), start...), UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	var out []*pcspb.KVPair
	for it.First(); it.Valid(); it.Next() {
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, &pcspb.KVPair{Key: bytes.Clone(it.Key()[len(p):]), Value: bytes.Clone(it.Value())})
	}
	return out, false, it.Error()
}

// Size estimates the bytes a replica uses on disk, cheaply: it counts the files and blocks that
// hold the replica's keys, including data deleted but not yet compacted away (after a split, the
// part that moved to the new shard), so it is only a hint; SplitPoint counts what is live.
func (s *Store) Size(shard uint64) uint64 {
	p := dataPrefix(shard)
	n, err := s.db.EstimateDiskUsage(p, prefixEnd(p))
	if err != nil {
		return 0
	}
	return n
}
