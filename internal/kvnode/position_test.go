package kvnode

import (
	"encoding/binary"
	"testing"
)

// FuzzDecodePosition: a stored log position decodes, or fails with an error; what decodes
// encodes back to the same bytes (positions written before terms were recorded read as term 0).
func FuzzDecodePosition(f *testing.F) {
	f.Add(Position{LSN: 7, Term: 3}.encode())
	f.Add(binary.BigEndian.AppendUint64(nil, 42)) // the 8-byte form
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePosition(b)
		if err != nil {
			if len(b) == 8 || len(b) == 16 {
				t.Fatalf("%x did not decode: %v", b, err)
			}
			return
		}
		switch len(b) {
		case 16:
			if string(p.encode()) != string(b) {
				t.Fatalf("%x decoded to %v, which encodes to %x", b, p, p.encode())
			}
		case 8:
			if p.Term != 0 || p.LSN != binary.BigEndian.Uint64(b) {
				t.Fatalf("%x decoded to %v", b, p)
			}
		default:
			t.Fatalf("%d bytes decoded to %v", len(b), p)
		}
	})
}
