package kvnode

import (
	"bytes"
	"testing"
)

func TestRangeMiddle(t *testing.T) {
	for _, c := range []struct{ start, end []byte }{
		{[]byte{0, 0, 0, 2}, []byte{0, 0, 0, 3}},
		{nil, nil},
		{nil, []byte{0x10}},
		{[]byte{0xff, 0xff}, nil},
		{[]byte("abc"), []byte("abd")},
		{[]byte("a\xff"), []byte("b")},
	} {
		m := rangeMiddle(c.start, c.end)
		if m == nil {
			t.Errorf("[%x, %x): no middle", c.start, c.end)
			continue
		}
		if bytes.Compare(m, c.start) <= 0 || len(c.end) > 0 && bytes.Compare(m, c.end) >= 0 {
			t.Errorf("[%x, %x): middle %x is outside", c.start, c.end, m)
		}
	}
	// No key lies strictly between k and k+0x00.
	if m := rangeMiddle([]byte("a"), []byte("a\x00")); m != nil {
		t.Errorf("[a, a\\x00) has middle %x", m)
	}
}

func FuzzRangeMiddle(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2}, []byte{0, 0, 0, 3})
	f.Add([]byte{}, []byte{})
	f.Add([]byte("a"), []byte("a\x00"))
	f.Fuzz(func(t *testing.T, start, end []byte) {
		m := rangeMiddle(start, end)
		if len(end) > 0 && bytes.Compare(start, end) >= 0 {
			if m != nil {
				t.Fatalf("[%x, %x) is empty but has middle %x", start, end, m)
			}
			return
		}
		if m == nil {
			if !bytes.Equal(end, append(bytes.Clone(start), 0)) {
				t.Fatalf("[%x, %x): no middle", start, end)
			}
			return
		}
		if bytes.Compare(m, start) <= 0 || len(end) > 0 && bytes.Compare(m, end) >= 0 {
			t.Fatalf("[%x, %x): middle %x outside", start, end, m)
		}
	})
}
