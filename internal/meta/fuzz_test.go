package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

// FuzzDecodeCommand: any bytes either decode into a valid command that applies cleanly, or are
// refused; nothing panics, and refused entries change no data.
func FuzzDecodeCommand(f *testing.F) {
	for _, cmd := range []*pcspb.Command{put("k", "v"), cas("k", "v", 3), del("k"), ids("shard", 10),
		{Op: &pcspb.Command_TsoWindow{TsoWindow: &pcspb.CmdTsoWindow{PhysicalMs: 1 << 40}}},
		{Op: &pcspb.Command_SetMember{SetMember: &pcspb.CmdSetMember{Member: &pcspb.Member{Name: "n", PeerAddr: "p"}}}},
		{Op: &pcspb.Command_RemoveMember{RemoveMember: &pcspb.CmdRemoveMember{Name: "n"}}},
	} {
		data, err := EncodeCommand(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Apply reads what DecodeEntry reads and stops (panics) on anything else, never
		// skipping an entry; what it reads it applies without panicking.
		_, entryErr := DecodeEntry(data)
		fsm := New(Options{})
		panicked := func() (p bool) {
			defer func() { p = recover() != nil }()
			fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
			return false
		}()
		if (entryErr != nil) != panicked {
			t.Fatalf("DecodeEntry said %v, apply panicked: %v", entryErr, panicked)
		}
		cmd, err := DecodeCommand(data)
		if err != nil {
			if !isDecodeError(err) {
				t.Fatalf("decode error %v is not a decode error", err)
			}
			return
		}
		// A decoded command re-encodes (at its version) to a fixed point.
		again, err := EncodeCommand(cmd, cmd.Version)
		if err != nil {
			t.Fatalf("valid command does not re-encode: %v", err)
		}
		cmd2, err := DecodeCommand(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		again2, err := EncodeCommand(proto.Clone(cmd2).(*pcspb.Command), cmd2.Version)
		if err != nil {
			t.Fatal(err)
		}
		if cmd3, err := DecodeCommand(again2); err != nil || !proto.Equal(cmd2, cmd3) {
			t.Fatalf("re-encoding is not stable: %v", err)
		}
	})
}

func isDecodeError(err error) bool {
	return errorsIs(err, ErrBadCommand) || errorsIs(err, ErrUnknownVersion) || errorsIs(err, ErrInvalid)
}

// FuzzRestore: any bytes either restore into a state whose snapshot restores to the same
// digest, or are refused without changing the state.
func FuzzRestore(f *testing.F) {
	f.Add(snapshotBytes(f, populated(f)))
	f.Add(snapshotBytes(f, New(Options{})))
	f.Add([]byte{})
	f.Add([]byte{0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := New(Options{})
		a := &applier{t: t, f: fsm}
		a.apply(put("existing", "v"))
		before, _ := fsm.Digest()
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			if !errorsIs(err, ErrBadSnapshot) {
				t.Fatalf("restore error %v is not ErrBadSnapshot", err)
			}
			if after, _ := fsm.Digest(); after != before {
				t.Fatal("refused snapshot changed the state")
			}
			return
		}
		d1, _ := fsm.Digest()
		again := New(Options{})
		if err := again.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, fsm)))); err != nil {
			t.Fatalf("re-snapshot does not restore: %v", err)
		}
		if d2, _ := again.Digest(); d1 != d2 {
			t.Fatal("re-snapshot restores to another state")
		}
	})
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// TestRestoreAllocatesWhatArrives: a record claiming 128 MiB backed by a few bytes is refused
// without allocating the claimed length.
func TestRestoreAllocatesWhatArrives(t *testing.T) {
	data := binary.AppendUvarint(nil, maxRecord) // a length, then almost nothing
	data = append(data, 1, 2, 3)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := New(Options{}).Restore(io.NopCloser(bytes.NewReader(data)))
	runtime.ReadMemStats(&after)
	if !errorsIs(err, ErrBadSnapshot) {
		t.Fatalf("restore: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("restoring %d bytes allocated %d", len(data), got)
	}
}
