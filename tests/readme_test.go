package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tourLines returns the lines of the first sh block of the README's tour.
func tourLines(t *testing.T) []string {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## A tour of pcsctl\n")
	if !ok {
		t.Fatal("README has no tour section")
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatal("the tour has no sh block")
	}
	block, _, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("the tour's sh block does not end")
	}
	return strings.Split(strings.TrimSpace(block), "\n")
}

// TestReadmeTour: a new user's path. The playground starts as the README says (default ports),
// and every line of the pcsctl tour, run by a shell from a directory whose bin/ holds the
// binaries, exits 0 — each retried for a while, as a user would, since some wait for the one
// before (a table becoming public).
func TestReadmeTour(t *testing.T) {
	lines := tourLines(t)
	work := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	pg := exec.Command(filepath.Join(binDir, "pcs"), "playground", "--dir", filepath.Join(work, "playground"))
	pg.Dir, pg.Stdout, pg.Stderr = work, out, out
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pg.Wait() }()
	defer func() {
		pg.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil && !t.Failed() {
				t.Errorf("playground did not stop cleanly on SIGINT: %v\n%s", err, out)
			}
		case <-time.After(30 * time.Second):
			pg.Process.Kill()
			<-exited
			t.Error("playground did not stop within 30s of SIGINT")
		}
	}()
	waitFor(t, 30*time.Second, "the playground to print its endpoints", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("playground exited: %v\n%s", err, out)
		default:
		}
		return strings.Contains(out.String(), "Ctrl-C stops everything")
	})

	env := os.Environ()
	ran := 0
	for _, line := range lines {
		switch {
		case strings.HasPrefix(line, "go build "):
			continue // the binaries are built once for the package
		case strings.HasPrefix(line, "export "):
			assign, _, _ := strings.Cut(strings.TrimPrefix(line, "export "), " ")
			env = append(env, assign)
			continue
		case !strings.HasPrefix(line, "bin/"):
			t.Fatalf("tour line %q is neither a build, an export nor a bin/ command", line)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, "bash", "-c", line)
			cmd.Dir, cmd.Env = work, env
			res, err := cmd.CombinedOutput()
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("tour line failed for 30s:\n%s\n%v\n%s", line, err, res)
			}
			time.Sleep(500 * time.Millisecond)
		}
		ran++
	}
	if ran < 30 {
		t.Fatalf("only %d tour commands ran", ran)
	}
	// The tour's effects: the snapshot and the test CA were written.
	for _, f := range []string{"pcs.snap", "certs/ca.crt", "certs/ca.key"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("the tour did not write %s: %v", f, err)
		}
	}
}
