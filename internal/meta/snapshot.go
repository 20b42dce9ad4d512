package meta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"sort"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// SnapshotFormat is the snapshot format version this build writes and reads.
const SnapshotFormat = 1

// maxRecord bounds one framed snapshot record.
const maxRecord = 2 * MaxCommandLen

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type fsmSnapshot struct{ st *state }

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}

// snapWriter frames records: uvarint length, then the marshaled SnapshotRecord.
type snapWriter struct {
	w     *bufio.Writer
	crc   hash.Hash32
	n     uint64
	buf   []byte
	frame [binary.MaxVarintLen64]byte
}

func (w *snapWriter) write(rec *pcspb.SnapshotRecord) error {
	var err error
	w.buf, err = proto.MarshalOptions{}.MarshalAppend(w.buf[:0], rec)
	if err != nil {
		return err
	}
	n := binary.PutUvarint(w.frame[:], uint64(len(w.buf)))
	w.crc.Write(w.frame[:n])
	w.crc.Write(w.buf)
	if _, err := w.w.Write(w.frame[:n]); err != nil {
		return err
	}
	_, err = w.w.Write(w.buf)
	w.n++
	return err
}

// WriteSnapshot streams st to out.
func WriteSnapshot(out io.Writer, st *state) error {
	w := &snapWriter{w: bufio.NewWriterSize(out, 256<<10), crc: crc32.New(castagnoli)}
	err := w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Header{Header: &pcspb.SnapshotHeader{
		FormatVersion: SnapshotFormat, Revision: st.revision, AppliedIndex: st.applied,
		TsoWindowMs: st.tsoWindow, HistoryStart: st.hist.start,
		ClockMs: st.sess.clock, SessionDropHorizonMs: st.sess.dropHorizon, ClusterVersion: st.version,
	}}})
	kinds := make([]string, 0, len(st.ids))
	for k := range st.ids {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if err == nil {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_IdCounter{IdCounter: &pcspb.IDCounter{Kind: k, Next: st.ids[k]}}})
		}
	}
	for _, m := range st.members {
		if err == nil {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Member{Member: m}})
		}
	}
	st.kv.Ascend(func(kv *pcspb.KeyValue) bool {
		err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Kv{Kv: kv}})
		return err == nil
	})
	if err == nil {
		err = writeCatalog(w, st.cat)
	}
	for _, cs := range st.sess.protos() {
		if err == nil {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Session{Session: cs}})
		}
	}
	for _, d := range st.sess.droppedProtos(10_000) {
		if err == nil {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_DroppedSessions{DroppedSessions: d}})
		}
	}
	for _, ev := range st.hist.events[st.hist.head:] {
		if err == nil {
			err = w.write(&pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Event{Event: ev}})
		}
	}
	if err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	trailer := &pcspb.SnapshotRecord{Rec: &pcspb.SnapshotRecord_Trailer{Trailer: &pcspb.SnapshotTrailer{Records: w.n, Crc32C: w.crc.Sum32()}}}
	if err := w.write(trailer); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
}

// readRecord reads into buf until it holds size bytes (reusing its room), growing it a chunk at
// a time as the bytes arrive: a length the input does not back is never allocated (7 bytes
// claiming a record of 128 MiB cost at most a chunk).
func readRecord(r io.Reader, buf []byte, size int) ([]byte, error) {
	const chunk = 1 << 20
	for len(buf) < size {
		n := min(size-len(buf), chunk)
		if cap(buf)-len(buf) < n {
			buf = slices.Grow(buf, n)
		}
		if _, err := io.ReadFull(r, buf[len(buf):len(buf)+n]); err != nil {
			return buf, err
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// recordBatch is a run of a snapshot's records, decoded off the reading goroutine: the bytes
// are read and checksummed in order by one goroutine, unmarshalled by others, and applied in
// order by readSnapshot (decoding is most of a restore's time: at ten million shards this
// overlaps it with building the state).
type recordBatch struct {
	raw       [][]byte
	shards    []*pcspb.Shard          // the shard records the fast decoder took (nil at others)
	recs      []*pcspb.SnapshotRecord // the others, by proto.Unmarshal
	decodeErr []error                 // nil if no record failed to decode
	sums      []uint32                // the checksum of everything before each record
	err       error                   // after the records: the framing error or io.EOF that ended the input
	done      chan struct{}
}

// A batch ends at recordsPerBatch records or batchBytes of them, whichever comes first: the
// reader is at most 16 batches ahead of the state being built (plus one record of up to
// maxRecord), so large values do not make it hold much of the snapshot in memory.
const (
	recordsPerBatch = 512
	batchBytes      = 1 << 20
)

// decodeRecords reads r's framed records into batches, in order on the channel it returns,
// each to be waited on (done) before use; the last batch carries the error that ended the
// input. Everything stops when quit is closed.
func decodeRecords(r io.Reader, quit <-chan struct{}) <-chan *recordBatch {
	ordered := make(chan *recordBatch, 8)
	work := make(chan *recordBatch, 8)
	for range runtime.GOMAXPROCS(0) { // (decoding costs about twice what applying does)
		go func() {
			d := newShardDecoder()
			for b := range work {
				b.shards, b.recs = make([]*pcspb.Shard, len(b.raw)), make([]*pcspb.SnapshotRecord, len(b.raw))
				d.start(len(b.raw))
				for i, raw := range b.raw {
					if b.shards[i] = d.decode(raw); b.shards[i] != nil {
						continue
					}
					b.recs[i] = &pcspb.SnapshotRecord{}
					if err := proto.Unmarshal(raw, b.recs[i]); err != nil {
						if b.decodeErr == nil {
							b.decodeErr = make([]error, len(b.raw))
						}
						b.decodeErr[i] = err
					}
				}
				d.finish()
				b.raw = nil
				close(b.done)
			}
		}()
	}
	go func() {
		defer close(work)
		br := bufio.NewReaderSize(r, 256<<10)
		crc := crc32.New(castagnoli)
		var frame [binary.MaxVarintLen64]byte
		for {
			b := &recordBatch{done: make(chan struct{}), raw: make([][]byte, 0, recordsPerBatch), sums: make([]uint32, 0, recordsPerBatch)}
			var arena []byte // the batch's records, back to back: one allocation, not one each
			for len(b.raw) < recordsPerBatch && len(arena) < batchBytes && b.err == nil {
				size, err := binary.ReadUvarint(br)
				switch {
				case err != nil:
					b.err = err
				case size > maxRecord:
					b.err = fmt.Errorf("length %d exceeds %d", size, maxRecord)
				default:
					if arena == nil {
						arena = make([]byte, 0, 64<<10)
					}
					at := len(arena)
					if arena, err = readRecord(br, arena, at+int(size)); err != nil {
						b.err = err
						break
					}
					buf := arena[at:len(arena):len(arena)]
					b.sums = append(b.sums, crc.Sum32())
					crc.Write(frame[:binary.PutUvarint(frame[:], size)])
					crc.Write(buf)
					b.raw = append(b.raw, buf)
				}
			}
			select {
			case ordered <- b:
			case <-quit:
				return
			}
			select {
			case work <- b:
			case <-quit:
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	return ordered
}

func readSnapshot(r io.Reader) (*state, error) {
	st := newState()
	st.cat.restoring = &restoreShare{epochs: map[[2]uint64]*pcspb.ShardEpoch{}, replicas: map[string][]uint64{}}
	defer func() { st.cat.restoring = nil }()
	quit := make(chan struct{})
	defer close(quit)
	batches := decodeRecords(r, quit)
	var (
		n        uint64
		lastKey  []byte
		lastRev  uint64
		trailer  *pcspb.SnapshotTrailer
		sawHead  bool
		rec      *pcspb.SnapshotRecord
		sumAtRec uint32
		b        *recordBatch
		bi       int
	)
	for {
		if b == nil || bi == len(b.recs) {
			if b != nil && b.err != nil {
				if errors.Is(b.err, io.EOF) && trailer != nil {
					break
				}
				return nil, bad("record %d: %v", n, noEOF(b.err))
			}
			b, bi = <-batches, 0
			<-b.done
			continue
		}
		if trailer != nil {
			return nil, bad("data after the trailer")
		}
		if b.decodeErr != nil && b.decodeErr[bi] != nil {
			return nil, bad("record %d: %v", n, b.decodeErr[bi])
		}
		rec, sumAtRec = b.recs[bi], b.sums[bi]
		if s := b.shards[bi]; s != nil && sawHead {
			bi++
			if err := readCatalogShard(st.cat, s); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
			n++
			continue
		}
		bi++
		if !sawHead {
			h := rec.GetHeader()
			if h == nil {
				return nil, bad("missing header")
			}
			if h.FormatVersion != SnapshotFormat {
				return nil, bad("format version %d, this node reads %d", h.FormatVersion, SnapshotFormat)
			}
			st.revision, st.applied, st.tsoWindow, st.hist.start = h.Revision, h.AppliedIndex, h.TsoWindowMs, h.HistoryStart
			st.sess.clock, st.sess.dropHorizon = h.ClockMs, h.SessionDropHorizonMs
			if h.ClusterVersion > CommandVersion {
				return nil, bad("cluster version %d, this build reads up to %d: upgrade this node", h.ClusterVersion, CommandVersion)
			}
			st.version = h.ClusterVersion
			sawHead = true
			n++
			continue
		}
		switch x := rec.Rec.(type) {
		case *pcspb.SnapshotRecord_IdCounter:
			if err := ValidateKind(x.IdCounter.Kind); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
			st.ids[x.IdCounter.Kind] = x.IdCounter.Next
		case *pcspb.SnapshotRecord_Member:
			if err := ValidateMember(x.Member); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
			st.members[x.Member.Name] = x.Member
		case *pcspb.SnapshotRecord_Kv:
			kv := x.Kv
			if err := ValidateKey(kv.Key); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
			if lastKey != nil && string(kv.Key) <= string(lastKey) {
				return nil, bad("record %d: keys out of order", n)
			}
			lastKey = kv.Key
			st.kv.ReplaceOrInsert(kv)
			st.kvBytes += kvSize(kv)
		case *pcspb.SnapshotRecord_DataNode, *pcspb.SnapshotRecord_Table, *pcspb.SnapshotRecord_Shard:
			if err := readCatalogRecord(st.cat, rec); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
		case *pcspb.SnapshotRecord_Session:
			if err := st.sess.restore(x.Session); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
		case *pcspb.SnapshotRecord_DroppedSessions:
			if err := st.sess.restoreDropped(x.DroppedSessions); err != nil {
				return nil, bad("record %d: %v", n, err)
			}
		case *pcspb.SnapshotRecord_Event:
			ev := x.Event
			if ev.Kv == nil || ev.Kv.ModRevision < lastRev || ev.Kv.ModRevision > st.revision {
				return nil, bad("record %d: event out of order", n)
			}
			lastRev = ev.Kv.ModRevision
			st.hist.events = append(st.hist.events, ev)
		case *pcspb.SnapshotRecord_Trailer:
			trailer = x.Trailer
			if trailer.Records != n {
				return nil, bad("trailer counts %d records, read %d", trailer.Records, n)
			}
			if trailer.Crc32C != sumAtRec {
				return nil, bad("checksum mismatch")
			}
			continue
		default:
			return nil, bad("record %d: unexpected %T", n, rec.Rec)
		}
		n++
	}
	if !sawHead {
		return nil, bad("empty")
	}
	return st, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteTo writes a snapshot of the current state to w (the format Restore and VerifySnapshot
// read); taken, if set, is told the position it was taken at before anything is written.
func (f *FSM) WriteTo(w io.Writer, taken func(Position)) error {
	f.mu.Lock()
	st := f.mu.st.cloneLocked()
	f.mu.Unlock()
	if taken != nil {
		taken(Position{st.revision, st.applied})
	}
	return WriteSnapshot(w, st)
}

// VerifySnapshot reads a whole snapshot, checking its framing, checksum and every record, and
// returns the position it was taken at.
func VerifySnapshot(r io.Reader) (Position, error) {
	st, err := readSnapshot(r)
	if err != nil {
		return Position{}, err
	}
	return Position{st.revision, st.applied}, nil
}
