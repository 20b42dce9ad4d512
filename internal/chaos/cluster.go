package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postdb/pcs/client"
)

// Ports every process listens on at its own host's address.
const (
	pcsClientPort = 2379
	pcsPeerPort   = 2380
	pcsHTTPPort   = 2381
	faultsPort    = 2390
	nodePort      = 4379
	nodeHTTPPort  = 4381
)

// Binaries are the programs the suite runs; they must be built with -tags chaos (the fault
// hooks).
type Binaries struct{ PCS, Node string }

// BuildBinaries builds pcs and pcsnode with the fault hooks into dir, from the module at root.
func BuildBinaries(ctx context.Context, root, dir string) (Binaries, error) {
	b := Binaries{PCS: filepath.Join(dir, "pcs"), Node: filepath.Join(dir, "pcsnode")}
	for out, pkg := range map[string]string{b.PCS: "./cmd/pcs", b.Node: "./cmd/pcsnode"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", "chaos", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("chaos: building %s: %w\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

// Proc is one pcs or pcsnode process on its host.
type Proc struct {
	Name   string
	Host   *Host
	Addr   string // client address (pcs) or KV address (pcsnode)
	Faults string // fault-hook admin address
	HTTP   string // metrics
	bin    string
	args   []string
	logf   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// Start starts the process (again, after a kill: same data dir, same address).
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return nil
	}
	log, err := os.OpenFile(p.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "---- start %s ----\n", time.Now().Format(time.RFC3339Nano))
	// Not CommandContext: a process outlives nothing but its Kill, and is killed by Close.
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.Host.NS, p.bin}, p.args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the suite
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("chaos: starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	p.cmd, p.exited, p.paused = cmd, done, false
	return nil
}

func (p *Proc) runningLocked() bool {
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

// Running reports whether the process runs (paused counts as running).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	if !p.runningLocked() {
		p.mu.Unlock()
		return
	}
	cmd, done := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Pause sends SIGSTOP; Resume SIGCONT.
func (p *Proc) Pause() error  { return p.signal(syscall.SIGSTOP, true) }
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT, false) }

func (p *Proc) signal(sig syscall.Signal, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return fmt.Errorf("chaos: %s is not running", p.Name)
	}
	p.paused = paused
	return p.cmd.Process.Signal(sig)
}

// Hook asks the process's fault-hook endpoint, e.g. Hook(ctx, "clock", "jump", "10s").
func (p *Proc) Hook(ctx context.Context, what string, kv ...string) error {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.Faults+"/debug/faults/"+what+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("chaos: fault hook of %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("chaos: fault hook of %s: %s", p.Name, resp.Status)
	}
	return nil
}

// LogTail returns the last n lines of the process's log.
func (p *Proc) LogTail(n int) string {
	data, _ := os.ReadFile(p.logf)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ClusterConfig shapes a cluster.
type ClusterConfig struct {
	PCS, Nodes int
	Bin        Binaries
	Dir        string // data dirs and logs
}

// Cluster is PCS members and data nodes, each on its own host.
type Cluster struct {
	Net   *Net
	PCS   []*Proc
	Nodes []*Proc
	C     *client.Client
	// Joiner is a PCS member that is not started with the others: the membership workload
	// adds and removes it.
	Joiner *Proc

	joinEndpoints []string
	dir           string
}

// newPCSProc is a pcs process named name on host h.
func newPCSProc(name string, h *Host, bin, dir string) *Proc {
	return &Proc{Name: name, Host: h, Addr: fmt.Sprintf("%s:%d", h.IP, pcsClientPort), Faults: fmt.Sprintf("%s:%d", h.IP, faultsPort),
		HTTP: fmt.Sprintf("%s:%d", h.IP, pcsHTTPPort), bin: bin, logf: filepath.Join(dir, name+".log")}
}

// pcsArgs are p's flags with its data in dataDir; start says how it enters the group
// (--initial-cluster or --join).
func pcsArgs(p *Proc, dataDir string, start ...string) []string {
	return append([]string{"--name", p.Name, "--data-dir", dataDir,
		"--client-addr", p.Addr, "--peer-addr", fmt.Sprintf("%s:%d", p.Host.IP, pcsPeerPort),
		"--http-addr", p.HTTP, "--debug-faults-addr", p.Faults, "--node-warmup", "2s", "--log-level", "info"}, start...)
}

// joinArgs are the joiner's flags for its round i: a fresh data dir each time.
func (cl *Cluster) joinArgs(i int) []string {
	p := cl.Joiner
	return pcsArgs(p, filepath.Join(cl.dir, fmt.Sprintf("%s-%d", p.Name, i)), "--join", strings.Join(cl.joinEndpoints, ","))
}

// members returns every PCS process that may be in the group: the initial ones and the joiner.
func (cl *Cluster) members() []*Proc { return append(cl.PCS[:len(cl.PCS):len(cl.PCS)], cl.Joiner) }

// StartCluster makes the hosts and starts every process.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	nt, err := NewNet(ctx, cfg.PCS+cfg.Nodes+1) // the last host: a PCS member that joins and leaves
	if err != nil {
		return nil, err
	}
	cl := &Cluster{Net: nt}
	var initial, endpoints []string
	for i := 0; i < cfg.PCS; i++ {
		h := nt.Hosts[i]
		initial = append(initial, fmt.Sprintf("p%d=%s:%d", i+1, h.IP, pcsPeerPort))
		endpoints = append(endpoints, fmt.Sprintf("%s:%d", h.IP, pcsClientPort))
	}
	for i := 0; i < cfg.PCS; i++ {
		h := nt.Hosts[i]
		name := fmt.Sprintf("p%d", i+1)
		p := newPCSProc(name, h, cfg.Bin.PCS, cfg.Dir)
		p.args = pcsArgs(p, filepath.Join(cfg.Dir, name), "--initial-cluster", strings.Join(initial, ","))
		cl.PCS = append(cl.PCS, p)
	}
	for i := 0; i < cfg.Nodes; i++ {
		h := nt.Hosts[cfg.PCS+i]
		name := fmt.Sprintf("n%d", i+1)
		p := &Proc{Name: name, Host: h, Addr: fmt.Sprintf("%s:%d", h.IP, nodePort), Faults: fmt.Sprintf("%s:%d", h.IP, faultsPort),
			HTTP: fmt.Sprintf("%s:%d", h.IP, nodeHTTPPort), bin: cfg.Bin.Node, logf: filepath.Join(cfg.Dir, name+".log")}
		p.args = []string{"--data-dir", filepath.Join(cfg.Dir, name), "--addr", p.Addr, "--http-addr", p.HTTP,
			"--endpoints", strings.Join(endpoints, ","), "--labels", fmt.Sprintf("zone=z%d", i%3),
			"--debug-faults-addr", p.Faults, "--log-level", "info"}
		cl.Nodes = append(cl.Nodes, p)
	}
	cl.Joiner = newPCSProc(fmt.Sprintf("p%d", cfg.PCS+1), nt.Hosts[len(nt.Hosts)-1], cfg.Bin.PCS, cfg.Dir)
	cl.joinEndpoints, cl.dir = endpoints, cfg.Dir
	for _, p := range cl.all() {
		if err := p.Start(); err != nil {
			cl.Close()
			return nil, err
		}
	}
	if cl.C, err = client.New(endpoints); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

func (cl *Cluster) all() []*Proc { return append(append([]*Proc(nil), cl.PCS...), cl.Nodes...) }

// Close kills every process (resuming paused ones first) and removes the hosts.
func (cl *Cluster) Close() error {
	if cl.C != nil {
		cl.C.Close()
	}
	for _, p := range append(cl.all(), cl.Joiner) {
		_ = p.Resume()
		p.Kill()
	}
	return cl.Net.Close()
}

// Primary returns the PCS member that reports itself Raft leader and running, asking each
// (running, not paused) member directly; nil if none does within ctx.
func (cl *Cluster) Primary(ctx context.Context) *Proc {
	for ctx.Err() == nil {
		for _, p := range cl.members() {
			p.mu.Lock()
			ok := p.runningLocked() && !p.paused
			p.mu.Unlock()
			if !ok {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := cl.C.Status(sctx, p.Addr, false)
			cancel()
			if err == nil && st.RaftState == "Leader" {
				return p
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Hosts returns the hosts of procs.
func Hosts(procs ...*Proc) []*Host {
	out := make([]*Host, len(procs))
	for i, p := range procs {
		out[i] = p.Host
	}
	return out
}
