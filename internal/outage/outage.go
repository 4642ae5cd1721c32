// Package outage logs a step that fails on every poll while its cause
// lasts (the database down, say) as an operator can read it: the first
// failure at once, then one line every Remind with how long and how often
// it has failed, and one line when it works again, instead of a line every
// poll.
package outage

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/smartmaintenance/relay/internal/pgconnect"
)

// Remind is how often a failure that goes on is logged again.
const Remind = 30 * time.Second

// Log logs the failures of one step. Its methods may be called from
// several goroutines.
type Log struct {
	log  *slog.Logger
	what string
	// level is what the failure lines are logged at.
	level slog.Level

	mu       sync.Mutex
	since    time.Time // the first failure of the outage; zero while it works
	failures int
	next     time.Time // when the next reminder may be logged
}

// New returns the Log of the step what, logging failures at level.
func New(log *slog.Logger, level slog.Level, what string) *Log {
	return &Log{log: log, level: level, what: what}
}

// Step notes the outcome of one run of the step, now: err, or a success
// when err is nil. It reports whether the run worked. A failure after ctx
// ended (a shutdown cutting the step short) is not the step's and is not
// logged.
func (o *Log) Step(ctx context.Context, err error) bool {
	if err != nil {
		if ctx.Err() == nil {
			o.Failed(time.Now(), err)
		}
		return false
	}
	o.Worked(time.Now())
	return true
}

// Failed notes a failure at now and logs it when it begins an outage or
// a reminder is due.
func (o *Log) Failed(now time.Time, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures++
	if o.since.IsZero() {
		o.since, o.next = now, now.Add(Remind)
		o.log.Log(context.Background(), o.level, o.what+" failed; tried again on every poll, logged again every "+Remind.String()+" while it fails",
			"error", oneLine(err))
		return
	}
	if now.Before(o.next) {
		return
	}
	o.next = now.Add(Remind)
	o.log.Log(context.Background(), o.level, o.what+" still failing", "for", now.Sub(o.since).Round(time.Second).String(),
		"failures", o.failures, "error", oneLine(err))
}

// Worked notes a success at now, which ends an outage.
func (o *Log) Worked(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	o.log.Info(o.what+" works again", "after", now.Sub(o.since).Round(time.Second).String(), "failures", o.failures)
	o.since, o.failures = time.Time{}, 0
}

// oneLine tells err on one line: a failed connection as pgconnect
// explains it (the last attempt's cause and what to check; pgx lists each
// address it tried on a line of its own), any other with its line breaks
// folded.
func oneLine(err error) string {
	return strings.Join(strings.Fields(pgconnect.Explain(err).Error()), " ")
}
