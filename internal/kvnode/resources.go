package kvnode

import (
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// resources samples the node process's CPU, memory and disk IO from /proc, for heartbeats
// (PCS weighs nodes by them). Rates are over windows of at least resourceWindow (CPU time
// is counted in clock ticks: a heartbeat's interval is too short to measure it).
type resources struct {
	mu     sync.Mutex
	proc   procfs.Proc
	ok     bool
	at     time.Time
	cpu    float64 // seconds of CPU used, at at
	ioByte uint64  // bytes read and written to storage, at at
	cores  float64 // the rates of the last full window
	ioRate uint64
}

const resourceWindow = 5 * time.Second

func newResources() *resources {
	r := &resources{}
	if p, err := procfs.Self(); err == nil {
		r.proc, r.ok = p, true
	}
	return r
}

// sample returns the CPU used (cores, over the last interval), the resident memory and the
// storage bytes read and written per second. Zeros where /proc cannot be read.
func (r *resources) sample(now time.Time) (cores float64, rss uint64, ioPerSec uint64) {
	if r == nil || !r.ok {
		return 0, 0, 0
	}
	st, err := r.proc.Stat()
	if err != nil {
		return 0, 0, 0
	}
	cpu, rss := st.CPUTime(), uint64(st.ResidentMemory())
	var io uint64
	if pio, err := r.proc.IO(); err == nil {
		io = pio.ReadBytes + pio.WriteBytes
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dt := now.Sub(r.at)
	if !r.at.IsZero() && dt < resourceWindow {
		return r.cores, rss, r.ioRate
	}
	if !r.at.IsZero() {
		r.cores = max(cpu-r.cpu, 0) / dt.Seconds()
		r.ioRate = 0
		if io >= r.ioByte {
			r.ioRate = uint64(float64(io-r.ioByte) / dt.Seconds())
		}
	}
	r.at, r.cpu, r.ioByte = now, cpu, io
	return r.cores, rss, r.ioRate
}
