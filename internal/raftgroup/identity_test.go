package raftgroup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// FuzzHandshake: any bytes a peer sends are refused or accepted without a panic, and a
// member never ends up with another cluster's id than the one it had.
func FuzzHandshake(f *testing.F) {
	same := binary.BigEndian.AppendUint64(append([]byte(nil), handshakeMagic[:]...), 7)
	other := binary.BigEndian.AppendUint64(append([]byte(nil), handshakeMagic[:]...), 8)
	zero := binary.BigEndian.AppendUint64(append([]byte(nil), handshakeMagic[:]...), 0)
	for _, seed := range [][]byte{same, other, zero, {}, []byte("GET / HTTP/1.1\r\n"), same[:10]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ident := &Identity{dir: t.TempDir()}
		if err := ident.Adopt(7); err != nil {
			t.Fatal(err)
		}
		err := ident.check(bytes.NewReader(data), "peer")
		if ident.ID() != 7 {
			t.Fatalf("the member's cluster id changed to %x", ident.ID())
		}
		if err == nil && (len(data) < handshakeLen || !bytes.Equal(data[:8], handshakeMagic[:])) {
			t.Fatalf("accepted %x", data)
		}
		if len(data) >= handshakeLen && bytes.Equal(data[:8], handshakeMagic[:]) {
			theirs := binary.BigEndian.Uint64(data[8:16])
			if mismatch := theirs != 0 && theirs != 7; mismatch != errors.Is(err, ErrClusterMismatch) {
				t.Fatalf("peer of cluster %x: %v", theirs, err)
			}
		}
	})
}

// FuzzParseClusterID: only 16 hex digits, not all zero, parse; they round-trip.
func FuzzParseClusterID(f *testing.F) {
	for _, s := range []string{"00000000000000aa", "ffffffffffffffff", "0000000000000000", "xyz", "", "00000000000000aaa"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseClusterID(s)
		if err != nil {
			return
		}
		if id == 0 || len(s) != 16 {
			t.Fatalf("parsed %q as %x", s, id)
		}
		if back, err := ParseClusterID(FormatClusterID(id)); err != nil || back != id {
			t.Fatalf("round trip of %q: %x %v", s, back, err)
		}
	})
}

// TestHandshakeRefusesOtherClusters: two members of different clusters cannot exchange a
// byte of Raft traffic; a new member learns the id of the first peer that contacts it, and it
// persists.
func TestHandshakeRefusesOtherClusters(t *testing.T) {
	dirA, dirB, dirNew := t.TempDir(), t.TempDir(), t.TempDir()
	a, _ := OpenIdentity(dirA)
	b, _ := OpenIdentity(dirB)
	fresh, _ := OpenIdentity(dirNew)
	a.Adopt(1)
	b.Adopt(2)
	pipe := func(dialer, acceptor *Identity) (error, error) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		d := &idConn{Conn: c1, ident: dialer, dialer: true}
		acc := &idConn{Conn: c2, ident: acceptor}
		errc := make(chan error, 1)
		go func() { var buf [1]byte; _, err := acc.Read(buf[:]); errc <- err }()
		_, derr := d.Write([]byte{1})
		select {
		case aerr := <-errc:
			return derr, aerr
		case <-time.After(10 * time.Second):
			t.Fatal("handshake hung")
		}
		return nil, nil
	}
	if derr, aerr := pipe(a, b); !errors.Is(derr, ErrClusterMismatch) && !errors.Is(aerr, ErrClusterMismatch) {
		t.Fatalf("members of clusters 1 and 2 talked: %v / %v", derr, aerr)
	}
	if derr, aerr := pipe(a, fresh); derr != nil || aerr != nil {
		t.Fatalf("a new member refused its cluster: %v / %v", derr, aerr)
	}
	reopened, err := OpenIdentity(dirNew)
	if err != nil || reopened.ID() != 1 {
		t.Fatalf("the learnt id did not persist: %x %v", reopened.ID(), err)
	}
}
