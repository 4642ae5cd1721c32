// Claims and windows: the claim loop and its wake-ups, the claim round,
// and how much each webhook may have ahead (its window) and the dispatcher
// as a whole (room).

package relay

import (
	"context"
	"sync"
	"time"

	"github.com/smartmaintenance/relay/store"
)

// maxClaim is the most deliveries one claim asks for.
const maxClaim = 500

// prefetch is how many deliveries per slot of a webhook are taken at
// most (leased as they are stored, or claimed), so that a busy endpoint's
// next attempt starts as soon as a slot frees, without a claim query each
// time. With the default PerWebhook that is 512 deliveries a webhook: over
// a second of its traffic even at the fan-out scenario's rate, so that a
// relay falling briefly behind keeps taking new deliveries from the store
// writes instead of switching to claims, which cost PostgreSQL a locked
// update per delivery and fell further behind (the fan-out scenario's
// p99 went from 5.7 s to 0.6 s when this went from 8 to 32). A slow
// webhook holds less: see windowLocked.
const prefetch = 32

// minTaken is how many deliveries the dispatcher may have taken (in flight
// and queued together) however few Workers there are (Workers × prefetch when
// that is more), unless their payloads are large (takenBytes): with many
// webhooks, that many deliveries (each its payload and about 300 bytes)
// keep every endpoint's window fed straight from the store writes, without
// claims. The backlog scenario's peak RSS stays at 80 MB.
const minTaken = 16384

// minClaimGap spaces the claim rounds that freed slots trigger; Notify and
// the poll timer are not delayed.
const minClaimGap = 2 * time.Millisecond

// paceState is what the Dispatcher's windows and room follow;
// Dispatcher.mu guards it.
type paceState struct {
	// pace is each webhook's recent attempt duration (see windowLocked).
	pace map[int64]time.Duration
	// bodySize is the recent payload size of held deliveries (see
	// roomLocked).
	bodySize int
}

// roundState is what asks the claim loop for its next claim round besides
// a notice and the poll; Dispatcher.mu guards it.
type roundState struct {
	// retryAt is the earliest time a retry this dispatcher recorded is due.
	retryAt time.Time
	// behind holds the webhooks the last claim round left out because
	// their windows were more than three-quarters full (see claimAt): they
	// may have due deliveries, worth a claim once their windows drain.
	// starved is set when a round stopped for want of room at all.
	// wantClaim asks the claim loop, woken by a freed slot, for a round.
	behind    map[int64]bool
	starved   bool
	wantClaim bool
}

// Notify wakes the dispatcher to look for due deliveries now rather than at
// its next poll. It never blocks; call it after committing new deliveries.
func (d *Dispatcher) Notify() {
	d.notice.Store(true)
	d.wake()
}

// wake wakes the claim loop, which then sees why: a notice (Notify), a
// freed slot's request for a round (wantClaim) or a recorded retry come
// due (retryAt). Many wakes before the loop looks count as one.
func (d *Dispatcher) wake() {
	select {
	case d.wakeup <- struct{}{}:
	default:
	}
}

// claimLoop claims due deliveries and starts their attempts until ctx is
// done. It wakes on Notify, on its poll timer, when a retry it recorded
// falls due, and when a worker slot frees while deliveries may be waiting.
func (d *Dispatcher) claimLoop(ctx, dbCtx, sendCtx context.Context, attempts *sync.WaitGroup, results chan<- finished) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	// spaced: the timer runs for a wake's round, not a poll. fresh: a
	// notice, a poll or a retry's time asks for the next round, so its
	// claim runs whatever the claim before found (see quietClaimGap).
	spaced, fresh := false, false
	for {
		claim, fromWake := true, false
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			fromWake = spaced
			fresh = fresh || !spaced
		case <-d.wakeup:
			want, retry := d.takeWant(), d.retryDue()
			if d.notice.Swap(false) {
				// A notice claims at once; its round serves a freed slot's
				// request and a retry's time too.
				fresh = true
				break
			}
			claim, fromWake = want || retry, true
			fresh = fresh || retry
		}
		if claim && fromWake {
			// Freed slots wake the loop often; space their claim rounds.
			if wait := minClaimGap - time.Since(last); wait > 0 {
				timer.Reset(wait)
				spaced = true
				continue
			}
		}
		spaced = false
		if claim {
			last = time.Now()
			if fresh {
				d.emptyClaim, fresh = time.Time{}, false
			}
			d.claimRound(ctx, dbCtx, sendCtx, attempts, results)
		}
		timer.Reset(d.nextPoll())
	}
}

// takeWant reports whether a freed slot asked for a claim round, and
// forgets the request.
func (d *Dispatcher) takeWant() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := d.wantClaim
	d.wantClaim = false
	return want
}

// nextPoll returns how long to sleep: the poll interval, or less when a
// recorded retry falls due sooner.
func (d *Dispatcher) nextPoll() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	wait := d.opts.PollInterval
	if !d.retryAt.IsZero() {
		wait = min(wait, max(time.Until(d.retryAt), 0))
	}
	return wait
}

// retryDue reports whether a recorded retry is due, and forgets it if so.
func (d *Dispatcher) retryDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retryAt.IsZero() || time.Now().Before(d.retryAt) {
		return false
	}
	d.retryAt = time.Time{}
	return true
}

// claimRound claims and starts deliveries until none are due or no slot is
// free, and notes what it left behind (see Dispatcher.behind).
func (d *Dispatcher) claimRound(ctx, dbCtx, sendCtx context.Context, attempts *sync.WaitGroup, results chan<- finished) {
	d.mu.Lock()
	if !d.retryAt.IsZero() && !time.Now().Before(d.retryAt) {
		d.retryAt = time.Time{}
	}
	d.mu.Unlock()
	for ctx.Err() == nil {
		free, busy, exclude, before, skip := d.capacity()
		if free == 0 {
			if d.starve() {
				return
			}
			continue
		}
		claimed, err := d.claim(dbCtx, free, busy, exclude, before, skip)
		if !d.claimFail.Step(dbCtx, err) {
			return // the next poll tries again
		}
		var at []time.Time
		if len(claimed) == 0 {
			// Nothing due before the held deliveries: read those next.
			claimed, at = d.loadHeld(dbCtx)
		}
		if len(claimed) == 0 {
			d.leaveBehind(exclude)
			return
		}
		d.startOrQueue(sendCtx, claimed, at, attempts, results)
	}
}

// starve notes that a claim round stops for want of room, and reports
// true, unless attempts finished since capacity looked: they did not know
// to ask for a round, so the round goes on.
func (d *Dispatcher) starve() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.roomLocked() > 0 {
		return false
	}
	d.starved = true
	return true
}

// claim claims due deliveries for a claim round, within what capacity
// returned; it claims nothing while the webhooks left out (skip) hold
// deliveries and the last such claim found nothing (see quietClaimGap).
func (d *Dispatcher) claim(ctx context.Context, free int, busy map[int64]int, exclude []int64, before map[int64]time.Time, skip []int64) ([]store.Claimed, error) {
	if len(skip) > 0 && time.Since(d.emptyClaim) < min(quietClaimGap, d.opts.PollInterval) {
		return nil, nil
	}
	claimed, err := d.st.Claim(ctx, store.ClaimRequest{
		Owner:      d.opts.Owner,
		Limit:      min(free, maxClaim),
		Lease:      d.opts.Lease,
		Exclude:    append(exclude, skip...),
		PerWebhook: d.opts.PerWebhook * prefetch,
		Busy:       busy,
		Before:     before,
	})
	if err != nil {
		return nil, err
	}
	if len(claimed) == 0 && len(skip) > 0 {
		d.emptyClaim = time.Now()
	}
	return claimed, nil
}

// leaveBehind ends a claim round that found nothing to claim or read: it
// notes the webhooks the round left out for their full windows (behind),
// and asks for another round at once for those whose windows drained while
// the claim ran, since the attempts that drained them did not know to ask.
func (d *Dispatcher) leaveBehind(exclude []int64) {
	d.mu.Lock()
	d.starved = false
	clear(d.behind)
	drained := false
	for _, id := range exclude {
		if !d.fullLocked(id) {
			drained = true
			continue
		}
		d.behind[id] = true
	}
	if drained {
		d.wantClaim = true
	}
	d.mu.Unlock()
	if drained {
		d.wake()
	}
}

// startOrQueue starts the attempts of claimed deliveries whose webhooks
// have a free slot, and queues the others, as claimed now or, for held
// deliveries read, when their leases began (at).
func (d *Dispatcher) startOrQueue(sendCtx context.Context, claimed []store.Claimed, at []time.Time, attempts *sync.WaitGroup, results chan<- finished) {
	d.mu.Lock()
	d.noteBodiesLocked(claimed)
	d.forgetClaimedLocked(claimed)
	d.mu.Unlock()
	now := time.Now()
	for i := range claimed {
		c := &claimed[i]
		if d.acquire(c) {
			attempts.Add(1)
			go d.attempt(sendCtx, c, attempts, results)
			continue
		}
		// Its webhook is at its limit: it starts when a slot frees.
		qc := queuedDelivery{c: c, at: now}
		if at != nil {
			qc.at = at[i]
		}
		d.mu.Lock()
		d.queue[c.WebhookID] = append(d.queue[c.WebhookID], qc)
		d.queued++
		d.mu.Unlock()
	}
}

// quietClaimGap is how long after a claim that found nothing the next one
// waits while held deliveries are being read, unless a notice (a write
// that left deliveries to be claimed, a re-fire), a poll or a retry's time
// starts the round: rounds then come as fast as windows drain (a hundred a
// second in a burst), and each would ask the store again for what it just
// said it does not have.
const quietClaimGap = 50 * time.Millisecond

// claimAt is how full a webhook's window of in-flight and queued
// deliveries may be for a claim to include it: a quarter free, so that a
// claim brings a batch, early enough that the queue does not run dry while
// the claim runs.
func claimAt(window int) int { return window * 3 / 4 }

// capacity returns how many more deliveries may be claimed (in flight and
// queued together), the deliveries each webhook has in flight or queued,
// the webhooks not to claim for now (those with less than a quarter of
// their window free, so that a claim brings a webhook a batch, not one
// delivery), and for the webhooks with held deliveries either the time
// before which a claim looks (store.ClaimRequest.Before) or, in skip, that
// the claim leaves them out.
//
// A claim looks for what is due before a webhook's held deliveries (a
// retry come due, a re-fire, another relay's write) at most once per poll
// interval, as a poll would: in between, their held deliveries are read
// instead. Looking every round walked the webhook's sent deliveries in the
// index again and again while a burst drained, for nothing.
func (d *Dispatcher) capacity() (free int, busy map[int64]int, exclude []int64, before map[int64]time.Time, skip []int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	free, busy, exclude = d.capacityLocked()
	if len(d.held) == 0 {
		return free, busy, exclude, nil, nil
	}
	now := time.Now()
	if now.Sub(d.heldLooked) < d.opts.PollInterval {
		for id := range d.held {
			skip = append(skip, id)
		}
		return free, busy, exclude, nil, skip
	}
	d.heldLooked = now
	before = make(map[int64]time.Time, len(d.held))
	for id, batches := range d.held {
		before[id] = batches[0].due
	}
	return free, busy, exclude, before, nil
}

// capacityLocked is capacity with d.mu held, without the bounds.
func (d *Dispatcher) capacityLocked() (free int, busy map[int64]int, exclude []int64) {
	busy = make(map[int64]int, len(d.perHook)+len(d.queue)+len(d.pace))
	for id, n := range d.perHook {
		busy[id] += n
	}
	for id, q := range d.queue {
		busy[id] += len(q)
	}
	for id, n := range busy {
		if n > claimAt(d.windowLocked(id)) {
			exclude = append(exclude, id)
		}
	}
	// A claim or a store write gives each webhook the largest window less
	// what is busy: a slow webhook's smaller window counts as busy too.
	most := d.opts.PerWebhook * prefetch
	for id := range d.pace {
		if w := d.windowLocked(id); w < most {
			busy[id] += most - w
		}
	}
	return d.roomLocked(), busy, exclude
}

// roomLocked is how many more deliveries may be claimed, in flight and queued
// together. d.mu must be held.
func (d *Dispatcher) roomLocked() int {
	most := max(d.opts.Workers*prefetch, minTaken)
	if d.bodySize > 0 {
		most = min(most, max(takenBytes/d.bodySize, d.opts.Workers))
	}
	return most - d.inflight - d.queued
}

// takenBytes bounds the payloads the dispatcher holds in flight and queued
// together, at the recent payload size: minTaken deliveries of a few
// hundred bytes each are well within it, but with large payloads fewer
// deliveries are taken (never fewer than Workers).
const takenBytes = 24 << 20

// noteBodiesLocked folds the payload sizes of newly held deliveries into the
// recent payload size (a moving average). d.mu must be held.
func (d *Dispatcher) noteBodiesLocked(claims []store.Claimed) {
	for i := range claims {
		n := max(len(claims[i].Body), 1)
		if d.bodySize == 0 {
			d.bodySize = n
			continue
		}
		d.bodySize += (n - d.bodySize) / averageWeight
	}
}

// fullLocked reports whether webhook's window is too full for a claim to
// include it (see claimAt). d.mu must be held.
func (d *Dispatcher) fullLocked(webhook int64) bool {
	return d.perHook[webhook]+len(d.queue[webhook]) > claimAt(d.windowLocked(webhook))
}

// aheadFor is how much of a webhook's traffic its window holds: far less
// than a queued delivery may wait before its lease is too short to send it
// (dequeueLocked), so that what is held ahead is sent, not given back and claimed
// again.
const aheadFor = 5 * time.Second

// windowLocked is how many deliveries webhook may have in flight and
// queued together: what its slots send in aheadFor at the pace its recent
// attempts took, between two per slot and prefetch per slot. d.mu must be
// held.
func (d *Dispatcher) windowLocked(webhook int64) int {
	most := d.opts.PerWebhook * prefetch
	took, ok := d.pace[webhook]
	if !ok || took <= 0 {
		return most
	}
	w := float64(d.opts.PerWebhook) * float64(aheadFor) / float64(took)
	return int(min(max(w, float64(2*d.opts.PerWebhook)), float64(most)))
}

// notePaceLocked folds an attempt's duration into its webhook's recent pace (a
// moving average). d.mu must be held.
func (d *Dispatcher) notePaceLocked(webhook int64, took time.Duration) {
	if took <= 0 {
		return
	}
	if old, ok := d.pace[webhook]; ok {
		took = old - old/averageWeight + took/averageWeight
	}
	d.pace[webhook] = took
}

// averageWeight is the inverse weight of the latest sample in the moving
// averages of a webhook's pace and of the payload size.
const averageWeight = 8
