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
