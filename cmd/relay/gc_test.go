package main

import (
	"math"
	"runtime/debug"
	"testing"

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
