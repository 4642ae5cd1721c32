package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// slowSync is how long a sync takes before the probe counts it as slow.
const slowSync = 20 * time.Millisecond

// diskProbe measures the disk while a scenario runs: every 10 ms it writes
// 8 kB to a file of its own and waits for the disk to sync it, as
// PostgreSQL does for each commit. A sync that takes tens of milliseconds
// holds up every commit of those milliseconds (the platform's, and so the
// change feed, and the relay's), whatever the relay does; the slow syncs
// it counts explain a tail that the relay's own stages do not.
type diskProbe struct {
	stop chan struct{}
	done chan struct{} // closed when run has returned: res is final
	res  DiskSyncs
}

// DiskSyncs is what a diskProbe measured.
type DiskSyncs struct {
	Syncs int `json:"syncs"`
	// Slow counts syncs over slowSync.
	Slow  int     `json:"slow"`
	MaxMs float64 `json:"max_ms"`
	Err   string  `json:"error,omitempty"`
}

func (d DiskSyncs) String() string {
	if d.Err != "" {
		return "disk probe: " + d.Err
	}
	return fmt.Sprintf("disk: %d of %d syncs of 8 kB took over %v, the slowest %.0f ms", d.Slow, d.Syncs, slowSync, d.MaxMs)
}

// startDiskProbe starts a probe that writes and syncs a file in a
// directory of its own under dir, not beside the relay's config: the
// relay watches its config's directory, and a hundred writes a second
// there would count in the relay's CPU.
func startDiskProbe(dir string) *diskProbe {
	p := &diskProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(dir)
	return p
}

func (p *diskProbe) run(dir string) {
	defer close(p.done)
	own, err := os.MkdirTemp(dir, "disk-probe-")
	if err != nil {
		p.res.Err = err.Error()
		return
	}
	defer os.RemoveAll(own)
	f, err := os.OpenFile(filepath.Join(own, "probe"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		p.res.Err = err.Error()
		return
	}
	defer f.Close()
	buf := make([]byte, 8192)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		if _, err := f.WriteAt(buf, 0); err == nil {
			err = f.Sync()
		}
		if err != nil {
			p.res.Err = err.Error()
			return
		}
		took := time.Since(start)
		p.res.Syncs++
		if took > slowSync {
			p.res.Slow++
		}
		p.res.MaxMs = max(p.res.MaxMs, float64(took.Microseconds())/1000)
	}
}

// finish stops the probe and returns what it measured.
func (p *diskProbe) finish() DiskSyncs {
	close(p.stop)
	<-p.done
	return p.res
}
