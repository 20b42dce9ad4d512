package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientLinksNoServer: an application importing the client (or pcsctl) gets no part of the
// server: no internal package of PCS, not package server, not hashicorp/raft or Pebble.
func TestClientLinksNoServer(t *testing.T) {
	for _, pkg := range []string{"github.com/postdb/pcs/client", "github.com/postdb/pcs/keyenc", "github.com/postdb/pcs/cmd/pcsctl"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %v", pkg, deps)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "github.com/postdb/pcs/internal/") || d == "github.com/postdb/pcs/server" ||
				strings.HasPrefix(d, "github.com/hashicorp/raft") || strings.HasPrefix(d, "github.com/cockroachdb/pebble") {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
}
