// Keeping Go's system monitor on its tick.

package procs

import (
	"strconv"
	"strings"
)

// SysmonSetting is the GODEBUG setting that keeps Go's system monitor
// thread (sysmon) on its own tick, at most every 10 ms while there is
// nothing for it to do, instead of its deep sleep.
//
// Whenever every thread of the runtime is idle, sysmon goes into a deep
// sleep, and the first system call after that wakes it; woken that way,
// it checks the threads every 20 µs for a millisecond before it slows
// down or sleeps again. A relay at a thousand small transactions a second is
// idle between changes and makes a few system calls for each (the change
// feed's read, the request, the answer), so most of them wake it: a
// futex call on the relay's side, and a thread woken on another core,
// which then takes that core from the platform's database for its 20 µs
// sleeps. That was 29% of the relay's CPU per event in the bench
// (docs/PERFORMANCE.md). With schedtrace set, sysmon never deep-sleeps:
// it backs off to its 10 ms tick, a hundred wake-ups a second whatever
// the load.
//
// The runtime reads schedtrace only when the process starts, so a relay
// that wants it starts itself again with it (see Exec). schedtrace is
// also how often, in milliseconds, Go prints one line about its scheduler
// to stderr; at its largest value, 2^31-1 ms, that is once every 24.8
// days of the host's uptime (the runtime counts from the host's boot, so
// a relay started on a host up longer prints the first line at once).
const SysmonSetting = "schedtrace=2147483647"

// SysmonTicking reports whether godebug, a GODEBUG value, sets
// schedtrace, and whether that keeps sysmon on its tick (a value over 0).
// A GODEBUG that sets schedtrace is left as it is: its author decided.
func SysmonTicking(godebug string) (set, ticking bool) {
	// As the runtime reads it: comma-separated key=value pairs, the last
	// one of a key winning.
	for _, field := range strings.Split(godebug, ",") {
		key, value, ok := strings.Cut(field, "=")
		if !ok || key != "schedtrace" {
			continue
		}
		n, err := strconv.ParseInt(value, 10, 32)
		set, ticking = true, err == nil && n > 0
	}
	return set, ticking
}

// WithSysmonTicking returns environ (as os.Environ returns it) with
// SysmonSetting added to GODEBUG, and true; or environ as it is and false
// when its GODEBUG sets schedtrace already (see SysmonTicking).
func WithSysmonTicking(environ []string) ([]string, bool) {
	const prefix = "GODEBUG="
	godebug, found := "", false
	for _, kv := range environ {
		if !found && strings.HasPrefix(kv, prefix) {
			godebug, found = kv[len(prefix):], true // the first one is the one Go reads
		}
	}
	if set, _ := SysmonTicking(godebug); set {
		return environ, false
	}
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	if godebug != "" {
		return append(out, prefix+godebug+","+SysmonSetting), true
	}
	return append(out, prefix+SysmonSetting), true
}
