package main

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
)

func TestTuneGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	rt := config.Runtime{GCPercent: 250, MemoryLimit: 48 << 20}

	attrs := tuneGC(rt, getenv)
	if p := debug.SetGCPercent(100); p != 250 {
		t.Errorf("gc percent %d, want the config's 250", p)
	}
	if l := debug.SetMemoryLimit(-1); l != 48<<20 {
		t.Errorf("memory limit %d, want the config's %d", l, 48<<20)
	}
	if attrs[1] != 250 || attrs[5] != int64(48<<20) || attrs[3] != "config" || attrs[7] != "config" {
		t.Errorf("log attributes %v", attrs)
	}

	// What Go read from the environment stays.
	env["GOGC"], env["GOMEMLIMIT"] = "150", "1GiB"
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	attrs = tuneGC(rt, getenv)
	if p := debug.SetGCPercent(150); p != 150 {
		t.Errorf("gc percent %d, want GOGC's 150", p)
	}
	if l := debug.SetMemoryLimit(-1); l != 1<<30 {
		t.Errorf("memory limit %d, want GOMEMLIMIT's", l)
	}
	if attrs[3] != "GOGC" || attrs[7] != "GOMEMLIMIT" {
		t.Errorf("log attributes %v", attrs)
	}

	// No limit.
	clear(env)
	tuneGC(config.Runtime{GCPercent: 100}, getenv)
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d, want none", l)
	}
}

// TestAdaptThreads: the adapter runs only when the key is on and
// GOMAXPROCS is not in the environment, says which in its attributes, and leaves
// Go's default in place once stopped.
func TestAdaptThreads(t *testing.T) {
	if runtime.GOMAXPROCS(0) <= 1 {
		t.Skip("one CPU: nothing to adapt")
	}
	before := runtime.GOMAXPROCS(0)
	for _, tc := range []struct {
		name       string
		env        map[string]string
		on, adapts bool
		want       string
	}{
		{"on", nil, true, true, "one_thread_when_quiet=true"},
		{"off", nil, false, false, "one_thread_when_quiet=false"},
		{"GOMAXPROCS set", map[string]string{"GOMAXPROCS": "2"}, true, false, "gomaxprocs_from=GOMAXPROCS"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithCancel(context.Background())
		attrs, wait := adaptThreads(ctx, config.Runtime{OneThreadWhenQuiet: tc.on}, func(k string) string { return tc.env[k] }, log)
		log.Info("runtime", attrs...)
		// A quiet test process: the adapter goes to one thread after 3 s.
		if tc.adapts {
			deadline := time.Now().Add(10 * time.Second)
			for runtime.GOMAXPROCS(0) != 1 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if n := runtime.GOMAXPROCS(0); n != 1 {
				t.Errorf("%s: GOMAXPROCS %d after 10 quiet seconds, want 1", tc.name, n)
			}
		}
		if !tc.adapts {
			time.Sleep(4 * time.Second)
			if n := runtime.GOMAXPROCS(0); n != before {
				t.Errorf("%s: GOMAXPROCS %d, want it left at %d", tc.name, n, before)
			}
		}
		cancel()
		wait()
		if n := runtime.GOMAXPROCS(0); n != before {
			t.Errorf("%s: GOMAXPROCS %d once stopped, want the default %d", tc.name, n, before)
		}
		if !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%s: log %q does not say %q", tc.name, buf.String(), tc.want)
		}
	}
}
