package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the bench's receiver process.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "receive" {
		if err := Serve(os.Args[3], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	code := m.Run()
	if relayDir != "" {
		os.RemoveAll(relayDir)
	}
	os.Exit(code)
}

var (
	relayOnce sync.Once
	relayDir  string
	relayBin  string
	relayErr  error
)

// relayBinary returns $RELAY_BINARY, or the relay built once for every test
// of the package.
func relayBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RELAY_BINARY"); p != "" {
		return p
	}
	relayOnce.Do(func() {
		if relayDir, relayErr = os.MkdirTemp("", "relaybench-test-"); relayErr != nil {
			return
		}
		relayBin = filepath.Join(relayDir, "relay")
		if out, err := exec.Command("go", "build", "-o", relayBin, "github.com/smartmaintenance/relay/cmd/relay").CombinedOutput(); err != nil {
			relayErr = fmt.Errorf("build relay: %v: %s", err, out)
		}
	})
	if relayErr != nil {
		t.Fatal(relayErr)
	}
	return relayBin
}

// TestSmoke runs the bench command's short scenarios so that it never rots.
// It checks that figures come out, not what they are: timing targets are
// for the bench command on a quiet machine (docs/PERFORMANCE.md).
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	results, err := Run(ctx, Options{Self: os.Args[0], Short: true, Scenarios: []string{"burst", "isolation", "pause", "platform"}, Relay: relayBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		t.Logf("%+v", r)
		if r.Events == 0 || r.Deliveries == 0 || r.EventsPerSec <= 0 || r.PeakRSSMB <= 0 || r.P99ms <= 0 ||
			r.WALBytesPerDel <= 0 || r.Disk.Syncs == 0 || r.Disk.Err != "" {
			t.Errorf("%s: missing figures: %+v", r.Scenario, r)
		}
		// The platform's tax: the walsender runs in every scenario.
		if r.PGRelayMicrosPerEvent <= 0 || r.PGRelayMicrosPerDel <= 0 || r.PGByProcess["smtm-relay"] <= 0 {
			t.Errorf("%s: no platform tax: per event %v, per delivery %v, by process %v", r.Scenario, r.PGRelayMicrosPerEvent, r.PGRelayMicrosPerDel, r.PGByProcess)
		}
		if r.StatePGMicrosPerDel != 0 {
			t.Errorf("%s: a state cluster's figures without one: %v", r.Scenario, r.StatePGMicrosPerDel)
		}
		switch r.Scenario {
		case "pause":
			if len(r.Recovery) != 2 {
				t.Fatalf("pause: want a recovery for each of 2 stalls, got %+v", r.Recovery)
			}
			for _, rec := range r.Recovery {
				if rec.StallMs < float64(ShortStall.Milliseconds()) || len(rec.WindowP99ms) == 0 || rec.WindowP99ms[0] <= 0 {
					t.Errorf("pause: missing recovery figures: %+v", rec)
				}
			}
		case "platform":
			p := r.Platform
			if p == nil {
				t.Fatal("platform: no figures of the platform's transactions")
			}
			for name, ph := range map[string]PlatformPhase{"alone": p.Alone, "with PostgreSQL's own client": p.WithClient, "with the relay": p.WithRelay} {
				if ph.Transactions < 1000 || ph.TxPerSec <= 0 || ph.P50ms <= 0 || ph.P99ms < ph.P50ms ||
					ph.MaxMs < ph.P99ms || ph.CommitP99ms <= 0 || ph.PGMicrosPerTx <= 0 || ph.Disk.Syncs == 0 {
					t.Errorf("platform %s: missing figures: %+v", name, ph)
				}
			}
			if p.P99Ratio <= 0 || p.CommitP99Ratio <= 0 || p.ClientP99Ratio <= 0 || p.ClientCommitP99Ratio <= 0 {
				t.Errorf("platform: no ratios: %+v", p)
			}
			// The load's connections are named, and alive when measured.
			if r.PGByProcess["platform load"] <= 0 {
				t.Errorf("platform: the load's CPU is not its own: %v", r.PGByProcess)
			}
			// Every transaction fires one event, which one webhook takes;
			// the short run's warm-up is half a second at 1,000/s.
			if r.Deliveries != r.Events || r.Events != p.WithRelay.Transactions+500 {
				t.Errorf("platform: %d events and %d deliveries for %d transactions after the warm-up", r.Events, r.Deliveries, p.WithRelay.Transactions)
			}
		}
	}
}

// TestSeparateStateCluster checks that with the relay's tables in a
// cluster of their own, the platform's server runs only the walsender for
// the relay, and what the state cluster spent is reported apart.
func TestSeparateStateCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := Run(ctx, Options{Self: os.Args[0], Short: true, Scenarios: []string{"burst"}, Relay: relayBinary(t), SeparateState: StateCluster})
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	t.Logf("%+v", r)
	if r.State != StateCluster || r.StatePGMicrosPerDel <= 0 || r.StateWALBytesPerDel <= 0 {
		t.Errorf("no figures of the state cluster: %+v", r)
	}
	for role, us := range r.PGByProcess {
		if role != "smtm-relay" && role != "smtm-relay-feed" && role != "smtm-relay-observability" && relayShare(map[string]float64{role: us}) > 0 {
			t.Errorf("the platform's server ran the relay's %s (%v µs/delivery)", role, us)
		}
	}
	if _, ok := r.PGByProcess["smtm-relay"]; !ok {
		t.Errorf("no walsender of the relay's on the platform's server: %v", r.PGByProcess)
	}
	// The tax is the walsender's share, whatever it came to: its CPU is
	// counted in the kernel's 10 ms ticks, and a short burst that it
	// decodes without the relay's writes can cost it less than one on a
	// fast machine (0 µs per delivery, seen in CI).
	if r.PGRelayMicrosPerDel != r.PGByProcess["smtm-relay"]+r.PGByProcess["smtm-relay-feed"]+r.PGByProcess["smtm-relay-observability"] || r.PGRelayMicrosPerDel < 0 {
		t.Errorf("the platform's tax is not the walsender's: %v of %v", r.PGRelayMicrosPerDel, r.PGByProcess)
	}
	// The platform's WAL is the burst's update, not the relay's records.
	if r.WALBytesPerDel >= r.StateWALBytesPerDel {
		t.Errorf("the platform's server wrote %v B of WAL per delivery, the state cluster %v", r.WALBytesPerDel, r.StateWALBytesPerDel)
	}
}

func TestParseStatePlace(t *testing.T) {
	for in, want := range map[string]StatePlace{"": StateInPlatform, "false": StateInPlatform, "true": StateCluster, "cluster": StateCluster, "database": StateDatabase} {
		if got, err := ParseStatePlace(in); err != nil || got != want {
			t.Errorf("ParseStatePlace(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseStatePlace("elsewhere"); err == nil {
		t.Error(`ParseStatePlace("elsewhere"): no error`)
	}
	if _, err := Run(context.Background(), Options{SeparateState: "elsewhere"}); err == nil {
		t.Error("Run with an unknown state place: no error")
	}
}

// TestRecoveries checks the pause scenario's reading of a stall: the p99
// per second of commit time after the resume, and the first second from
// which it stays under the limit.
func TestRecoveries(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	stalls := []stall{{at(2), at(3)}, {at(8), at(9)}}
	var samples [][2]int64
	add := func(from, to float64, lat time.Duration) {
		for s := from; s < to; s += 0.001 {
			samples = append(samples, [2]int64{at(s).UnixMicro(), lat.Microseconds()})
		}
	}
	add(0, 2, 5*time.Millisecond)      // before the first stall
	add(2, 3, 900*time.Millisecond)    // during it: not in any window
	add(3, 4, 400*time.Millisecond)    // the first second after the resume
	add(4, 5, 60*time.Millisecond)     // still over 50 ms
	add(5, 8, 10*time.Millisecond)     // back under it
	add(9, 10, 30*time.Millisecond)    // the second stall: under at once
	add(10, 11, 70*time.Millisecond)   // over again: not back for good
	add(11, 12.3, 20*time.Millisecond) // then under, to the end
	got := recoveries(samples, stalls, start, at(12.3), time.Second, 50*time.Millisecond)
	if len(got) != 2 {
		t.Fatalf("got %d recoveries, want 2: %+v", len(got), got)
	}
	first, second := got[0], got[1]
	if first.StoppedAtSec != 2 || first.StallMs != 1000 {
		t.Errorf("first stall: at %v s for %v ms, want 2 s and 1000 ms", first.StoppedAtSec, first.StallMs)
	}
	// Windows 3-4, 4-5, 5-6, 6-7, 7-8 up to the next stall.
	if want := []float64{400, 60, 10, 10, 10}; fmt.Sprint(first.WindowP99ms) != fmt.Sprint(want) {
		t.Errorf("first stall's windows %v, want %v", first.WindowP99ms, want)
	}
	if first.BackAfterSec != 2 {
		t.Errorf("first stall: back after %v s, want 2", first.BackAfterSec)
	}
	// Windows 9-10, 10-11, 11-12; 12-12.3 is too short to count.
	if want := []float64{30, 70, 20}; fmt.Sprint(second.WindowP99ms) != fmt.Sprint(want) {
		t.Errorf("second stall's windows %v, want %v", second.WindowP99ms, want)
	}
	if second.BackAfterSec != 2 {
		t.Errorf("second stall: back after %v s, want 2", second.BackAfterSec)
	}
	// Over the limit in the last window: not back.
	never := recoveries([][2]int64{{at(3.5).UnixMicro(), 80_000}}, stalls[:1], start, at(4), time.Second, 50*time.Millisecond)
	if never[0].BackAfterSec != -1 || len(never[0].WindowP99ms) != 1 {
		t.Errorf("a stall never recovered from: %+v", never[0])
	}
	// No second after the resume: nothing measured, and said so.
	none := recoveries(nil, stalls[:1], start, at(3.2), time.Second, 50*time.Millisecond)
	if len(none[0].WindowP99ms) != 0 || none[0].BackAfterSec != -1 || !strings.Contains(none[0].String(), "no second") {
		t.Errorf("a stall at the load's end: %+v, %s", none[0], none[0])
	}
}

// TestFloor runs the floor scenario short: PostgreSQL's own client reads
// every change the load writes, and the latencies come out. Both it and
// the relay reach PostgreSQL over its Unix socket (Options.Socket; the
// bench checks each walsender's client, and TestSmoke the TCP case).
func TestFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := Run(ctx, Options{Self: os.Args[0], Short: true, Scenarios: []string{"floor", "steady"}, Relay: relayBinary(t), Socket: true})
	if err != nil {
		t.Fatal(err)
	}
	r, steady := results[0], results[1]
	t.Logf("%+v", r)
	if r.Events != 5000 || r.P50ms <= 0 || r.P99ms < r.P50ms || r.MaxMs < r.P99ms {
		t.Fatalf("floor: missing figures: %+v", r)
	}
	// The steady run beside it is measured against it.
	if steady.FloorP50ms != r.P50ms || steady.P50OverFloorMs != steady.P50ms-r.P50ms || steady.P50ms <= 0 {
		t.Fatalf("steady beside the floor: p50 %v, floor %v, over %v; want the floor's p50 %v and the difference",
			steady.P50ms, steady.FloorP50ms, steady.P50OverFloorMs, r.P50ms)
	}
	if r.FloorP50ms != 0 {
		t.Fatalf("the floor itself got a floor: %v", r.FloorP50ms)
	}
	if !r.Socket || !steady.Socket {
		t.Fatalf("results do not say the socket was used: %v, %v", r.Socket, steady.Socket)
	}
}

func TestOverFloorNeedsTheFloor(t *testing.T) {
	results := []Result{{Scenario: "steady", P50ms: 0.7}, {Scenario: "burst", P50ms: 4000}}
	overFloor(results)
	if results[0].FloorP50ms != 0 || results[0].P50OverFloorMs != 0 {
		t.Fatalf("steady without a floor run got %+v", results[0])
	}
	results = append(results, Result{Scenario: "floor", P50ms: 0.4})
	overFloor(results)
	if results[0].FloorP50ms != 0.4 || results[0].P50OverFloorMs < 0.299 || results[0].P50OverFloorMs > 0.301 || results[1].FloorP50ms != 0 {
		t.Fatalf("with a floor run: %+v, %+v", results[0], results[1])
	}
}

func TestTitleNanos(t *testing.T) {
	for line, want := range map[string]int64{
		`table public.repair_requests: INSERT: id[integer]:7 company_id[integer]:1 title[text]:'1764990000123456789' priority[text]:'normal'`: 1764990000123456789,
		`BEGIN 123`: -1,
		`table public.repair_requests: INSERT: title[text]:'seed'`: -1,
	} {
		got, ok := titleNanos([]byte(line))
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("%s: %d, want %d", line, got, want)
		}
	}
}
