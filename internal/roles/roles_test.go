package roles

import (
	"flag"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/postdb/pcs/api/pcspb"
)

var update = flag.Bool("update", false, "rewrite the README's role table")

const (
	beginMark = "<!-- role table: go test ./internal/roles -update -->\n"
	endMark   = "<!-- end of role table -->\n"
)

// TestREADMEShowsTheTable: the README prints the role table as the code has it.
func TestREADMEShowsTheTable(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		t.Fatalf("README has no role table between %q and %q", beginMark, endMark)
	}
	want := Markdown()
	if got := s[i+len(beginMark) : j]; got != want {
		if *update {
			if err := os.WriteFile(path, []byte(s[:i+len(beginMark)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("README's role table is stale (go test ./internal/roles -update):\n%s", want)
	}
}

// TestEveryMethodHasARow: every method of both gRPC services is in the table, once.
func TestEveryMethodHasARow(t *testing.T) {
	for _, svc := range []struct {
		name    string
		methods []string
	}{
		{"PCS", methodsOf(pcspb.PCS_ServiceDesc)},
		{"KV", methodsOf(pcspb.KV_ServiceDesc)},
	} {
		for _, m := range svc.methods {
			if Of(svc.name, m) == 0 {
				t.Errorf("%s has no row in the role table", m)
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range table {
		k := r.Service + " " + r.Call
		if seen[k] {
			t.Errorf("%s listed twice", k)
		}
		seen[k] = true
	}
	if Of("PCS", "/pcs.v1.PCS/NoSuchCall") != 0 {
		t.Error("a call missing from the table has a role")
	}
}

func methodsOf(d grpc.ServiceDesc) []string {
	var out []string
	for _, m := range d.Methods {
		out = append(out, "/"+d.ServiceName+"/"+m.MethodName)
	}
	for _, st := range d.Streams {
		out = append(out, "/"+d.ServiceName+"/"+st.StreamName)
	}
	return out
}

// TestConsolePaths: the console's pages and reads take any known role, its actions admin only,
// and a path that only looks like the console's is not the console's.
func TestConsolePaths(t *testing.T) {
	for path, want := range map[string]Role{
		"/":                              monitor,
		"/console/":                      monitor,
		"/console/app.js":                monitor,
		"/console/api/heatmap":           monitor,
		"/console/api/admin/drain":       admin,
		"/console/api/admin/cancel-job":  admin,
		"/consolex":                      0,
		"/console":                       0,
		"/console/api/adminx/drain":      monitor,
		"/debug/pprof/console/api/admin": admin,
	} {
		if got := Of("HTTP pcs", path); got != want {
			t.Errorf("%s: roles %v, want %v", path, got, want)
		}
	}
	if Of("HTTP pcsnode", "/console/") != 0 {
		t.Error("the data node serves no console, yet its table admits /console/")
	}
}
