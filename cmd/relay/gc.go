package main

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/procs"
)

// tuneGC applies the runtime keys, except where GOGC or GOMEMLIMIT in the
// environment (getenv) has set Go's collector already, and returns the
// settings in effect as log attributes.
func tuneGC(rt config.Runtime, getenv func(string) string) []any {
	gogc, limitFrom := "config", "config"
	if getenv("GOGC") == "" {
		debug.SetGCPercent(rt.GCPercent)
	} else {
		gogc = "GOGC"
	}
	if getenv("GOMEMLIMIT") == "" {
		limit := int64(rt.MemoryLimit)
		if limit == 0 {
			limit = math.MaxInt64
		}
		debug.SetMemoryLimit(limit)
	} else {
		limitFrom = "GOMEMLIMIT"
	}
	percent := debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	var limit any = debug.SetMemoryLimit(-1)
	if limit == int64(math.MaxInt64) {
		limit = "none"
	}
	return []any{"gc_percent", percent, "gc_percent_from", gogc, "memory_limit", limit, "memory_limit_from", limitFrom}
}

// adaptThreads starts, when runtime.one_thread_when_quiet is on and
// GOMAXPROCS is not set in the environment (getenv), the adapter that runs
// the relay on one thread while it is quiet (internal/procs), until ctx
// ends. It returns the setting in effect as log attributes, and a
// function that waits for the adapter to give Go's default back.
func adaptThreads(ctx context.Context, rt config.Runtime, getenv func(string) string, log *slog.Logger) (attrs []any, wait func()) {
	n := runtime.GOMAXPROCS(0)
	switch {
	case getenv("GOMAXPROCS") != "":
		return []any{"gomaxprocs", n, "gomaxprocs_from", "GOMAXPROCS"}, func() {}
	case !rt.OneThreadWhenQuiet || n <= 1:
		return []any{"gomaxprocs", n, "one_thread_when_quiet", false}, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		procs.New(log).Run(ctx)
	}()
	return []any{"gomaxprocs", n, "one_thread_when_quiet", true}, func() { <-done }
}

// sysmonAttrs returns, as log attributes, whether Go's system monitor is
// kept on its tick and what decided it: runtime.sysmon_ticking, whose
// setting the relay added to GODEBUG when it started again, or GODEBUG in
// the environment (getenv) as the operator set it.
func sysmonAttrs(rt config.Runtime, getenv func(string) string) []any {
	godebug := getenv("GODEBUG")
	set, ticking := procs.SysmonTicking(godebug)
	from := "config"
	if set && !(rt.SysmonTicking && strings.HasSuffix(godebug, procs.SysmonSetting)) {
		from = "GODEBUG"
	}
	return []any{"sysmon_ticking", ticking, "sysmon_ticking_from", from}
}
