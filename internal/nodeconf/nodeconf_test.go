package nodeconf

import (
	"errors"
	"maps"
	"testing"
)

func TestDesired(t *testing.T) {
	var d Desired
	d.Set(nil, LogLevel, "debug")
	d.Set([]uint64{3}, LogLevel, "warn")
	if got := d.For(1)[LogLevel]; got != "debug" {
		t.Fatalf("node 1: %q", got)
	}
	if got := d.For(3)[LogLevel]; got != "warn" {
		t.Fatalf("node 3 (its own wins): %q", got)
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil || !maps.Equal(back.For(3), d.For(3)) || !maps.Equal(back.For(9), d.For(9)) {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	back.Set([]uint64{3}, LogLevel, "")
	if got := back.For(3)[LogLevel]; got != "debug" || len(back.Nodes) != 0 {
		t.Fatalf("node 3 unset: %q, %v", got, back.Nodes)
	}
	if p := Pending(d.For(3), map[string]string{LogLevel: "warn"}); p != nil {
		t.Fatalf("applied, yet pending %v", p)
	}
	if p := Pending(d.For(3), map[string]string{LogLevel: "info"}); p[LogLevel] != "warn" {
		t.Fatalf("pending %v", p)
	}
	if _, err := Parse([]byte("{")); err == nil {
		t.Fatal("a corrupt record parsed")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		k, v, canon string
		want        error
	}{{LogLevel, "debug", "debug", nil}, {LogLevel, "", "", nil}, {LogLevel, "loud", "", ErrBadValue}, {"color", "red", "", ErrUnknownKey},
		{TraceRatio, "1.0", "1", nil}, {TraceRatio, "0.01", "0.01", nil}, {TraceRatio, "2", "", ErrBadValue}, {TraceRatio, "NaN", "", ErrBadValue},
		{TraceExporter, "file:/tmp/t", "file:/tmp/t", nil}, {TraceExporter, "collector:4317", "collector:4317", nil}, {TraceExporter, "file:", "", ErrBadValue},
		{TraceExporter, "nonsense", "", ErrBadValue}} {
		got, err := Canonical(c.k, c.v)
		if !errors.Is(err, c.want) && !(err == nil && c.want == nil) || got != c.canon {
			t.Errorf("Canonical(%q, %q) = %q, %v; want %q, %v", c.k, c.v, got, err, c.canon, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"all":{"log-level":"debug"},"nodes":{"3":{"log-level":"warn"}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"nodes":{"x":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			return
		}
		_ = d.For(3)
		if _, err := d.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}
