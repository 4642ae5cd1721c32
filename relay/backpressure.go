// Receivers' back-pressure: a 429 or 503 answer with Retry-After.

package relay

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryAfter reads the Retry-After of a 429 or 503 answer (RFC 9110
// 10.2.3: delta-seconds or an HTTP date) as a delay from now. ok is false
// for other statuses, without the header, or when its value is neither
// form (a garbage value is ignored: the schedule applies as without it).
// A date in the past asks for no delay.
func retryAfter(status int, h http.Header, now time.Time) (d time.Duration, ok bool) {
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
		return 0, false
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		const most = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(n, most)) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// Longest is the schedule's longest delay: the most a receiver's
// Retry-After delays one attempt.
func (s Schedule) Longest() time.Duration {
	var most time.Duration
	for _, d := range s {
		most = max(most, d)
	}
	return most
}

// backOff applies a receiver's Retry-After (asked) to the next attempt of
// a delivery that the schedule retries after delay: the attempt waits at
// least what was asked, but at most the schedule's longest delay, so that
// a delivery still fails for good after its last scheduled retry, at most
// that much later than without the header. It returns the delay and the
// note the attempt's history keeps.
func (s Schedule) backOff(delay, asked time.Duration) (time.Duration, string) {
	bound := s.Longest()
	note := "receiver asked to retry after " + seconds(asked)
	switch {
	case asked > bound:
		note += fmt.Sprintf(" (waiting %s, the retry schedule's longest delay)", seconds(bound))
		return max(delay, bound), note
	case asked > delay:
		return asked, note
	}
	return delay, note
}

// seconds writes d in seconds, "120 s", "0.4 s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Round(time.Millisecond).Seconds(), 'f', -1, 64) + " s"
}
