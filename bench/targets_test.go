package bench

import (
	"strings"
	"testing"
)

// TestTargets: each scenario's figures are checked against its targets,
// at their bounds and past them; a short run, and a scenario without
// targets, has none.
func TestTargets(t *testing.T) {
	met := func(checks []Check) string {
		var b strings.Builder
		for _, c := range checks {
			if c.Met {
				b.WriteByte('y')
			} else {
				b.WriteByte('n')
			}
		}
		return b.String()
	}
	for _, tc := range []struct {
		name string
		r    Result
		want string
	}{
		{"burst at the targets", Result{Scenario: "burst", EventsPerSec: 14000, CPUSecPer10k: 0.60, PGRelayMicrosPerDel: 40}, "yyy"},
		{"burst short of them", Result{Scenario: "burst", EventsPerSec: 13999, CPUSecPer10k: 0.61, PGRelayMicrosPerDel: 41}, "nnn"},
		{"steady", Result{Scenario: "steady", P50ms: 0.6, P99ms: 5.1, PGRelayMicrosPerEvent: 190}, "ynn"},
		{"fanout", Result{Scenario: "fanout", P99ms: 49.9}, "y"},
		{"fanout over", Result{Scenario: "fanout", P99ms: 130}, "n"},
		{"backlog", Result{Scenario: "backlog", EventsPerSec: 9000, PeakRSSMB: 84}, "ny"},
		{"isolation within 20%", Result{Scenario: "isolation", P99ms: 6, BaselineP99ms: 5}, "y"},
		{"isolation past it", Result{Scenario: "isolation", P99ms: 6.1, BaselineP99ms: 5}, "n"},
		{"isolation faster with the hanging endpoint", Result{Scenario: "isolation", P99ms: 4, BaselineP99ms: 5}, "y"},
		{"pause", Result{Scenario: "pause", Recovery: []Recovery{{StoppedAtSec: 10, StallMs: 1000, BackAfterSec: 5}, {StoppedAtSec: 20, StallMs: 1000, BackAfterSec: 6}, {StoppedAtSec: 30, BackAfterSec: -1}}}, "ynn"},
		{"platform", Result{Scenario: "platform", Platform: &PlatformLoad{P99Ratio: 4.93}}, "n"},
		{"platform within", Result{Scenario: "platform", Platform: &PlatformLoad{P99Ratio: 1.1}}, "y"},
		{"floor has none", Result{Scenario: "floor", P50ms: 0.6}, ""},
	} {
		if got := met(Targets(tc.r, false)); got != tc.want {
			t.Errorf("%s: met %q, want %q (%+v)", tc.name, got, tc.want, Targets(tc.r, false))
		}
	}
	if got := Targets(Result{Scenario: "steady", P50ms: 0.1}, true); got != nil {
		t.Errorf("a short run was checked: %+v", got)
	}
	c := Targets(Result{Scenario: "pause", Recovery: []Recovery{{StoppedAtSec: 10, StallMs: 1000, BackAfterSec: -1}}}, false)[0]
	if c.Figure != "not back" || !strings.Contains(c.Target, "resume at 11 s") {
		t.Errorf("pause check %+v", c)
	}
}
