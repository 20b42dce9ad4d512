// Package chaos runs PCS and its data nodes as real processes on separate network-namespace
// hosts and puts them through faults — partitions (isolated primary, minority/majority, bridge,
// one-way), packet loss, SIGKILL, SIGSTOP past the lease, wall-clock jumps and disk stalls —
// while workloads run, then checks the histories: linearizability (porcupine), writes applied
// at most once, no acknowledged write lost, TSO strictly increasing, ids never handed out twice,
// catalog invariants, and every member at the same revision and digest. cmd/pcschaos is its
// command line.
package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// namePrefix starts the name of every namespace, bridge and veth the suite makes; the owning
// process's pid follows, so that a later run can remove what a crashed one left behind.
const namePrefix = "pcsc"

// ErrSetup wraps a failure to build the hosts (no root, no iproute2 or iptables).
var ErrSetup = errors.New("chaos: setting up hosts")

// Host is one network namespace with one address on the suite's bridge.
type Host struct {
	Name string // h0, h1, ...
	NS   string // network namespace
	IP   string
}

// Net is a bridge in the root namespace and hosts attached to it by veth pairs. The root
// namespace (where the workloads' clients run) reaches every host; faults cut links between
// hosts, never to the root.
type Net struct {
	Hosts  []*Host
	bridge string
	subnet string // "10.a.b."
	prefix string
}

func runCmd(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// NewNet makes n hosts. Leftovers of dead runs are removed first.
func NewNet(ctx context.Context, n int) (*Net, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("%w: %d hosts (want 1..200)", ErrSetup, n)
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s is not installed (Debian: iproute2, iptables)", ErrSetup, tool)
		}
	}
	CleanStale(ctx)
	pid := os.Getpid()
	nt := &Net{
		prefix: fmt.Sprintf("%s%d", namePrefix, pid),
		subnet: fmt.Sprintf("10.%d.%d.", 200+(pid/250)%50, pid%250),
	}
	nt.bridge = nt.prefix
	if err := runCmd(ctx, "ip", "link", "add", nt.bridge, "type", "bridge"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	steps := [][]string{
		{"ip", "addr", "add", nt.subnet + "1/24", "dev", nt.bridge},
		{"ip", "link", "set", nt.bridge, "up"},
		// With br_netfilter, bridged packets pass the root namespace's FORWARD chain, whose
		// policy may be DROP (Docker sets it): let our bridge's own traffic through.
		append([]string{"iptables", "-w", "-I"}, forwardRule(nt.bridge)...),
	}
	for i := 0; i < n; i++ {
		h := &Host{Name: fmt.Sprintf("h%d", i), NS: fmt.Sprintf("%s-%d", nt.prefix, i), IP: fmt.Sprintf("%s%d", nt.subnet, 10+i)}
		nt.Hosts = append(nt.Hosts, h)
		veth := fmt.Sprintf("%sv%d", nt.prefix, i)
		steps = append(steps,
			[]string{"ip", "netns", "add", h.NS},
			[]string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"ip", "link", "set", veth, "master", nt.bridge, "up"},
			[]string{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
			[]string{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := runCmd(ctx, s[0], s[1:]...); err != nil {
			nt.Close()
			return nil, fmt.Errorf("%w: %v", ErrSetup, err)
		}
	}
	return nt, nil
}

// Close removes the hosts and the bridge.
func (nt *Net) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first error
	for _, h := range nt.Hosts {
		if err := runCmd(ctx, "ip", "netns", "del", h.NS); err != nil && first == nil {
			first = err
		}
	}
	if err := runCmd(ctx, "ip", "link", "del", nt.bridge); err != nil && first == nil {
		first = err
	}
	_ = runCmd(ctx, "iptables", append([]string{"-w", "-D"}, forwardRule(nt.bridge)...)...)
	return first
}

// forwardRule is the FORWARD rule that lets a bridge's hosts reach each other.
func forwardRule(bridge string) []string {
	return []string{"FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"}
}

// CleanStale removes namespaces and bridges left by suite processes that no longer run (a
// crashed or killed run cannot clean up after itself).
func CleanStale(ctx context.Context) {
	alive := func(name string) bool {
		rest := strings.TrimPrefix(name, namePrefix)
		digits := rest
		if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
			digits = rest[:i]
		}
		pid, err := strconv.Atoi(digits)
		if err != nil || pid <= 0 {
			return true // not ours: leave it
		}
		return pid == os.Getpid() || syscall.Kill(pid, 0) == nil
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && strings.HasPrefix(f[0], namePrefix) && !alive(f[0]) {
				_ = runCmd(ctx, "ip", "netns", "del", f[0])
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "type", "bridge").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line) // "7: pcsc123: <...>"
			if len(f) > 1 {
				name := strings.TrimSuffix(f[1], ":")
				if strings.HasPrefix(name, namePrefix) && !alive(name) {
					_ = runCmd(ctx, "ip", "link", "del", name)
					_ = runCmd(ctx, "iptables", append([]string{"-w", "-D"}, forwardRule(name)...)...)
				}
			}
		}
	}
}

// Exec returns a command that runs in h's namespace.
func (h *Host) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

func (h *Host) iptables(ctx context.Context, args ...string) error {
	return runCmd(ctx, "ip", append([]string{"netns", "exec", h.NS, "iptables", "-w"}, args...)...)
}

// Drop makes h drop every packet it receives from the given hosts (one direction: what h
// sends still arrives).
func (h *Host) Drop(ctx context.Context, from ...*Host) error {
	for _, f := range from {
		if f == h {
			continue
		}
		if err := h.iptables(ctx, "-A", "INPUT", "-s", f.IP, "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// Lose makes h drop a fraction p of the packets it receives from other hosts.
func (h *Host) Lose(ctx context.Context, p float64, from ...*Host) error {
	for _, f := range from {
		if f == h {
			continue
		}
		if err := h.iptables(ctx, "-A", "INPUT", "-s", f.IP, "-m", "statistic", "--mode", "random",
			"--probability", strconv.FormatFloat(p, 'f', 3, 64), "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every rule Drop and Lose added on h.
func (h *Host) Heal(ctx context.Context) error { return h.iptables(ctx, "-F", "INPUT") }

// Partition cuts every link between a host of side a and one of side b, both ways.
func Partition(ctx context.Context, a, b []*Host) error {
	for _, h := range a {
		if err := h.Drop(ctx, b...); err != nil {
			return err
		}
	}
	for _, h := range b {
		if err := h.Drop(ctx, a...); err != nil {
			return err
		}
	}
	return nil
}

// HealAll removes every fault rule on every host.
func (nt *Net) HealAll(ctx context.Context) error {
	var first error
	for _, h := range nt.Hosts {
		if err := h.Heal(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}
