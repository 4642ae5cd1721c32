// Attempts and recording: one attempt's result, and the batches that
// record results in the store.

package relay

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/store"
)

// maxRecordBatch is the most attempts recorded in one statement.
const maxRecordBatch = 500

// recordLinger is how long a finished attempt waits for others to be
// recorded with it. At a steady trickle each attempt was recorded by a
// statement and a commit of its own, which cost PostgreSQL more than the
// recording itself; the receiver has its request by then, so the wait
// delays only what the admin API shows, and a crash in it only means
// re-sending those attempts under the same delivery ids, as for any
// attempt not yet recorded.
const recordLinger = 2 * time.Millisecond

// flushGrace bounds the store work left after the drain: recording the last
// results, aborted attempts included, and giving back the claims of queued
// deliveries. The store work runs in a context of its own, which the
// shutdown does not cancel, so that it is not cut short as the attempts
// were.
const flushGrace = 5 * time.Second

// finished is an attempt's result on its way to the store.
type finished struct {
	claim  *store.Claimed
	result store.AttemptResult
	// span is the attempt's span context, for logging its result.
	span trace.SpanContext
	// aborted attempts are recorded as such (result.Aborted), and their
	// deliveries due again at once.
	aborted bool
}

// attemptOne sends one attempt, hands its result to results, and returns
// how long the attempt took.
func (d *Dispatcher) attemptOne(ctx context.Context, c *store.Claimed, results chan<- finished) time.Duration {
	ctx, span := d.tel.start(ctx, c)
	out := d.send.send(ctx, c)
	n := c.Attempts + 1
	f := finished{claim: c, aborted: out.aborted}
	f.result = store.AttemptResult{
		DeliveryID: c.ID,
		Attempt:    n,
		StartedAt:  out.started,
		Duration:   out.duration,
		StatusCode: out.status,
		Error:      out.err,
		Snippet:    out.snippet,
	}
	delay, retry := d.opts.Schedule.Next(n - c.RetryBase)
	switch {
	case out.aborted:
		f.result.Aborted = true
	case out.err == "":
		f.result.Status = store.StatusDelivered
	case retry:
		f.result.Status = store.StatusRetrying
		f.result.RetryIn = delay
	default:
		f.result.Status = store.StatusFailed
	}
	if out.asked && !out.aborted && out.err != "" {
		// The receiver's back-pressure: this delivery's next attempt and
		// the webhook's other deliveries wait, within the schedule's bound.
		var note string
		f.result.PauseWebhook, note = d.opts.Schedule.backOff(0, out.retryAfter)
		f.result.Error += ": " + note
		if retry {
			f.result.RetryIn, _ = d.opts.Schedule.backOff(delay, out.retryAfter)
		}
	}
	d.tel.end(span, &f, &out)
	f.span = span.SpanContext()
	c.Body = nil // the body is not needed any more; do not hold it while queued
	if !d.keptAhead(&f) {
		results <- f
	}
	return out.duration
}

// recordLoop writes results to the store in batches: whatever has arrived
// while the previous batch was written, or within recordLinger of the
// batch's first result, goes in the next one.
func (d *Dispatcher) recordLoop(ctx context.Context, results <-chan finished) {
	batch := make([]finished, 0, maxRecordBatch)
	linger := time.NewTimer(recordLinger)
	defer linger.Stop()
	for f := range results {
		batch = append(batch[:0], f)
		linger.Reset(recordLinger)
	more:
		for len(batch) < maxRecordBatch {
			select {
			case f, ok := <-results:
				if !ok {
					break more
				}
				batch = append(batch, f)
			case <-linger.C:
				break more
			}
		}
		d.flush(ctx, batch)
	}
}

// flush records a batch of results, aborted attempts included (recording
// one gives its delivery back), retrying while the store fails until ctx is
// done.
func (d *Dispatcher) flush(ctx context.Context, batch []finished) {
	if batch = d.keepAhead(batch); len(batch) == 0 {
		return
	}
	// A statement records one attempt of a delivery: a second result of
	// the same delivery (an attempt started again after the first one's
	// ended, within one batch) goes in a statement after it, which finds it
	// recorded and reports it lost, rather than failing the whole batch.
	if later := splitRepeated(&batch); len(later) > 0 {
		defer d.flush(ctx, later)
	}
	results := make([]store.AttemptResult, len(batch))
	for i, f := range batch {
		results[i] = f.result
	}
	var lost []uuid.UUID
	err := d.retryStore(ctx, "record attempts", func() (err error) {
		lost, err = d.st.RecordAttempts(ctx, d.opts.Owner, results)
		return err
	})
	if err != nil {
		d.log.Error("attempts not recorded; their deliveries will be sent again when their leases expire",
			"deliveries", len(results), "error", err)
		lost = nil
		results = nil
	}

	isLost := make(map[uuid.UUID]bool, len(lost))
	for _, id := range lost {
		isLost[id] = true
	}
	d.recorded(ctx, batch, results == nil, isLost)
}

// splitRepeated keeps in *batch the first result of each delivery, in
// order, and returns the others.
func splitRepeated(batch *[]finished) (later []finished) {
	seen := make(map[uuid.UUID]struct{}, len(*batch))
	kept := (*batch)[:0]
	for _, f := range *batch {
		if _, ok := seen[f.result.DeliveryID]; ok {
			later = append(later, f)
			continue
		}
		seen[f.result.DeliveryID] = struct{}{}
		kept = append(kept, f)
	}
	*batch = kept
	return later
}

// recorded follows the recording of a batch of results (none, when
// failed): it logs and traces each recorded one, and wakes the claim loop
// for the soonest retry.
func (d *Dispatcher) recorded(ctx context.Context, batch []finished, failed bool, isLost map[uuid.UUID]bool) {
	var soonest time.Duration = -1
	for _, f := range batch {
		r := f.result
		sctx := trace.ContextWithSpanContext(ctx, f.span)
		if failed || isLost[r.DeliveryID] || f.aborted {
			if isLost[r.DeliveryID] {
				d.log.WarnContext(sctx, "attempt not recorded: the delivery's lease was lost to another dispatcher",
					"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "attempt", r.Attempt)
			}
			continue
		}
		d.tel.recorded(sctx, &f)
		switch r.Status {
		case store.StatusFailed:
			d.log.WarnContext(sctx, "delivery failed permanently",
				"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "event_type", f.claim.EventType,
				"attempts", r.Attempt, "error", r.Error)
		case store.StatusRetrying:
			d.log.DebugContext(sctx, "attempt failed; will retry",
				"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "attempt", r.Attempt,
				"status_code", r.StatusCode, "error", r.Error, "retry_in", r.RetryIn)
			if soonest < 0 || r.RetryIn < soonest {
				soonest = r.RetryIn
			}
		}
	}
	if soonest >= 0 {
		d.retryIn(soonest)
	}
}

// retryStore runs op until it succeeds or ctx is done, backing off between
// failures.
func (d *Dispatcher) retryStore(ctx context.Context, what string, op func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		d.log.Error(what+": will retry", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// retryIn notes that a delivery this dispatcher recorded is due again after
// delay, so that the claim loop wakes for it rather than waiting to poll.
func (d *Dispatcher) retryIn(delay time.Duration) {
	at := time.Now().Add(delay)
	d.mu.Lock()
	earlier := d.retryAt.IsZero() || at.Before(d.retryAt)
	if earlier {
		d.retryAt = at
	}
	d.mu.Unlock()
	if earlier {
		d.wake()
	}
}
