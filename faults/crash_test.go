package faults

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCrash kills the relay with SIGKILL at random moments while the
// platform writes, restarting it each time. Every expected event must reach
// both webhooks under exactly one delivery id; receptions beyond one are
// only repeated attempts of the same id.
func TestCrash(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a"), r.url("/b")}, "")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()

	n, kills := int64(size(20000, 3000)), size(6, 3)
	l := &load{e: e}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loaded := make(chan struct{})
	go func() { l.run(ctx, n, 20); close(loaded) }()

	var peak float64
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		p.kill()
		peak = max(peak, p.peakMB())
		p = startRelay(t, "run", "--config", cfg)
	}
	<-loaded
	got := checkDelivered(t, e, r, 2, 3*time.Minute)
	peak = max(peak, p.peakMB())
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: peak, extra: "kills=" + itoa(kills)}.log(t)
	if l.changes.Load() < n {
		t.Fatalf("the load made only %d changes", l.changes.Load())
	}
}

// TestDatabaseRestart restarts PostgreSQL in fast and then immediate mode
// while the platform writes. The relay reconnects with backoff, says so in
// its log, and loses nothing.
func TestDatabaseRestart(t *testing.T) {
	e := newPrivateEnv(t, pgtestOptions())
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a")}, "")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()

	n := int64(size(8000, 2000))
	l := &load{e: e}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loaded := make(chan struct{})
	go func() { l.run(ctx, n, 10); close(loaded) }()
	for _, mode := range []string{"fast", "immediate"} {
		time.Sleep(time.Second)
		if err := e.srv.Restart(context.Background(), mode); err != nil {
			t.Fatal(err)
		}
		// Let the pool drop its broken connections.
		e.pool.Reset()
		e.waitStreaming()
	}
	<-loaded
	got := checkDelivered(t, e, r, 1, 2*time.Minute)
	if p.exited() {
		t.Fatalf("the relay exited: %v", p.err)
	}
	out := p.output()
	if !contains(out, "replication interrupted; reconnecting") {
		t.Errorf("the log does not say the replication was interrupted")
	}
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: p.peakMB(), extra: "restarts=fast,immediate writer_errors=" + itoa(int(l.errors.Load()))}.log(t)
}
