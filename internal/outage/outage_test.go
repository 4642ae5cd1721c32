package outage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogsOncePerOutage: a step failing on every poll is logged when
// it starts failing, then once every Remind with how long and how
// often, and once when it works again; each line is one line.
func TestLogsOncePerOutage(t *testing.T) {
	var buf bytes.Buffer
	o := New(slog.New(slog.NewTextHandler(&buf, nil)), slog.LevelError, "claim due deliveries")
	err := errors.New("failed to connect to `user=relay database=sm`:\n\t127.0.0.1:5432 (127.0.0.1): dial error: connection refused")
	t0 := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	o.Worked(t0) // nothing to end
	for i := range 61 {
		o.Failed(t0.Add(time.Duration(i)*500*time.Millisecond), err) // two polls a second for 30 s
	}
	o.Failed(t0.Add(45*time.Second), err)
	o.Failed(t0.Add(61*time.Second), err)
	o.Worked(t0.Add(62 * time.Second))
	o.Worked(t0.Add(63 * time.Second))
	o.Failed(t0.Add(64*time.Second), err)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=ERROR msg="claim due deliveries failed; tried again on every poll, logged again every 30s while it fails" error="failed to connect to ` + "`user=relay database=sm`" + `: 127.0.0.1:5432 (127.0.0.1): dial error: connection refused"`,
		`level=ERROR msg="claim due deliveries still failing" for=30s failures=61 error=`,
		`level=ERROR msg="claim due deliveries still failing" for=1m1s failures=63 error=`,
		`level=INFO msg="claim due deliveries works again" after=1m2s failures=63`,
		`level=ERROR msg="claim due deliveries failed; tried again on every poll`,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if _, rest, _ := strings.Cut(lines[i], " level="); !strings.HasPrefix("level="+rest, w) {
			t.Errorf("line %d: %s\nwant it to begin %s", i, lines[i], w)
		}
	}
}

// TestStep: a run that worked reports so; one that failed is noted and
// logged, except when its context had ended (a shutdown), which is no
// failure of the step's.
func TestStep(t *testing.T) {
	var buf bytes.Buffer
	o := New(slog.New(slog.NewTextHandler(&buf, nil)), slog.LevelWarn, "claim replays")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if o.Step(ended, context.Canceled) || buf.Len() != 0 {
		t.Fatalf("a run cut short by the shutdown: logged %q", buf.String())
	}
	if o.Step(context.Background(), errors.New("down")) || !strings.Contains(buf.String(), `msg="claim replays failed;`) {
		t.Fatalf("a failed run: %q", buf.String())
	}
	if !o.Step(context.Background(), nil) || !strings.Contains(buf.String(), `msg="claim replays works again"`) {
		t.Fatalf("a run that worked: %q", buf.String())
	}
}
