package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// What the pause scenario holds the relay to after a stall: the p99 of
// the deliveries of the events committed in each window of a second after
// the resume is back under 50 ms.
const (
	recoveryWindow = time.Second
	recoveryP99    = 50 * time.Millisecond
)

// Recovery is how the relay's latency came back after one stall.
type Recovery struct {
	// StoppedAtSec is when the relay was stopped, in seconds from the
	// load's start, and StallMs for how long.
	StoppedAtSec float64 `json:"stopped_at_sec"`
	StallMs      float64 `json:"stall_ms"`
	// WindowP99ms is, for each window of a second after the resume (up to
	// the next stall or the load's end; a last window shorter than half a
	// second is left out), the p99 latency of the deliveries of the events
	// committed in it; 0 for a window without any.
	WindowP99ms []float64 `json:"window_p99_ms"`
	// BackAfterSec is when the p99 got back under 50 ms for good: the
	// start, in seconds after the resume, of the first window from which
	// every window's p99 is under it. -1 when the last window's is not.
	BackAfterSec float64 `json:"back_under_50ms_after_sec"`
}

func (r Recovery) String() string {
	ws := make([]string, len(r.WindowP99ms))
	for i, p := range r.WindowP99ms {
		ws[i] = fmt.Sprintf("%.0f", p)
	}
	back := "not back under 50 ms before the load's end or the next stall"
	switch {
	case len(r.WindowP99ms) == 0:
		back = "no second after the resume before the load's end or the next stall to measure"
	case r.BackAfterSec >= 0:
		back = fmt.Sprintf("back under 50 ms %.0f s after the resume", r.BackAfterSec)
	}
	return fmt.Sprintf("stopped %.0f ms at %.1f s: p99 per second after the resume %s ms; %s",
		r.StallMs, r.StoppedAtSec, strings.Join(ws, ", "), back)
}

// recoveries measures, for each stall, the p99 in windows of the commit
// time after its resume, from samples of (commit time, latency) in Unix µs
// and µs; loadEnd is when the load's last commit was made.
func recoveries(samples [][2]int64, stalls []stall, start, loadEnd time.Time, window, limit time.Duration) []Recovery {
	out := make([]Recovery, len(stalls))
	for i, s := range stalls {
		until := loadEnd
		if i+1 < len(stalls) {
			until = stalls[i+1].stopped
		}
		var windows [][]int64
		for from := s.resumed; until.Sub(from) >= window/2; from = from.Add(window) {
			windows = append(windows, nil)
		}
		from, to := s.resumed.UnixMicro(), until.UnixMicro()
		for _, sm := range samples {
			if sm[0] < from || sm[0] >= to {
				continue
			}
			if k := int((sm[0] - from) / window.Microseconds()); k < len(windows) {
				windows[k] = append(windows[k], sm[1])
			}
		}
		r := Recovery{StoppedAtSec: s.stopped.Sub(start).Seconds(), StallMs: float64(s.resumed.Sub(s.stopped).Microseconds()) / 1000,
			WindowP99ms: make([]float64, len(windows)), BackAfterSec: -1}
		for k, w := range windows {
			slices.Sort(w)
			r.WindowP99ms[k] = float64(percentile(w, 99).Microseconds()) / 1000
		}
		back := len(windows)
		for back > 0 && r.WindowP99ms[back-1] <= float64(limit.Microseconds())/1000 {
			back--
		}
		if back < len(windows) {
			r.BackAfterSec = (time.Duration(back) * window).Seconds()
		}
		out[i] = r
	}
	return out
}
