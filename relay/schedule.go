package relay

import "time"

// Schedule is a retry policy: the delays before each retry, in order. A
// delivery gets one attempt plus one retry per entry; when they are used
// up, it has failed for good.
type Schedule []time.Duration

// DefaultSchedule is the product's schedule: retries after 1, 5, 25, 125
// and 625 seconds, six attempts in all over about 13 minutes.
var DefaultSchedule = Schedule{
	1 * time.Second,
	5 * time.Second,
	25 * time.Second,
	125 * time.Second,
	625 * time.Second,
}

// Next returns the delay before the next attempt of a delivery that has
// made attempt attempts so far (1 after the first failure), and false when
// it has used up its retries and has failed for good. With no attempts made
// the delay is zero: the first attempt is immediate.
func (s Schedule) Next(attempt int) (time.Duration, bool) {
	switch {
	case attempt <= 0:
		return 0, true
	case attempt > len(s):
		return 0, false
	default:
		return s[attempt-1], true
	}
}
