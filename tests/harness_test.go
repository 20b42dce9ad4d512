// Package tests runs PCS as real processes: real binaries, real TCP, real disks, SIGKILL.
package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pcs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, cmd := range []string{"pcs", "pcsctl", "pcsbench", "pcsnode"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "../cmd/"+cmd).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// usedPorts are the ports freeAddr has handed out in this test binary: never twice.
var usedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freeAddr returns a loopback address with a free port for a process to listen on. Ports come
// from below Linux's ephemeral range (32768+), so that a process restarted on its old port does
// not find it taken by some outgoing connection, and are never handed out twice.
func freeAddr(t testing.TB) string {
	t.Helper()
	usedPorts.Lock()
	defer usedPorts.Unlock()
	for i := 0; i < 1000; i++ {
		port := 20000 + rand.IntN(12000)
		if usedPorts.m[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		usedPorts.m[port] = true
		return ln.Addr().String()
	}
	t.Fatal("no free port found")
	return ""
}

// proc is one pcs process.
type proc struct {
	t                  testing.TB
	name, dir          string
	client, peer, http string
	args               []string
	cmd                *exec.Cmd
	log                *os.File
	exited             chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	args := append([]string{"--name", p.name, "--data-dir", p.dir, "--client-addr", p.client,
		"--peer-addr", p.peer, "--http-addr", p.http, "--log-level", "info"}, p.args...)
	p.cmd = exec.Command(filepath.Join(binDir, "pcs"), args...)
	var err error
	if p.log == nil {
		p.log, err = os.Create(p.dir + ".log")
		if err != nil {
			p.t.Fatal(err)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.exited)
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *proc) logTail() string {
	data, _ := os.ReadFile(p.dir + ".log")
	lines := strings.Split(string(data), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

type procCluster struct {
	t     testing.TB
	procs []*proc
}

// startCluster starts n pcs processes bootstrapped together.
func startCluster(t testing.TB, n int, extra ...string) *procCluster {
	t.Helper()
	return startClusterWith(t, n, func(*proc) []string { return extra })
}

// startClusterWith is startCluster with each process's extra flags from extra.
func startClusterWith(t testing.TB, n int, extra func(p *proc) []string) *procCluster {
	t.Helper()
	pc := &procCluster{t: t}
	root := t.TempDir()
	var initial []string
	for i := 0; i < n; i++ {
		p := &proc{t: t, name: fmt.Sprintf("p%d", i+1), dir: filepath.Join(root, fmt.Sprintf("p%d", i+1)),
			client: freeAddr(t), peer: freeAddr(t), http: freeAddr(t)}
		p.args = extra(p)
		pc.procs = append(pc.procs, p)
		peer := p.peer
		if i := slices.Index(p.args, "--advertise-peer-addr"); i >= 0 {
			peer = p.args[i+1] // the group is formed on the advertised addresses
		}
		initial = append(initial, p.name+"="+peer)
	}
	for _, p := range pc.procs {
		p.args = append([]string{"--initial-cluster", strings.Join(initial, ",")}, p.args...)
		p.start()
	}
	t.Cleanup(func() {
		for _, p := range pc.procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range pc.procs {
				t.Logf("---- log of %s ----\n%s", p.name, p.logTail())
			}
		}
	})
	return pc
}

func (pc *procCluster) endpoints() []string {
	var out []string
	for _, p := range pc.procs {
		out = append(out, p.client)
	}
	return out
}

func (pc *procCluster) client() *client.Client {
	c, err := client.New(pc.endpoints())
	if err != nil {
		pc.t.Fatal(err)
	}
	pc.t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// primary returns the running process that reports itself primary and running.
func (pc *procCluster) primary(c *client.Client) *proc {
	pc.t.Helper()
	var primary *proc
	waitFor(pc.t, 20*time.Second, "a running primary", func() bool {
		for _, p := range pc.procs {
			if !p.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := c.Status(ctx, p.client, false)
			cancel()
			if err == nil && st.RaftState == "Leader" && pcspb.StateName(st.State) == "running" {
				primary = p
				return true
			}
		}
		return false
	})
	return primary
}

// waitVersion waits until the primary writes this build's command version (exactly-once
// writes need version 2, in force once every member has reported it).
func (pc *procCluster) waitVersion(c *client.Client) {
	pc.t.Helper()
	waitFor(pc.t, 20*time.Second, "the cluster version in force", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.Status(ctx, "", false)
		return err == nil && st.ClusterVersion == st.CommandVersion && st.ClusterVersion >= 2
	})
}

// waitConverged waits until every running process is running and reports the same revision
// and state digest.
func (pc *procCluster) waitConverged(c *client.Client, timeout time.Duration) (uint64, string) {
	pc.t.Helper()
	var rev uint64
	var digest string
	waitFor(pc.t, timeout, "equal revisions and digests on every node", func() bool {
		rev, digest = 0, ""
		for i, p := range pc.procs {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx, p.client, true)
			cancel()
			if err != nil || pcspb.StateName(st.State) != "running" {
				return false
			}
			if i == 0 {
				rev, digest = st.Revision, st.Digest
			} else if st.Revision != rev || st.Digest != digest {
				return false
			}
		}
		return true
	})
	return rev, digest
}

// run runs a binary to completion and returns its exit code and output.
func run(t testing.TB, timeout time.Duration, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not exit within %v; output:\n%s", bin, args, timeout, out.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}
