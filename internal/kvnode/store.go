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
//
// Every write is committed with Sync: an acknowledged write survives a crash.
//
// Replication: the primary gives each write the next log position of its shard and sends it to
// every other replica of the configuration; it acknowledges the client only when all have
// persisted it. Replicas refuse writes from a primary of a lower term than they have seen, and
// positions out of order. Reconfiguration (removing a silent replica through PCS), catch-up of
// new or returning replicas and primary failover are not implemented yet.
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
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// ErrNoReplica: the store holds no replica of the shard.
var ErrNoReplica = errors.New("kvnode: no replica of the shard")

// Store is a node's replicas in Pebble.
type Store struct {
	db *pebble.DB

	mu     sync.RWMutex
	shards map[uint64]*pcspb.Shard
	lsns   map[uint64]uint64
}

func dataPrefix(shard uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'d'}, shard) }
func metaKey(shard uint64) []byte    { return binary.BigEndian.AppendUint64([]byte{'m'}, shard) }
func lsnKey(shard uint64) []byte     { return binary.BigEndian.AppendUint64([]byte{'p'}, shard) }

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

// Open opens (or creates) the store in dir and loads its replicas. log may be nil.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		return nil, fmt.Errorf("kvnode: opening %s: %w", dir, err)
	}
	s := &Store{db: db, shards: map[uint64]*pcspb.Shard{}, lsns: map[uint64]uint64{}}
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
			if len(v) == 8 {
				s.lsns[sh.Id] = binary.BigEndian.Uint64(v)
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
	if err := b.Delete(metaKey(id), nil); err != nil {
		return err
	}
	if err := b.Delete(lsnKey(id), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvnode: dropping replica %d: %w", id, err)
	}
	s.mu.Lock()
	delete(s.shards, id)
	delete(s.lsns, id)
	s.mu.Unlock()
	return nil
}

// LSN is the last log position a replica has persisted.
func (s *Store) LSN(shard uint64) uint64 {
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

// Write applies puts and deletes at log position lsn to a replica, atomically and durably.
func (s *Store) Write(shard, lsn uint64, puts []*pcspb.KVPair, deletes [][]byte) error {
	b := s.db.NewBatch()
	if err := b.Set(lsnKey(shard), binary.BigEndian.AppendUint64(nil, lsn), nil); err != nil {
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
	s.mu.Lock()
	s.lsns[shard] = lsn
	s.mu.Unlock()
	return nil
}

// Replace replaces a replica's data with pairs at log position lsn, atomically and durably.
func (s *Store) Replace(shard, lsn uint64, pairs []*pcspb.KVPair) error {
	b := s.db.NewBatch()
	p := dataPrefix(shard)
	if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
		return err
	}
	for _, kv := range pairs {
		if err := b.Set(append(bytes.Clone(p), kv.Key...), kv.Value, nil); err != nil {
			return err
		}
	}
	if err := b.Set(lsnKey(shard), binary.BigEndian.AppendUint64(nil, lsn), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.mu.Lock()
	s.lsns[shard] = lsn
	s.mu.Unlock()
	return nil
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

// Size estimates the bytes a replica uses on disk.
func (s *Store) Size(shard uint64) uint64 {
	p := dataPrefix(shard)
	n, err := s.db.EstimateDiskUsage(p, prefixEnd(p))
	if err != nil {
		return 0
	}
	return n
}
