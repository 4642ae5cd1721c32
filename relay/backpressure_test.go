package relay

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/store"
)

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 4, 24, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		status int
		value  string
		want   time.Duration
		ok     bool
	}{
		{503, "120", 120 * time.Second, true},
		{429, " 7 ", 7 * time.Second, true},
		{429, "Fri, 24 Apr 2026 09:02:00 GMT", 2 * time.Minute, true},
		{503, "Fri, 24 Apr 2026 08:00:00 GMT", 0, true}, // in the past: no delay
		{503, "soon", 0, false},
		{503, "-5", 0, false},
		{503, "1.5", 0, false},
		{503, "", 0, false},
		{500, "120", 0, false}, // only 429 and 503 ask
		{503, "99999999999999999999", 0, false},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		got, ok := retryAfter(tc.status, h, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%d Retry-After %q: %v %v, want %v %v", tc.status, tc.value, got, ok, tc.want, tc.ok)
		}
	}
}

// A receiver's 429 or 503 with Retry-After delays that webhook's next
// attempts, this delivery's and its other deliveries', to at least that
// time, within the schedule: a delivery still fails after its last
// scheduled retry, and an absurd value waits the schedule's longest delay.
// Other webhooks keep delivering meanwhile.
func TestRetryAfterBackPressure(t *testing.T) {
	sched := Schedule{50 * time.Millisecond, 50 * time.Millisecond, 3 * time.Second}
	answer := func(status int, value string) func(http.ResponseWriter, *http.Request, int) {
		return func(w http.ResponseWriter, _ *http.Request, n int) {
			if n == 1 {
				if value != "" {
					w.Header().Set("Retry-After", value)
				}
				w.WriteHeader(status)
				return
			}
			w.WriteHeader(http.StatusOK)
		}
	}
	for _, tc := range []struct {
		name      string
		status    int
		value     func() string
		least     time.Duration // between the attempts
		most      time.Duration // generous: the race detector on a busy machine delays claim rounds
		recorded  string
		pausesAll bool
	}{
		{"seconds", 503, func() string { return "2" }, 2 * time.Second, 5 * time.Second, "HTTP 503: receiver asked to retry after 2 s", true},
		{"HTTP date", 429, func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 1900 * time.Millisecond, 5500 * time.Millisecond,
			"HTTP 429: receiver asked to retry after", true},
		{"garbage", 503, func() string { return "in a while" }, 0, time.Second, "HTTP 503", false},
		{"503 without Retry-After", 503, func() string { return "" }, 0, time.Second, "HTTP 503", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			rc := newReceiver(t, answer(tc.status, tc.value()))
			other := newReceiver(t, nil)
			hook, otherHook := e.webhook(rc.URL, "", nil), e.webhook(other.URL, "", nil)
			id := e.delivery(hook, body)
			e.start(fast(Options{Schedule: sched}))
			eventually(t, 5*time.Second, func() bool { return len(rc.receipts(id)) == 1 }, func() string { return "first attempt" })
			time.Sleep(100 * time.Millisecond) // recorded
			// Meanwhile: another delivery of the same webhook, and one of
			// another webhook.
			sameID, otherID := e.delivery(hook, body), e.delivery(otherHook, body)
			asked := time.Now()
			e.waitStatus(otherID, store.StatusDelivered, 2*time.Second)
			if time.Since(asked) > 1500*time.Millisecond {
				t.Errorf("another webhook's delivery waited %v", time.Since(asked))
			}
			d := e.waitStatus(id, store.StatusDelivered, 6*time.Second)
			got := rc.receipts(id)
			if gap := got[1].at.Sub(got[0].at); gap < tc.least || gap > tc.most {
				t.Errorf("second attempt %v after the first; want %v to %v", gap, tc.least, tc.most)
			}
			as := e.attempts(id)
			if d.Attempts != 2 || !strings.HasPrefix(as[0].Error, tc.recorded) || (!tc.pausesAll && strings.Contains(as[0].Error, "asked")) {
				t.Errorf("attempts %+v; want the first recorded as %q", as, tc.recorded)
			}
			e.waitStatus(sameID, store.StatusDelivered, 6*time.Second)
			if same := rc.receipts(sameID); tc.pausesAll && same[0].at.Before(got[0].at.Add(tc.least)) {
				t.Errorf("the webhook's other delivery was sent %v after the 503; want no sooner than %v",
					same[0].at.Sub(got[0].at), tc.least)
			}
		})
	}
}

// An absurd Retry-After waits the schedule's longest delay, and the
// delivery still fails for good after its last scheduled retry.
func TestRetryAfterBoundedBySchedule(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Retry-After", "31536000") // a year
		w.WriteHeader(http.StatusTooManyRequests)
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	start := time.Now()
	e.start(fast(Options{Schedule: Schedule{100 * time.Millisecond, 400 * time.Millisecond}}))
	d := e.waitStatus(id, store.StatusFailed, 5*time.Second)
	took := time.Since(start)
	got := rc.receipts(id)
	if d.Attempts != 3 || len(got) != 3 || took > 3*time.Second {
		t.Fatalf("failed after %d attempts, %d requests, %v; want 3 within the schedule's bound", d.Attempts, len(got), took)
	}
	for i := 1; i < 3; i++ {
		if gap := got[i].at.Sub(got[i-1].at); gap < 400*time.Millisecond || gap > 1500*time.Millisecond {
			t.Errorf("attempt %d came %v after the one before; want the schedule's longest delay, 400 ms", i+1, gap)
		}
	}
	as := e.attempts(id)
	if !strings.Contains(as[0].Error, "receiver asked to retry after 31536000 s (waiting 0.4 s, the retry schedule's longest delay)") {
		t.Errorf("first attempt recorded as %q", as[0].Error)
	}
}
