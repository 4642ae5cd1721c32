package bench

import "fmt"

// Check is one run's figure against one of the targets set for its
// scenario (docs/PERFORMANCE.md): round two's where it set one, the first
// round's otherwise. A target is met when it holds in every run, so a
// run's checks say only whether that run met it.
type Check struct {
	Target string `json:"target"`
	Figure string `json:"figure"`
	Met    bool   `json:"met"`
}

// Targets checks r against its scenario's targets. They are set for
// full-size runs on the bench's machine: a short run, and a scenario
// without targets (floor), has none.
func Targets(r Result, short bool) []Check {
	if short {
		return nil
	}
	atMost := func(target string, v, limit float64, unit string) Check {
		return Check{Target: target, Figure: fmt.Sprintf("%.1f %s", v, unit), Met: v <= limit}
	}
	atLeast := func(target string, v, limit float64, unit string) Check {
		return Check{Target: target, Figure: fmt.Sprintf("%.0f %s", v, unit), Met: v >= limit}
	}
	switch r.Scenario {
	case "burst":
		return []Check{
			atLeast("≥ 14,000 events/s", r.EventsPerSec, 14000, "events/s"),
			atMost("relay CPU ≤ 60 µs per event", r.CPUSecPer10k*100, 60, "µs"),
			atMost("the platform's PostgreSQL on the relay ≤ 40 µs per delivery", r.PGRelayMicrosPerDel, 40, "µs"),
		}
	case "steady":
		return []Check{
			atMost("p50 ≤ 0.6 ms", r.P50ms, 0.6, "ms"),
			atMost("p99 ≤ 5 ms", r.P99ms, 5, "ms"),
			atMost("the platform's PostgreSQL on the relay ≤ 150 µs per event", r.PGRelayMicrosPerEvent, 150, "µs"),
		}
	case "fanout":
		return []Check{atMost("p99 ≤ 50 ms", r.P99ms, 50, "ms")}
	case "backlog":
		return []Check{
			atLeast("drain ≥ 10,000 events/s", r.EventsPerSec, 10000, "events/s"),
			atMost("relay peak RSS ≤ 100 MB", r.PeakRSSMB, 100, "MB"),
		}
	case "isolation":
		if r.BaselineP99ms <= 0 {
			return nil
		}
		return []Check{atMost("healthy endpoints' p99 within 20% of their p99 without the hanging one",
			100*(r.P99ms-r.BaselineP99ms)/r.BaselineP99ms, 20, "%")}
	case "pause":
		var out []Check
		for _, rec := range r.Recovery {
			c := Check{Target: fmt.Sprintf("p99 back under 50 ms within 5 s of the resume at %.0f s", rec.StoppedAtSec+rec.StallMs/1000),
				Figure: "not back", Met: rec.BackAfterSec >= 0 && rec.BackAfterSec <= 5}
			if rec.BackAfterSec >= 0 {
				c.Figure = fmt.Sprintf("back after %.0f s", rec.BackAfterSec)
			}
			out = append(out, c)
		}
		return out
	case "platform":
		if r.Platform == nil {
			return nil
		}
		return []Check{{Target: "the platform's p99 with the relay ≤ 1.1 × without",
			Figure: fmt.Sprintf("%.2f ×", r.Platform.P99Ratio), Met: r.Platform.P99Ratio <= 1.1}}
	}
	return nil
}
