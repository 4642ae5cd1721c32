// Package procs fits Go's runtime threads to a relay that is quiet most
// of the time: it runs the relay's Go code on one thread while the relay
// is quiet, and on as many as Go would use when it is busy (Adapter), and
// keeps Go's system monitor thread on its tick (Exec, sysmon.go).
//
// At a thousand small transactions a second the relay is idle most of
// the time, and each change wakes it up: a read of the change feed, a
// request, an answer, each handed from one goroutine to the next. With
// more than one thread (GOMAXPROCS), each hand-off may wake a sleeping
// thread, which spins looking for work the first one then takes: about a
// fifth of the relay's CPU at that rate (docs/PERFORMANCE.md), taken from
// the cores the platform's database needs. A wide fan-out or a burst
// needs every thread. So an Adapter keeps one thread while the process
// uses under half a core, and gives Go's default back as soon as its
// goroutines wait for that one thread: the process's CPU time does not
// show that (one thread of a relay that falls behind a fan-out uses 0.5
// to 0.8 of a core), the time goroutines spend runnable before they run
// does.
package procs

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"
)

// Adapter switches GOMAXPROCS between 1 and Go's default (see the package
// comment). Use New.
type Adapter struct {
	// Interval is how often the process is measured.
	Interval time.Duration
	// Down is the CPU use, in cores, under which the process goes to one
	// thread, once it has stayed under it for DownAfter intervals in a row.
	// Each return to the default doubles that wait, up to MaxDownAfter, so
	// that a load that needs the threads only now and then does not make
	// the adapter switch back and forth; a minute on one thread resets it.
	Down                    float64
	DownAfter, MaxDownAfter int
	// Wait is how long, per second of an interval, goroutines may have
	// waited for the one thread (runnable, not running; summed over them)
	// before the process goes back to the default. Busy is the CPU use,
	// in cores, that does the same.
	Wait float64
	Busy float64

	log *slog.Logger
	// sample returns the process's CPU time so far and a measure of the
	// time its goroutines have waited for a thread so far; set sets
	// GOMAXPROCS to n, or to Go's default when n is 0.
	sample func() (cpu, wait time.Duration, err error)
	set    func(n int)
}

// New returns an Adapter with the relay's settings: measured every 250
// ms; one thread after 3 s under half a core; the default again when
// goroutines waited for the thread for as long as the interval, summed
// (on one thread the steady load's waits add up to a fifth of that at
// most, a fan-out's that falls behind to ten times it), or when the
// thread is busy 90% of the time.
func New(log *slog.Logger) *Adapter {
	return &Adapter{Interval: 250 * time.Millisecond, Down: 0.5, DownAfter: 12, MaxDownAfter: 240, Wait: 1, Busy: 0.9,
		log: log, sample: sampleProcess, set: setProcs}
}

// Run adapts until ctx is done, then gives Go's default back. It returns
// at once when the default is one thread already.
func (a *Adapter) Run(ctx context.Context) {
	if runtime.GOMAXPROCS(0) <= 1 {
		return
	}
	lastCPU, lastWait, err := a.sample()
	if err != nil {
		a.log.Warn("one thread while quiet: off, the process cannot be measured", "error", err)
		return
	}
	at := time.Now()
	s := state{a: a, downAfter: a.DownAfter}
	defer func() {
		if s.one {
			a.set(0)
		}
	}()
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cpu, wait, err := a.sample()
			now := time.Now()
			if err != nil || !now.After(at) {
				continue
			}
			span := float64(now.Sub(at))
			cores, waited := float64(cpu-lastCPU)/span, float64(wait-lastWait)/span
			lastCPU, lastWait, at = cpu, wait, now
			if change, one := s.next(cores, waited); change {
				if one {
					a.set(1)
				} else {
					a.set(0)
				}
				a.log.Debug("threads", "one", one, "gomaxprocs", runtime.GOMAXPROCS(0), "cores_used", cores, "waited", waited)
			}
		}
	}
}

// state is where an Adapter stands: on one thread or not, for how many
// intervals in a row the process has been quiet or on one thread, and how
// many quiet intervals it takes now to go to one.
type state struct {
	a         *Adapter
	one       bool
	count     int
	downAfter int
}

// next takes one interval's CPU use, in cores, and the goroutines' wait
// for a thread per unit of time, and says whether to switch, and to what.
func (s *state) next(cores, waited float64) (change, one bool) {
	if s.one {
		if waited > s.a.Wait || cores > s.a.Busy {
			s.one, s.count = false, 0
			s.downAfter = min(2*s.downAfter, s.a.MaxDownAfter)
			return true, false
		}
		if s.count++; time.Duration(s.count)*s.a.Interval >= time.Minute {
			s.downAfter = s.a.DownAfter
		}
		return false, true
	}
	if cores >= s.a.Down {
		s.count = 0
		return false, false
	}
	if s.count++; s.count < s.downAfter {
		return false, false
	}
	s.one, s.count = true, 0
	return true, true
}

// sampleProcess returns the CPU time the process has used (user and
// system, every thread) and the sum of the times its goroutines spent
// runnable before they ran, from the runtime's histogram of those times
// (each bucket counted at its middle). The runtime records those times
// for a sample of its goroutines, so the sum is a measure that grows
// with the waits, not their total.
func sampleProcess() (cpu, wait time.Duration, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, err
	}
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	var sum float64
	if s[0].Value.Kind() == metrics.KindFloat64Histogram {
		h := s[0].Value.Float64Histogram()
		for i, n := range h.Counts {
			lo, hi := h.Buckets[i], h.Buckets[i+1]
			if math.IsInf(lo, -1) {
				lo = 0
			}
			if math.IsInf(hi, 1) {
				hi = lo
			}
			sum += float64(n) * (lo + hi) / 2
		}
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), time.Duration(sum * float64(time.Second)), nil
}

// setProcs sets GOMAXPROCS to n, or to Go's default (following the
// machine's CPUs and the cgroup's quota, as Go does by itself) when n is
// 0.
func setProcs(n int) {
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
		return
	}
	runtime.GOMAXPROCS(n)
}
