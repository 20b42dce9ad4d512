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
// Records are trimmed below the client's acked_below (it has its answers) and deleted once
// older than RequestWindow (the primary piggybacks expired ones on its next entries); a retry
// later than that is refused by the client as of unknown outcome.

// RequestWindow is how long a request's record is kept.
const RequestWindow = 10 * 60 * 1000 // ms

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

// setRequests adds request records (and the trimming of each client's answered ones) to b.
func setRequests(b *pebble.Batch, shard uint64, reqs []*pcspb.AppliedRequest) error {
	for _, r := range reqs {
		if r.ClientId == 0 || r.Seq == 0 {
			return fmt.Errorf("kvnode: a request record without client or seq")
		}
		if r.AckedBelow > 1 && r.AckedBelow <= r.Seq {
			if err := b.DeleteRange(reqKey(shard, r.ClientId, 0), reqKey(shard, r.ClientId, r.AckedBelow), nil); err != nil {
				return err
			}
		}
		if err := b.Set(reqKey(shard, r.ClientId, r.Seq), binary.BigEndian.AppendUint64(nil, r.AtMs), nil); err != nil {
			return err
		}
	}
	return nil
}

// deleteRequests adds the deletion of expired records to b.
func deleteRequests(b *pebble.Batch, shard uint64, reqs []*pcspb.AppliedRequest) error {
	for _, r := range reqs {
		if err := b.Delete(reqKey(shard, r.ClientId, r.Seq), nil); err != nil {
			return err
		}
	}
	return nil
}

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
		if !f(&pcspb.AppliedRequest{ClientId: c, Seq: q, AtMs: binary.BigEndian.Uint64(it.Value())}) {
			break
		}
	}
	return it.Error()
}

// ExpiredRequests returns up to limit records of shard applied before beforeMs.
func (s *Store) ExpiredRequests(shard, beforeMs uint64, limit int) ([]*pcspb.AppliedRequest, error) {
	var out []*pcspb.AppliedRequest
	err := requestsIn(s.db, shard, func(r *pcspb.AppliedRequest) bool {
		if r.AtMs < beforeMs {
			out = append(out, r)
		}
		return len(out) < limit
	})
	return out, err
}
