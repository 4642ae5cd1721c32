package procs

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestNext: one thread after DownAfter quiet intervals in a row, not
// sooner; Go's default again after the first interval in which the
// goroutines waited for the thread or kept it busy; and a longer quiet
// wait after each return, until a minute on one thread.
func TestNext(t *testing.T) {
	a := &Adapter{Interval: 15 * time.Second, Down: 0.5, DownAfter: 2, MaxDownAfter: 5, Wait: 1, Busy: 0.9}
	s := state{a: a, downAfter: a.DownAfter}
	steps := []struct {
		cores, waited float64
		change, one   bool
	}{
		{0.4, 0, false, false},
		{0.6, 0, false, false}, // busy: the count starts again
		{0.4, 0, false, false},
		{0.4, 0, true, true},    // two quiet intervals in a row
		{0.6, 0.5, false, true}, // on one thread, neither waited nor busy
		{0.3, 1.5, true, false}, // goroutines waited: back, and 4 quiet intervals now
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, true, true},
		{0.95, 0, true, false}, // the one thread busy: back, and 5 (the most) now
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, true, true},
		{0.1, 0, false, true}, // four intervals of 15 s on one thread: a minute
		{0.1, 0, false, true},
		{0.1, 0, false, true},
		{0.1, 0, false, true},
		{0.2, 2, true, false}, // back: the wait starts from 2 again, doubled to 4
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, false, false},
		{0.1, 0, true, true},
	}
	for i, st := range steps {
		if change, one := s.next(st.cores, st.waited); change != st.change || one != st.one {
			t.Fatalf("step %d (%.2f cores, %.1f waited): change %v one %v, want %v %v", i, st.cores, st.waited, change, one, st.change, st.one)
		}
	}
}

// TestRunFollowsTheProcess drives Run with measures that the test sets,
// and checks the GOMAXPROCS it asks for, and that it gives the default
// back when it stops on one thread.
func TestRunFollowsTheProcess(t *testing.T) {
	if runtime.GOMAXPROCS(0) <= 1 {
		t.Skip("one CPU: the adapter has nothing to do")
	}
	var mu sync.Mutex
	var cpu, wait time.Duration
	var cores, waits float64 // per unit of time
	last := time.Now()
	var sets []int
	a := &Adapter{Interval: 5 * time.Millisecond, Down: 0.5, DownAfter: 4, MaxDownAfter: 8, Wait: 1, Busy: 0.9,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		sample: func() (time.Duration, time.Duration, error) {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			cpu += time.Duration(cores * float64(now.Sub(last)))
			wait += time.Duration(waits * float64(now.Sub(last)))
			last = now
			return cpu, wait, nil
		},
		set: func(n int) {
			mu.Lock()
			defer mu.Unlock()
			sets = append(sets, n)
		},
	}
	load := func(c, w float64) {
		mu.Lock()
		defer mu.Unlock()
		cores, waits = c, w
	}
	waitFor := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := len(sets)
			mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s: GOMAXPROCS set to %v, want %d changes", what, sets, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	load(0.1, 0)
	go func() { defer close(done); a.Run(ctx) }()
	waitFor("quiet", 1)
	load(0.6, 3) // a fan-out falling behind on one thread: not busy, waiting
	waitFor("waiting", 2)
	load(0.1, 0)
	waitFor("quiet again", 3)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []int{1, 0, 1, 0} // the last: the default given back at the stop
	if !slices.Equal(sets, want) {
		t.Fatalf("GOMAXPROCS set to %v, want %v", sets, want)
	}
}

// TestSampleProcess: the process's measures grow with the work it does.
func TestSampleProcess(t *testing.T) {
	cpu0, wait0, err := sampleProcess()
	if err != nil {
		t.Fatal(err)
	}
	// Keep more goroutines runnable than there are threads for a while.
	var wg sync.WaitGroup
	end := time.Now().Add(200 * time.Millisecond)
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Now().Before(end) {
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	cpu1, wait1, err := sampleProcess()
	if err != nil {
		t.Fatal(err)
	}
	if cpu1-cpu0 < 50*time.Millisecond {
		t.Errorf("CPU time grew by %v in 200 ms of busy goroutines", cpu1-cpu0)
	}
	if wait1 <= wait0 {
		t.Errorf("the wait measure did not grow (%v, then %v) while goroutines queued for threads", wait0, wait1)
	}
}
