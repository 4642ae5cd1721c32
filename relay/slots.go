// Worker slots: taking and freeing them, the queues of ready deliveries
// waiting for one, and giving back what cannot be sent in time.

package relay

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/smartmaintenance/relay/store"
)

// slotState is the Dispatcher's worker slots and queues; Dispatcher.mu
// guards it.
type slotState struct {
	// inflight counts the attempts in flight, perHook those of each
	// webhook.
	inflight int
	perHook  map[int64]int
	// perCompany counts the attempts in flight of each company: when
	// every worker is taken, a freed one goes to the company with the
	// fewest, so that one company's slow receivers cannot keep the others
	// from every worker.
	perCompany map[int64]int
	// queue holds claimed deliveries of a webhook waiting for one of its
	// slots (prefetch), oldest first; queued counts them all.
	queue  map[int64][]queuedDelivery
	queued int
	// sending holds the deliveries whose attempts are under way: a
	// delivery is never attempted twice at once by one dispatcher, and the
	// lease of one in flight is never given back.
	sending map[uuid.UUID]struct{}
}

// queuedDelivery is a ready delivery, claimed or handed off, waiting for a
// slot of its webhook.
type queuedDelivery struct {
	c  *store.Claimed
	at time.Time // when its lease began, at the latest
}

// runState is what attempts started outside the claim loop need.
type runState struct {
	dbCtx, sendCtx context.Context
	attempts       *sync.WaitGroup
	results        chan<- finished
	draining       bool
}

// acquire takes a worker slot for an attempt of c, if one is free.
func (d *Dispatcher) acquire(c *store.Claimed) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight >= d.opts.Workers || d.perHook[c.WebhookID] >= d.opts.PerWebhook {
		return false
	}
	d.takeSlotLocked(c)
	return true
}

// takeSlotLocked counts an attempt of c in. d.mu must be held.
func (d *Dispatcher) takeSlotLocked(c *store.Claimed) {
	d.inflight++
	d.perHook[c.WebhookID]++
	d.perCompany[c.CompanyID]++
}

// free gives back the slot of the finished attempt of done (sent false:
// its copy was dropped, not sent), takes it again for the
// next queued delivery that the slot allows and returns that delivery with
// its run (the caller sends it), and wakes the claim loop when the last
// round left deliveries behind that the slot makes room for.
func (d *Dispatcher) free(done *store.Claimed, sent bool, took time.Duration) (*store.Claimed, *runState) {
	webhook := done.WebhookID
	d.mu.Lock()
	if sent {
		delete(d.sending, done.ID)
	}
	d.notePaceLocked(webhook, took)
	short := d.inflight >= d.opts.Workers // every worker was taken
	d.inflight--
	if d.perHook[webhook]--; d.perHook[webhook] <= 0 {
		delete(d.perHook, webhook)
	}
	if d.perCompany[done.CompanyID]--; d.perCompany[done.CompanyID] <= 0 {
		delete(d.perCompany, done.CompanyID)
	}
	var next *store.Claimed
	var stale []uuid.UUID
	run := d.run
	if run != nil && !run.draining {
		from := webhook
		if short && len(d.queue) > 1 {
			from = d.fairestLocked(webhook)
		}
		next, stale = d.dequeueLocked(from)
		if next == nil {
			// The slot is also a worker slot: another webhook may wait for one.
			for id := range d.queue {
				if d.perHook[id] < d.opts.PerWebhook {
					var more []uuid.UUID
					next, more = d.dequeueLocked(id)
					stale = append(stale, more...)
					if next != nil {
						break
					}
				}
			}
		}
		if next != nil {
			d.takeSlotLocked(next)
			run.attempts.Add(1)
			if a := d.ahead[next.ID]; a != nil {
				a.started = time.Now()
			}
		}
	}
	if d.hold != nil {
		d.roomAheadLocked(webhook, run == nil || run.draining)
	}
	want := d.starved || len(stale) > 0
	if len(d.held[webhook]) > 0 && !d.fullLocked(webhook) {
		want = true // room for its held deliveries
	}
	if d.behind[webhook] && !d.fullLocked(webhook) {
		// Its window has drained enough: the next round includes it.
		delete(d.behind, webhook)
		want = true
	}
	if want {
		d.wantClaim = true
	}
	d.mu.Unlock()
	if len(stale) > 0 {
		d.giveBack(run.dbCtx, stale)
	}
	if want {
		d.wake()
	}
	return next, run
}

// fairestLocked picks the webhook whose queued delivery a freed worker
// serves when every worker was taken: of the webhooks with deliveries
// queued and a slot of their own free, the one whose company has the
// fewest attempts in flight, then the one with the fewest of its own;
// webhook, the one whose attempt freed the worker, on a tie. d.mu must be
// held.
func (d *Dispatcher) fairestLocked(webhook int64) int64 {
	best := int64(-1)
	var bestCompany, bestHook int
	for id, q := range d.queue {
		if len(q) == 0 || d.perHook[id] >= d.opts.PerWebhook {
			continue
		}
		company, hook := d.perCompany[q[0].c.CompanyID], d.perHook[id]
		if best < 0 || company < bestCompany || company == bestCompany && (hook < bestHook || hook == bestHook && id == webhook) {
			best, bestCompany, bestHook = id, company, hook
		}
	}
	if best < 0 {
		return webhook
	}
	return best
}

// dequeueLocked pops the oldest queued delivery of webhook that can still be sent
// within its lease; those that waited too long are returned as stale, to be
// given back. d.mu must be held.
func (d *Dispatcher) dequeueLocked(webhook int64) (next *store.Claimed, stale []uuid.UUID) {
	q := d.queue[webhook]
	// An attempt started now must end (Timeout) before the lease does.
	oldest := time.Now().Add(-d.staleAfter())
	for len(q) > 0 && next == nil {
		qc := q[0]
		q[0] = queuedDelivery{}
		q = q[1:]
		d.queued--
		if qc.at.Before(oldest) {
			// Not given back while another copy lives here: the lease that
			// copy holds (claimed again after this one's expired) is the
			// same owner's, and giving it back would let this dispatcher
			// or another send the delivery again beside that copy.
			if d.letGoLocked(qc.c.ID) && !d.liveLocked(qc.c.ID, q) {
				stale = append(stale, qc.c.ID)
			}
			continue
		}
		next = qc.c
	}
	if len(q) == 0 {
		delete(d.queue, webhook)
	} else {
		d.queue[webhook] = q
	}
	return next, stale
}

// liveLocked reports whether delivery id has a copy in this dispatcher
// that holds its lease: an attempt under way, or a copy in queue (the
// rest of a webhook's queue). d.mu must be held.
func (d *Dispatcher) liveLocked(id uuid.UUID, queue []queuedDelivery) bool {
	if _, ok := d.sending[id]; ok {
		return true
	}
	for _, qc := range queue {
		if qc.c != nil && qc.c.ID == id {
			return true
		}
	}
	return false
}

// startSending notes that an attempt of delivery id starts, and reports
// false when one is under way already: the caller then drops its copy,
// whose result the one under way gives.
func (d *Dispatcher) startSending(id uuid.UUID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.sending[id]; ok {
		return false
	}
	d.sending[id] = struct{}{}
	return true
}

// giveBack releases claims without an attempt, so that any sender may claim
// them again at once.
func (d *Dispatcher) giveBack(ctx context.Context, ids []uuid.UUID) {
	for len(ids) > 0 {
		n := min(len(ids), maxGiveBack)
		if err := d.st.ReleaseClaims(ctx, d.opts.Owner, ids[:n]); err != nil {
			d.log.Error("give back claims; their deliveries will be sent when their leases expire", "deliveries", len(ids), "error", err)
			return
		}
		ids = ids[n:]
	}
}

// maxGiveBack is the most claims given back by one statement.
const maxGiveBack = 10_000

// attempt makes one attempt, hands its result over, and goes on with the
// next delivery its slot is given, if any: one goroutine serves a slot for
// as long as work waits, so its stack is grown once, not per attempt.
func (d *Dispatcher) attempt(ctx context.Context, c *store.Claimed, attempts *sync.WaitGroup, results chan<- finished) {
	for c != nil {
		var took time.Duration
		sent := d.startSending(c.ID)
		if sent {
			took = d.attemptOne(ctx, c, results)
		} else {
			d.log.Warn("a second copy of a delivery under way was dropped", "delivery_id", c.ID, "webhook_id", c.WebhookID)
		}
		// free counts the next attempt in before this one is counted out, so
		// a drain never sees the count touch zero between them.
		next, run := d.free(c, sent, took)
		attempts.Done()
		if c = next; c != nil {
			ctx, attempts, results = run.sendCtx, run.attempts, run.results
		}
	}
}
