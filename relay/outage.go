package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// outageRemind is how often a failure that goes on is logged again.
const outageRemind = 30 * time.Second

// outage logs a step that fails on every poll while its cause lasts (the
// database down, say) as an operator can read it: the first failure at
// once, then one line every outageRemind with how long and how often it
// has failed, and one line when it works again, instead of a line every
// poll.
type outage struct {
	log  *slog.Logger
	what string
	// level is what the failure lines are logged at.
	level slog.Level

	mu       sync.Mutex
	since    time.Time // the first failure of the outage; zero while it works
	failures int
	next     time.Time // when the next reminder may be logged
}

func newOutage(log *slog.Logger, level slog.Level, what string) *outage {
	return &outage{log: log, level: level, what: what}
}

// failed notes a failure at now and logs it when it begins an outage or
// a reminder is due.
func (o *outage) failed(now time.Time, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures++
	if o.since.IsZero() {
		o.since, o.next = now, now.Add(outageRemind)
		o.log.Log(context.Background(), o.level, o.what+" failed; tried again on every poll, logged again every "+outageRemind.String()+" while it fails",
			"error", oneLine(err.Error()))
		return
	}
	if now.Before(o.next) {
		return
	}
	o.next = now.Add(outageRemind)
	o.log.Log(context.Background(), o.level, o.what+" still failing", "for", now.Sub(o.since).Round(time.Second).String(),
		"failures", o.failures, "error", oneLine(err.Error()))
}

// worked notes a success at now, which ends an outage.
func (o *outage) worked(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	o.log.Info(o.what+" works again", "after", now.Sub(o.since).Round(time.Second).String(), "failures", o.failures)
	o.since, o.failures = time.Time{}, 0
}
