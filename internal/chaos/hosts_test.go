package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a tiny TCP server and dialer to run inside a host's namespace.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("CHAOS_TEST_LISTEN") != "":
		ln, err := net.Listen("tcp", os.Getenv("CHAOS_TEST_LISTEN"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(0)
			}
			c.Close()
		}
	case os.Getenv("CHAOS_TEST_DIAL") != "":
		c, err := net.DialTimeout("tcp", os.Getenv("CHAOS_TEST_DIAL"), 700*time.Millisecond)
		if err != nil {
			os.Exit(1)
		}
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// reach reports whether a TCP connection from host (nil: the root namespace) to addr succeeds.
func reach(t *testing.T, ctx context.Context, from *Host, addr string) bool {
	t.Helper()
	var cmd *exec.Cmd
	if from == nil {
		cmd = exec.CommandContext(ctx, os.Args[0])
	} else {
		cmd = from.Exec(ctx, os.Args[0])
	}
	cmd.Env = append(os.Environ(), "CHAOS_TEST_DIAL="+addr)
	return cmd.Run() == nil
}

// TestNetPartitions: real namespaces, veth and iptables. A host reaches another until a
// partition cuts them (both ways, or one way), the root namespace always reaches both, and heal
// restores the link. A namespace left by a dead run is removed by the next.
func TestNetPartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nt, err := NewNet(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer nt.Close()
	a, b := nt.Hosts[0], nt.Hosts[1]
	addrB := b.IP + ":7000"
	srv := b.Exec(ctx, os.Args[0])
	srv.Env = append(os.Environ(), "CHAOS_TEST_LISTEN="+addrB)
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	buf := make([]byte, 16)
	if n, _ := out.Read(buf); !strings.Contains(string(buf[:n]), "listening") {
		t.Fatalf("server in %s did not start: %q", b.NS, buf[:n])
	}
	if !reach(t, ctx, a, addrB) || !reach(t, ctx, nil, addrB) {
		t.Fatal("no link before any fault")
	}
	if err := Partition(ctx, []*Host{a}, []*Host{b}); err != nil {
		t.Fatal(err)
	}
	if reach(t, ctx, a, addrB) {
		t.Fatal("a reaches b across a partition")
	}
	if !reach(t, ctx, nil, addrB) {
		t.Fatal("the root namespace lost b in a partition between hosts")
	}
	if err := nt.HealAll(ctx); err != nil {
		t.Fatal(err)
	}
	if !reach(t, ctx, a, addrB) {
		t.Fatal("no link after heal")
	}
	if err := b.Drop(ctx, a); err != nil { // one way: b hears nothing from a
		t.Fatal(err)
	}
	if reach(t, ctx, a, addrB) {
		t.Fatal("a reaches b while b drops what a sends")
	}
	if err := nt.HealAll(ctx); err != nil {
		t.Fatal(err)
	}

	// A namespace named for a pid that does not run is a dead run's leftover.
	stale := namePrefix + "4194999-0" // above Linux's pid_max: never alive
	if err := runCmd(ctx, "ip", "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	CleanStale(ctx)
	list, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if strings.Contains(string(list), stale) {
		runCmd(ctx, "ip", "netns", "del", stale)
		t.Fatalf("stale namespace %s not removed", stale)
	}
	if !strings.Contains(string(list), a.NS) {
		t.Fatalf("a live run's namespace %s was removed", a.NS)
	}
}
