package kvnode

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/postdb/pcs/api/pcspb"
)

// Records of applied client requests, for exactly-once row writes. A write that carries a
// request id (client, seq) records it in the same batch as its data, on every replica, so that
// whichever replica is primary later answers a retry of the request without applying it again.
// No clock is trusted: a record is stamped with the shard log position of the entry that
// applied it, and deleted once the shard's log has moved RequestWindow entries past it (the
// primary piggybacks expired ones on its next entries). Each client also has a floor (a record
// of seq 0), raised to its acked_below (it has those answers) and past every record deleted:
// an attempt below the floor with no record — a retry after its record expired, a delayed copy
// of an attempt already answered — is refused as of unknown outcome, never applied. Floors
// travel with snapshots and splits as the records do.

// RequestWindow is how many entries of its shard's log a request's record outlives.
const RequestWindow = 100_000

// trimEvery: a client's answered records are trimmed with about one request in trimEvery
// (each trim is a range deletion, which every read of the store then has to skip).
const trimEvery = 64

// reqPrefix: 'q' shard client seq -> at_ms (8 bytes).
func reqPrefix(shard uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'q'}, shard) }

func reqKey(shard, client, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(reqPrefix(shard), client), seq)
}

// decodeReqKey parses a record key of shard (false if it is not one).
func decodeReqKey(shard uint64, k []byte) (client, seq uint64, ok bool) {
	p := reqPrefix(shard)
	if len(k) != len(p)+16 || string(k[:len(p)]) != string(p) {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[len(p):]), binary.BigEndian.Uint64(k[len(p)+8:]), true
}

// floors tracks the floors a batch raises, over those stored in db.
type floors struct {
	db    pebble.Reader
	shard uint64
	m     map[uint64]uint64
}

func newFloors(db pebble.Reader, shard uint64) *floors {
	return &floors{db: db, shard: shard, m: map[uint64]uint64{}}
}

// raise sets client's floor to at least to, in b.
func (f *floors) raise(b *pebble.Batch, client, to uint64) error {
	cur, ok := f.m[client]
	if !ok {
		var err error
		if cur, err = floorIn(f.db, f.shard, client); err != nil {
			return err
		}
	}
	if to <= cur {
		return nil
	}
	f.m[client] = to
	return b.Set(reqKey(f.shard, client, 0), binary.BigEndian.AppendUint64(nil, to), nil)
}

// floorIn reads a client's floor (0: none).
func floorIn(r pebble.Reader, shard, client uint64) (uint64, error) {
	v, closer, err := r.Get(reqKey(shard, client, 0))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("kvnode: a malformed floor of client %x in shard %d", client, shard)
	}
	return binary.BigEndian.Uint64(v), nil
}

// setRequests adds request records (and, where the primary asked, the trimming of a client's
// answered ones, raising its floor) to b.
func setRequests(b *pebble.Batch, fl *floors, reqs []*pcspb.AppliedRequest) error {
	for _, r := range reqs {
		if r.ClientId == 0 || r.Seq == 0 {
			return fmt.Errorf("kvnode: a request record without client or seq")
		}
		if r.Trim && r.AckedBelow > 1 && r.AckedBelow <= r.Seq {
			if err := b.DeleteRange(reqKey(fl.shard, r.ClientId, 1), reqKey(fl.shard, r.ClientId, r.AckedBelow), nil); err != nil {
				return err
			}
			if err := fl.raise(b, r.ClientId, r.AckedBelow); err != nil {
				return err
			}
		}
		if err := b.Set(reqKey(fl.shard, r.ClientId, r.Seq), binary.BigEndian.AppendUint64(nil, r.At), nil); err != nil {
			return err
		}
	}
	return nil
}

// deleteRequests adds the deletion of expired records to b, raising their clients' floors
// past them.
func deleteRequests(b *pebble.Batch, fl *floors, reqs []*pcspb.AppliedRequest) error {
	for _, r := range reqs {
		if r.Seq == 0 {
			continue // floors do not expire
		}
		if err := b.Delete(reqKey(fl.shard, r.ClientId, r.Seq), nil); err != nil {
			return err
		}
		if err := fl.raise(b, r.ClientId, r.Seq+1); err != nil {
			return err
		}
	}
	return nil
}

// Floor is a client's floor in a shard: attempts below it with no record are refused.
func (s *Store) Floor(shard, client uint64) (uint64, error) { return floorIn(s.db, shard, client) }

// Applied reports whether a replica holds the record of a client request.
func (s *Store) Applied(shard, client, seq uint64) (bool, error) {
	_, closer, err := s.db.Get(reqKey(shard, client, seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// requestsIn reads every request record of shard from r (a snapshot or the DB).
func requestsIn(r pebble.Reader, shard uint64, f func(*pcspb.AppliedRequest) bool) error {
	p := reqPrefix(shard)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		c, q, ok := decodeReqKey(shard, it.Key())
		if !ok || len(it.Value()) != 8 {
			return fmt.Errorf("kvnode: a malformed request record of shard %d", shard)
		}
		if !f(&pcspb.AppliedRequest{ClientId: c, Seq: q, At: binary.BigEndian.Uint64(it.Value())}) {
			break
		}
	}
	return it.Error()
}

// ExpiredRequests returns up to limit records of shard whose entries are RequestWindow or more
// positions behind lsn (and any stamped with a wall clock, as records were before).
func (s *Store) ExpiredRequests(shard, lsn uint64, limit int) ([]*pcspb.AppliedRequest, error) {
	var out []*pcspb.AppliedRequest
	err := requestsIn(s.db, shard, func(r *pcspb.AppliedRequest) bool {
		if r.Seq != 0 && (r.At+RequestWindow <= lsn || r.At > lsn) {
			out = append(out, r)
		}
		return len(out) < limit
	})
	return out, err
}
