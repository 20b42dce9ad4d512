package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: 'pcsctl version' and 'pcsctl --version' print the build, needing no cluster.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), runtime.Version()) || !strings.HasPrefix(out.String(), "pcsctl") {
			t.Errorf("%v printed %q", args, out.String())
		}
	}
}

func TestBytesOrDash(t *testing.T) {
	for _, tc := range []struct {
		b    uint64
		want string
	}{{0, "-"}, {512, "512 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {64 << 20, "64.0 MiB"}, {3 << 40, "3.0 TiB"}} {
		if got := bytesOrDash(tc.b); got != tc.want {
			t.Errorf("bytesOrDash(%d) = %q, want %q", tc.b, got, tc.want)
		}
	}
}
