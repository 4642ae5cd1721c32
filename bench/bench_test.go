package bench

import (
	"context"
	"fmt"
	"os"
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
	os.Exit(m.Run())
}

// TestSmoke runs the bench command's short scenarios so that it never rots.
// It checks that figures come out, not what they are: timing targets are
// for the bench command on a quiet machine (docs/PERFORMANCE.md).
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	results, err := Run(ctx, Options{Self: os.Args[0], Short: true, Scenarios: []string{"burst", "isolation", "pause"}, Relay: os.Getenv("RELAY_BINARY")})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		t.Logf("%+v", r)
		if r.Events == 0 || r.Deliveries == 0 || r.EventsPerSec <= 0 || r.PeakRSSMB <= 0 || r.P99ms <= 0 ||
			r.WALBytesPerDel <= 0 || r.Disk.Syncs == 0 || r.Disk.Err != "" {
			t.Errorf("%s: missing figures: %+v", r.Scenario, r)
		}
	}
}
