package relay

import (
	"testing"
	"time"
)

func TestScheduleNext(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		sched   Schedule
		attempt int
		delay   time.Duration
		ok      bool
	}{
		{DefaultSchedule, 0, 0, true},
		{DefaultSchedule, 1, 1 * s, true},
		{DefaultSchedule, 2, 5 * s, true},
		{DefaultSchedule, 3, 25 * s, true},
		{DefaultSchedule, 4, 125 * s, true},
		{DefaultSchedule, 5, 625 * s, true},
		{DefaultSchedule, 6, 0, false},
		{DefaultSchedule, 7, 0, false},
		{DefaultSchedule, -1, 0, true},
		{Schedule{}, 1, 0, false},
		{nil, 1, 0, false},
		{Schedule{20 * time.Millisecond}, 1, 20 * time.Millisecond, true},
		{Schedule{20 * time.Millisecond}, 2, 0, false},
	} {
		delay, ok := tc.sched.Next(tc.attempt)
		if delay != tc.delay || ok != tc.ok {
			t.Errorf("%v.Next(%d) = %v, %v; want %v, %v", tc.sched, tc.attempt, delay, ok, tc.delay, tc.ok)
		}
	}
}

// TestDefaultScheduleAttempts walks a delivery that always fails through the
// default schedule: six attempts, about 13 minutes from first to last.
func TestDefaultScheduleAttempts(t *testing.T) {
	var total time.Duration
	attempts := 1
	for {
		d, ok := DefaultSchedule.Next(attempts)
		if !ok {
			break
		}
		total += d
		attempts++
	}
	if attempts != 6 || total != 781*time.Second {
		t.Fatalf("%d attempts over %v; want 6 over 13m1s", attempts, total)
	}
}
