package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfg, []byte("name: a\nno-such-key: 1\n"), 0o644)
	cfg2 := filepath.Join(dir, "bad2.yaml")
	os.WriteFile(cfg2, []byte("heartbeat-timeout: soon\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "unknown flag"},
		{[]string{"--initial-cluster", "nonsense"}, "initial-cluster"},
		{[]string{"--initial-cluster", "x=127.0.0.1:1"}, "does not name this node"},
		{[]string{"--heartbeat-timeout", "1ms"}, "timeouts"},
		{[]string{"--log-level", "loud"}, "log-level"},
		{[]string{"--config", cfg}, "unknown key"},
		{[]string{"--config", cfg2}, "heartbeat-timeout"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "config file"},
		{[]string{"--client-addr", "256.0.0.1:99999"}, "client address"},
		{[]string{"extra-arg"}, "unknown command"},
		{[]string{"--client-addr", "0.0.0.0:1"}, "binds every interface"},
		{[]string{"--advertise-peer-addr", "0.0.0.0:3380"}, "wildcard"},
		{[]string{"--advertise-client-addr", "pcs-1"}, "advertise client address"},
		{[]string{"--tls-ca", "ca.crt"}, "missing certificate, key"},
		{[]string{"--tls-ca", "/nonexistent/ca.crt", "--tls-cert", "/nonexistent/a.crt", "--tls-key", "/nonexistent/a.key"}, "no such file"},
		{[]string{"--tls-allowed-peers", "pcs-*"}, "needs --tls-ca"},
	} {
		args := append([]string{"--data-dir", filepath.Join(dir, "d"), "--client-addr", freeAddr(t), "--peer-addr", freeAddr(t), "--http-addr", ""}, tc.args...)
		code, out := run(t, 10*time.Second, "pcs", args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if code == 0 || !strings.Contains(last, tc.want) || strings.Contains(out, "panic") {
			t.Errorf("pcs %v: exit %d, last line %q; want a non-zero exit and an error naming %q", tc.args, code, last, tc.want)
		}
	}
	for _, args := range [][]string{
		{"-o", "yaml", "status"},
		{"kv", "put", "only-key"},
		{"id", "alloc", "t", "--count", "x"},
		{"--endpoints", "127.0.0.1:1", "--timeout", "300ms", "kv", "get", "k"},
		{"table", "craete", "x"},
		{"member", "lisst"},
	} {
		code, out := run(t, 10*time.Second, "pcsctl", args...)
		if code == 0 || strings.Count(strings.TrimSpace(out), "\n") > 0 && !strings.Contains(out, "Usage") {
			t.Errorf("pcsctl %v: exit %d, output %q; want a one-line error", args, code, out)
		}
	}
}

// TestDataDirInUse: a second process on the same data dir is refused with a clear error.
func TestDataDirInUse(t *testing.T) {
	pc := startCluster(t, 1)
	pc.primary(pc.client())
	p := pc.procs[0]
	code, out := run(t, 10*time.Second, "pcs", "--data-dir", p.dir, "--client-addr", freeAddr(t), "--peer-addr", freeAddr(t), "--http-addr", "")
	if code == 0 || !strings.Contains(out, "in use") {
		t.Fatalf("second process on %s: exit %d, %q", p.dir, code, out)
	}
}

// TestCorruptSnapshotIsRefused: a node whose only snapshot is corrupt (and whose log has been
// compacted past it) refuses to start with an error naming the snapshot, instead of starting
// with wrong state.
func TestCorruptSnapshotIsRefused(t *testing.T) {
	pc := startCluster(t, 1, "--snapshot-threshold", "100", "--snapshot-interval", "50ms", "--trailing-logs", "10")
	c := pc.client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := pc.procs[0]
	pc.primary(c)
	for i := 0; i < 400; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("k%04d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "a completed snapshot on disk", func() bool { return len(completedSnapshots(p.dir)) > 0 })
	p.kill()
	for _, s := range completedSnapshots(p.dir) {
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		os.WriteFile(s, data, 0o644)
	}
	p.start()
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("pcs started on a corrupt snapshot")
	}
	if p.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("pcs exited 0 on a corrupt snapshot")
	}
	log := p.logTail()
	if !strings.Contains(log, "snapshot") || strings.Contains(log, "panic") {
		t.Fatalf("error does not name the snapshot (or panicked):\n%s", log)
	}
}

// TestTruncatedLogTail: a log segment cut short (a torn write at the tail) does not crash the
// node; it either refuses to start with an error naming the log, or starts and, rejoining its
// peers, converges with them without losing acknowledged writes.
func TestTruncatedLogTail(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc.primary(c)
	for i := 0; i < 300; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("k%04d", i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	pc.waitConverged(c, 20*time.Second)
	victim := pc.procs[2]
	victim.kill()
	segs, _ := filepath.Glob(filepath.Join(victim.dir, "wal", "*.wal"))
	if len(segs) == 0 {
		t.Fatal("no log segments found")
	}
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	data, _ := os.ReadFile(last)
	// Cut inside the written part: find the last non-zero byte and cut well before it.
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	if err := os.Truncate(last, int64(end/2)); err != nil {
		t.Fatal(err)
	}
	t.Logf("truncated %s from %d (%d written) to %d bytes", filepath.Base(last), st.Size(), end, end/2)
	victim.start()
	select {
	case <-victim.exited:
		log := victim.logTail()
		if strings.Contains(log, "panic") || !(strings.Contains(log, "log") || strings.Contains(log, "wal")) {
			t.Fatalf("node exited without a clear error about its log:\n%s", log)
		}
		return
	case <-time.After(3 * time.Second):
	}
	if _, err := c.Put(ctx, []byte("after"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	pc.waitConverged(c, 30*time.Second)
	for i := 0; i < 300; i++ {
		resp, err := c.Get(ctx, []byte(fmt.Sprintf("k%04d", i)))
		if err != nil || resp.Kv == nil {
			t.Fatalf("acknowledged key k%04d lost: %v", i, err)
		}
	}
}

// completedSnapshots lists the state files of finished snapshots (an in-progress one lives in a
// ".tmp" directory until it is complete).
func completedSnapshots(dataDir string) []string {
	var out []string
	states, _ := filepath.Glob(filepath.Join(dataDir, "snapshots", "*", "state.bin"))
	for _, s := range states {
		dir := filepath.Dir(s)
		if strings.HasSuffix(dir, ".tmp") {
			continue
		}
		if st, err := os.Stat(s); err == nil && st.Size() > 0 {
			out = append(out, s)
		}
	}
	return out
}
