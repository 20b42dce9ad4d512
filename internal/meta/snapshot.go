package meta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
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

// readSnapshot reads and verifies a whole snapshot into a new state.
// readRecord reads size bytes into buf (reusing its room), growing it a chunk at a time as the
// bytes arrive: a length the input does not back is never allocated (7 bytes claiming a record
// of 128 MiB cost at most a chunk).
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

func readSnapshot(r io.Reader) (*state, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	crc := crc32.New(castagnoli)
	st := newState()
	st.cat.restoring = &restoreShare{epochs: map[[2]uint64]*pcspb.ShardEpoch{}, replicas: map[string][]uint64{}}
	defer func() { st.cat.restoring = nil }()
	var (
		n        uint64
		buf      []byte
		frame    [binary.MaxVarintLen64]byte
		lastKey  []byte
		lastRev  uint64
		trailer  *pcspb.SnapshotTrailer
		sawHead  bool
		rec      pcspb.SnapshotRecord
		unmarsh  = proto.UnmarshalOptions{}
		sumAtRec uint32
	)
	for {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) && trailer != nil {
			break
		}
		if err != nil {
			return nil, bad("record %d: %v", n, noEOF(err))
		}
		if trailer != nil {
			return nil, bad("data after the trailer")
		}
		if size > maxRecord {
			return nil, bad("record %d: length %d exceeds %d", n, size, maxRecord)
		}
		if buf, err = readRecord(br, buf[:0], int(size)); err != nil {
			return nil, bad("record %d: %v", n, noEOF(err))
		}
		sumAtRec = crc.Sum32()
		crc.Write(frame[:binary.PutUvarint(frame[:], size)])
		crc.Write(buf)
		rec = pcspb.SnapshotRecord{}
		if err := unmarsh.Unmarshal(buf, &rec); err != nil {
			return nil, bad("record %d: %v", n, err)
		}
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
			if err := readCatalogRecord(st.cat, &rec); err != nil {
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
