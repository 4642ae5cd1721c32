package main

import (
	"math"
	"runtime/debug"

	"github.com/smartmaintenance/relay/config"
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
