package meta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/api/pcspb"
)

// applier feeds commands to an FSM as Raft would.
type applier struct {
	t       testing.TB
	f       *FSM
	index   uint64
	version uint32 // of the commands written (0: CommandVersion)
}

func (a *applier) apply(cmd *pcspb.Command) *Result {
	a.t.Helper()
	data, err := EncodeCommand(cmd, a.version)
	if err != nil {
		a.t.Fatalf("encode: %v", err)
	}
	return a.raw(data)
}

func (a *applier) raw(data []byte) *Result {
	a.index++
	return a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).(*Result)
}

func put(k, v string) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: []byte(k), Value: []byte(v)}}}
}

func cas(k, v string, ver uint64) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: []byte(k), Value: []byte(v), ExpectedVersion: &ver}}}
}

func del(k string) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_Delete{Delete: &pcspb.CmdDelete{Key: []byte(k)}}}
}

func ids(kind string, n uint64) *pcspb.Command {
	return &pcspb.Command{Op: &pcspb.Command_AllocIds{AllocIds: &pcspb.CmdAllocIDs{Kind: kind, Count: n}}}
}

func TestApplyKeyValue(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	r := a.apply(put("a", "1"))
	if r.Err != nil || r.KV.Version != 1 || r.KV.CreateRevision != 1 || r.Revision != 1 {
		t.Fatalf("first put: %+v", r)
	}
	r = a.apply(put("a", "2"))
	if r.KV.Version != 2 || r.KV.CreateRevision != 1 || r.KV.ModRevision != 2 {
		t.Fatalf("second put: %+v", r.KV)
	}
	if r := a.apply(cas("a", "3", 1)); !errors.Is(r.Err, ErrVersionMismatch) {
		t.Fatalf("stale cas: %v", r.Err)
	}
	if r := a.apply(cas("a", "3", 2)); r.Err != nil || string(r.KV.Value) != "3" {
		t.Fatalf("cas: %+v", r)
	}
	if r := a.apply(cas("b", "1", 0)); r.Err != nil {
		t.Fatalf("create-if-absent: %v", r.Err)
	}
	if r := a.apply(del("a")); !r.Deleted {
		t.Fatalf("delete: %+v", r)
	}
	if r := a.apply(del("a")); r.Deleted || r.Err != nil {
		t.Fatalf("delete of a missing key: %+v", r)
	}
	kv, pos := a.f.Get([]byte("a"))
	if kv != nil || pos.Revision != 7 || pos.AppliedIndex != 7 {
		t.Fatalf("after delete: %v %+v", kv, pos)
	}
	// Re-created keys start over.
	if r := a.apply(put("a", "x")); r.KV.Version != 1 || r.KV.CreateRevision != 8 {
		t.Fatalf("re-created key: %+v", r.KV)
	}
	// Events: every put and delete, in order.
	evs, through, err := a.f.Events(1, nil, 100)
	if err != nil || through != 8 || len(evs) != 6 {
		t.Fatalf("events: %d through %d, %v", len(evs), through, err)
	}
}

// An entry this build cannot read stops the node (it is never skipped: the others would apply
// it), and an entry is applied by what it says, not re-judged by this build's limits.
func TestApplyStopsOnUnreadableEntries(t *testing.T) {
	for name, data := range map[string][]byte{
		"garbage":         {0xff, 0x01, 0x02},
		"no op":           mustMarshal(&pcspb.Command{Version: CommandVersion}),
		"unknown version": mustMarshal(&pcspb.Command{Version: 99, Op: put("x", "y").Op}),
	} {
		var reported error
		a := &applier{t: t, f: New(Options{OnBadEntry: func(err error) { reported = err }})}
		a.apply(put("k", "v"))
		d0, _ := a.f.Digest()
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("%s: applied without stopping", name)
				}
			}()
			a.raw(data)
		}()
		if reported == nil || !strings.Contains(reported.Error(), "upgrade this node") {
			t.Fatalf("%s: reported %v", name, reported)
		}
		if d1, _ := a.f.Digest(); d1 != d0 {
			t.Fatalf("%s: the unreadable entry changed the state", name)
		}
	}
	a := &applier{t: t, f: New(Options{})}
	big := make([]byte, MaxValueSize+1)
	if r := a.raw(mustMarshal(&pcspb.Command{Version: CommandVersion, Op: &pcspb.Command_Put{Put: &pcspb.CmdPut{Key: []byte("big"), Value: big}}})); r.Err != nil {
		t.Fatalf("an entry over this build's value limit was re-judged: %v", r.Err)
	}
	if kv, _ := a.f.Get([]byte("big")); kv == nil || len(kv.Value) != len(big) {
		t.Fatalf("entry over the limit not applied")
	}
}

func mustMarshal(cmd *pcspb.Command) []byte {
	data, err := protoMarshal(cmd)
	if err != nil {
		panic(err)
	}
	return data
}

func TestIDBlocksAreDisjoint(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	seen := map[uint64]bool{}
	for i := 0; i < 100; i++ {
		n := uint64(i%7 + 1)
		r := a.apply(ids("shard", n))
		for id := r.First; id < r.First+n; id++ {
			if seen[id] || id == 0 {
				t.Fatalf("id %d handed out twice (or zero)", id)
			}
			seen[id] = true
		}
	}
	if r := a.apply(ids("table", 1)); r.First != 1 {
		t.Fatalf("kinds share a counter: first table id %d", r.First)
	}
}

func TestHistoryCompaction(t *testing.T) {
	a := &applier{t: t, f: New(Options{History: 5})}
	for i := 0; i < 20; i++ {
		a.apply(put(fmt.Sprint("k", i%3), "v"))
	}
	if _, _, err := a.f.Events(1, nil, 100); !errors.Is(err, ErrCompacted) {
		t.Fatalf("compacted revision: %v", err)
	}
	evs, through, err := a.f.Events(16, nil, 100)
	if err != nil || len(evs) != 5 || through != 20 {
		t.Fatalf("retained events: %d through %d, %v", len(evs), through, err)
	}
	evs, _, _ = a.f.Events(16, []byte("k1"), 100)
	for _, ev := range evs {
		if !bytes.Equal(ev.Kv.Key, []byte("k1")) {
			t.Fatalf("prefix filter passed %s", ev.Kv.Key)
		}
	}
}

// snapshotBytes persists an FSM's snapshot into memory.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap.(*fsmSnapshot).st); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func populated(t testing.TB) *FSM {
	a := &applier{t: t, f: New(Options{})}
	for i := 0; i < 500; i++ {
		a.apply(put(fmt.Sprintf("key/%04d", i), fmt.Sprint(i)))
		if i%10 == 0 {
			a.apply(ids("node", 3))
			a.apply(del(fmt.Sprintf("key/%04d", i/2)))
		}
	}
	a.apply(&pcspb.Command{Op: &pcspb.Command_TsoWindow{TsoWindow: &pcspb.CmdTsoWindow{PhysicalMs: 1_700_000_000_000}}})
	a.apply(&pcspb.Command{Op: &pcspb.Command_SetMember{SetMember: &pcspb.CmdSetMember{Member: &pcspb.Member{Name: "n1", PeerAddr: "a:1", ClientAddr: "a:2"}}}})
	// Client sessions, one of them trimmed.
	for i := uint64(1); i <= 5; i++ {
		a.apply(req(put("sess", "v"), 11, i, 1, false, 1_000+i))
		a.apply(req(cas("sess", "v", 99), 12, i, i, false, 2_000+i))
	}
	return a.f
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := populated(t)
	data := snapshotBytes(t, src)
	dst := New(Options{})
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	d1, p1 := src.Digest()
	d2, p2 := dst.Digest()
	if d1 != d2 || p1 != p2 {
		t.Fatalf("restored digest %s@%v, want %s@%v", d2, p2, d1, p1)
	}
	e1, _, _ := src.Events(1, nil, 10000)
	e2, _, _ := dst.Events(1, nil, 10000)
	if len(e1) != len(e2) {
		t.Fatalf("restored %d events, want %d", len(e2), len(e1))
	}
	// The snapshot is a point in time: later applies do not leak into it.
	snap, _ := src.Snapshot()
	a := &applier{t: t, f: src, index: p1.AppliedIndex}
	a.apply(put("later", "x"))
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap.(*fsmSnapshot).st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("snapshot changed after a later apply")
	}
}

func TestRestoreRefusesCorruptSnapshots(t *testing.T) {
	good := snapshotBytes(t, populated(t))
	dst := populated(t)
	want, _ := dst.Digest()
	cases := map[string][]byte{
		"empty":           nil,
		"truncated":       good[:len(good)/2],
		"no trailer":      good[:len(good)-8],
		"flipped byte":    flip(good, len(good)/3),
		"flipped header":  flip(good, 3),
		"trailing bytes":  append(append([]byte(nil), good...), 0x01, 0x00),
		"huge length":     {0xff, 0xff, 0xff, 0xff, 0x0f},
		"not a snapshot":  []byte("hello world, this is not a snapshot"),
		"header repeated": append(append([]byte(nil), good[:20]...), good...),
	}
	for name, data := range cases {
		err := dst.Restore(io.NopCloser(bytes.NewReader(data)))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
		if got, _ := dst.Digest(); got != want {
			t.Fatalf("%s: a refused restore changed the state", name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

// TestIDKindsBounded: at most MaxIDKinds kinds of ids; a new kind beyond is refused and
// changes nothing, known kinds go on.
func TestIDKindsBounded(t *testing.T) {
	a := &applier{t: t, f: New(Options{})}
	alloc := func(kind string) *Result {
		return a.apply(&pcspb.Command{Op: &pcspb.Command_AllocIds{AllocIds: &pcspb.CmdAllocIDs{Kind: kind, Count: 1}}})
	}
	for i := range MaxIDKinds {
		if r := alloc(fmt.Sprint("k", i)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if r := alloc("one-too-many"); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("kind %d: %v", MaxIDKinds+1, r.Err)
	}
	if r := alloc("k7"); r.Err != nil || r.First != 2 {
		t.Fatalf("a known kind: %+v", r)
	}
}
