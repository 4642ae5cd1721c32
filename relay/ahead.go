// Sending ahead: deliveries the ingester offers before its store write
// stores them (Ahead), sent at once, whose results wait in memory until
// the write has stored them (Stored).

package relay

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// aheadState is the deliveries taken ahead of their store write that it
// has not stored yet; Dispatcher.mu guards it.
type aheadState struct {
	ahead map[uuid.UUID]*aheadDelivery
	// aheadMoved, when not nil, is closed (and cleared) as soon as a
	// delivery taken ahead has its result or is let go (AwaitAhead).
	aheadMoved chan struct{}
	// hold is the wait of an Ahead for room for a webhook whose
	// deliveries wait for workers (see waitRoomLocked); holdOff is when
	// Ahead may wait again after a wait in which the webhook finished no
	// attempt.
	hold    *holdWait
	holdOff time.Time
	// heldBack is how long Ahead waited for room in all.
	heldBack time.Duration
}

// holdWait is an Ahead waiting for room ahead for a webhook.
type holdWait struct {
	hook int64
	// full says the webhook's window is full; if not, the wait is for its
	// queue's oldest to be recent (waitsForWorkersLocked).
	full bool
	// room is closed once the webhook has room again (roomAheadLocked),
	// or the dispatcher stops taking deliveries ahead.
	room chan struct{}
	// finished counts the attempts that finished meanwhile: the
	// webhook's, and any while it has none in flight (it waits for a
	// worker, which any finished attempt brings nearer).
	finished int
}

// aheadDelivery is one delivery taken ahead.
type aheadDelivery struct {
	// lsn is its source transaction's commit position: the write that
	// moves the slot's position past it has stored it.
	lsn event.LSN
	at  time.Time
	// started is when its attempt started; zero while it is queued.
	started time.Time
	hook    int64
	// result is its attempt's result once the attempt has finished,
	// recorded once the delivery is stored, unless the write stored it
	// with the delivery (stored).
	result *finished
	stored bool
	// letGo says the dispatcher gave it up before any write was known to
	// store it (it waited in the queue too long, or the dispatcher
	// stopped): the next writes leave it out (Finished) and decide it as
	// any other, but one already in flight may store it leased to this
	// sender, so it is given back once stored (Stored).
	letGo bool
}

// AheadLease is the owner and the lease under which the deliveries this
// dispatcher takes ahead are stored. It implements ingest.Handoff.
func (d *Dispatcher) AheadLease() (string, time.Duration) {
	return d.opts.Owner, d.opts.Lease
}

// Ahead takes a delivery that is not stored yet, of the source transaction
// committed at lsn, and starts its attempt at once if its webhook has a
// free slot, or queues it in memory for the next slot to free otherwise,
// within the webhook's window and maxQueuedAhead, as a claimed delivery
// waits. It refuses one whose webhook has deliveries held as ids in the
// store, so that it does not overtake them; those it queues wait behind
// any already queued. A delivery queued ahead costs the store what one
// sent at once costs, where one refused is stored, read and updated: once
// the relay falls behind, this keeps each delivery as cheap as it was, so
// that it can catch up. When the relay as a whole is short of workers,
// and a webhook's deliveries wait for one (the oldest queued for
// holdQueued, or its window full, or a claim round left it out for a full
// window), Ahead waits for room rather than queue more or refuse, which
// holds the feed back (waitRoomLocked). It also reports true, without a
// second attempt, for a delivery it has taken already and not seen
// stored: the ingester reads a source transaction again after a store
// write failed, and decides the same deliveries under the same ids. It
// implements ingest.Handoff.
//
// inParts says that c's source transaction is stored in parts as it is
// read (a large one): the feed is taken up by it until its commit anyway,
// so Ahead also waits for room for a webhook whose own slots are all busy,
// as long as its recent attempts are quick (see waitRoomLocked).
func (d *Dispatcher) Ahead(c *store.Claimed, lsn event.LSN, inParts bool) bool {
	d.mu.Lock()
	if a, ok := d.ahead[c.ID]; ok {
		d.mu.Unlock()
		return !a.letGo
	}
	hook := c.WebhookID
	var run *runState
	var now time.Time
	var start bool
	for {
		run = d.run
		if run == nil || run.draining || len(d.held[hook]) > 0 {
			d.mu.Unlock()
			return false
		}
		now = time.Now()
		start = len(d.queue[hook]) == 0 && d.inflight < d.opts.Workers && d.perHook[hook] < d.opts.PerWebhook
		if start {
			break
		}
		// A webhook a claim round left behind (its window too full for the
		// round to look for its due deliveries) is waited for as a full one:
		// its window drains first, then the round looks.
		full := d.behind[hook] || d.aheadFullLocked(hook)
		if !full && !d.waitsForWorkersLocked(hook, now) {
			break
		}
		if !d.waitRoomLocked(c, now, full, inParts) {
			if full {
				d.mu.Unlock()
				return false
			}
			break // queued: there is room in its window
		}
	}
	if d.ahead == nil {
		d.ahead = map[uuid.UUID]*aheadDelivery{}
	}
	a := &aheadDelivery{lsn: lsn, at: now, hook: hook}
	d.ahead[c.ID] = a
	if !start {
		// It starts when a slot frees (free), or is given back as any
		// queued delivery is if it waited too long or the relay stops,
		// and let go (Finished): stored already, it is claimed again; not
		// yet, its write stores it for any relay to claim.
		d.queue[hook] = append(d.queue[hook], queuedDelivery{c: c, at: now})
		d.queued++
		d.mu.Unlock()
		return true
	}
	a.started = now
	d.takeSlotLocked(c)
	run.attempts.Add(1)
	d.mu.Unlock()
	go d.attempt(run.sendCtx, c, run.attempts, run.results)
	return true
}

// aheadFullLocked reports whether webhook's window, or the queues, have no
// room for another delivery ahead. d.mu must be held.
func (d *Dispatcher) aheadFullLocked(webhook int64) bool {
	return d.perHook[webhook]+len(d.queue[webhook]) >= d.windowLocked(webhook) || d.queued >= maxQueuedAhead
}

// waitRoomLocked waits for room ahead for c's webhook, whose window is
// full or whose queue's oldest waited too long for a worker, and reports
// whether it may have some now. It waits only when the deliveries wait
// for workers the relay as a whole is short of, usually of CPU: storing
// them then would cost the relay and the database about three times what
// sending them from the queue costs, just when there is no margin, and
// keep the relay behind once it fell behind. Holding the ingester back
// instead leaves the source transactions in the slot, which keeps them
// anyway until they are stored, until the queue drains.
//
// It does not wait, and reports false (Ahead refuses the delivery to a
// full window, which is stored and sent from the store, or queues it),
// when the webhook is what holds its deliveries up: all its own slots are
// busy (PerWebhook), or its recent attempts are slow; nor while other
// relays share the store, which may have workers to spare for what this
// one stores. For a source transaction stored in parts (inParts), whose
// reading takes the feed up until its commit whatever is done with its
// deliveries, a webhook whose slots are all busy is waited for as long as
// its recent attempts are quick (quickAttempt) or not known yet: the feed
// then reads the transaction at the pace its receivers take it, within
// holdBehind of its commit, and each delivery costs the store one write
// with its result, where storing it to send it later costs a write, a
// read and an update. A wait ends once the webhook finished no attempt for
// holdPatience, or no attempt at all finished while it had none in
// flight (its attempts hang, or all the workers' do: the relay then waits
// for no webhook for holdOffFor), and once c's source transaction
// committed holdBehind ago, which bounds the slot's lag that holding
// adds. full says the webhook's window is full; if not, its queue's
// oldest waited too long (waitsForWorkersLocked). d.mu must be held; it
// is released while waiting.
func (d *Dispatcher) waitRoomLocked(c *store.Claimed, now time.Time, full, inParts bool) bool {
	hook := c.WebhookID
	if d.hold != nil || now.Before(d.holdOff) || d.peers.Load() > 0 || now.Sub(c.CommittedAt) >= holdBehind {
		return false
	}
	took, known := d.pace[hook]
	if known && took >= slowAttempt {
		return false
	}
	if d.perHook[hook] >= d.opts.PerWebhook && (!inParts || known && took >= quickAttempt) {
		return false
	}
	h := &holdWait{hook: hook, room: make(chan struct{}), full: full}
	d.hold = h
	timer := time.NewTimer(holdPatience)
	defer func(began time.Time) {
		timer.Stop()
		d.heldBack += time.Since(began) // d.mu is held again
	}(now)
	for {
		seen := h.finished
		d.mu.Unlock()
		select {
		case <-h.room:
			d.mu.Lock()
			return true // d.hold cleared by who closed it
		case <-timer.C:
		}
		d.mu.Lock()
		now = time.Now()
		if d.hold != h {
			return true // room came with the timer
		}
		if h.finished == seen {
			d.hold = nil
			d.holdOff = now.Add(holdOffFor)
			return false
		}
		if now.Sub(c.CommittedAt) >= holdBehind {
			d.hold = nil
			return false
		}
		timer.Reset(holdPatience)
	}
}

// waitsForWorkersLocked reports whether webhook's deliveries wait in its
// queue for want of workers, the oldest for holdQueued already, while its
// own slots are not all busy: the relay as a whole is behind. Ahead then
// holds the feed back before the window is full (waitRoomLocked), so that
// a delivery is read about when a worker can take it: one that waits in a
// queue for seconds is stored before its first attempt's result, by a
// write that cannot wait that long, and updated with it later, which
// costs the relay and the database more per delivery just when they have
// no margin. d.mu must be held.
func (d *Dispatcher) waitsForWorkersLocked(webhook int64, now time.Time) bool {
	q := d.queue[webhook]
	return d.inflight >= d.opts.Workers && len(q) > 1 && now.Sub(q[0].at) >= holdQueued
}

// quickAttempt bounds the recent attempts of a webhook whose slots are all
// busy for which Ahead waits for room for a source transaction stored in
// parts (waitRoomLocked): its slots then send at least PerWebhook
// deliveries every 10 ms (1,600 a second with the default 16).
const quickAttempt = 10 * time.Millisecond

// holdQueued is how long a webhook's oldest queued delivery waits for a
// worker before Ahead holds the feed back (waitsForWorkersLocked): well
// within what a write waits for first attempts (AwaitAhead).
const holdQueued = 100 * time.Millisecond

// holdPatience is how long Ahead waits for a webhook to finish an attempt
// while it waits for room (waitRoomLocked); holdOffFor is how long it then
// waits for none, so that webhooks whose attempts hang slow the feed down
// by a tenth at most, until their pace shows them slow.
const (
	holdPatience = 100 * time.Millisecond
	holdOffFor   = 10 * holdPatience
)

// holdBehind bounds how far behind its source commits the relay holds the
// feed back rather than store deliveries it has no room for. Within it, the
// platform's server keeps less for the relay than storing would: the WAL
// of the source transactions, which the slot keeps until they are stored
// anyway, where storing adds a delivery row, its keys and their WAL for
// every webhook. Past it, deliveries are stored and the slot is confirmed
// past them, so that what the slot holds stays within seconds of traffic
// whatever the receivers do. It is measured from the commit time the
// server recorded, by the relay's clock: a clock a second off the
// server's moves the bound by a second.
const holdBehind = 10 * time.Second

// roomAheadLocked wakes an Ahead waiting for room (waitRoomLocked): for a
// full window, once it is a quarter empty, when a claim round would
// include the webhook again (fullLocked); for a queue whose oldest waited
// too long for a worker, once its oldest waited half as long; so that a
// wait lets many deliveries through rather than one. It wakes it too when
// the dispatcher stops taking deliveries ahead. finished is the webhook
// whose attempt just finished, if any. d.mu must be held.
func (d *Dispatcher) roomAheadLocked(finished int64, stopping bool) {
	h := d.hold
	if h == nil {
		return
	}
	if finished == h.hook || d.perHook[h.hook] == 0 {
		h.finished++
	}
	if !stopping {
		if h.full && (d.fullLocked(h.hook) || d.queued > claimAt(maxQueuedAhead)) {
			return
		}
		if q := d.queue[h.hook]; !h.full && len(q) > 1 && time.Since(q[0].at) >= holdQueued/2 {
			return
		}
	}
	close(h.room)
	d.hold = nil
}

// maxQueuedAhead bounds the deliveries queued, ahead or claimed, beyond
// which Ahead queues no more. It is larger than the room claims have
// (roomLocked): a delivery taken ahead shares its payload with the
// other deliveries of its event, so it costs the queue a few hundred
// bytes, and a relay that stalls for a second in a wide fan-out (ten
// thousand deliveries) must be able to queue what its feed reads next
// rather than store it to read it back (see Ahead).
const maxQueuedAhead = 32 << 10

// Stored learns that the store write that moved the slot's position to lsn
// has stored every delivery taken ahead of the source transactions
// committed before it: the results of their finished attempts are
// recorded now (by the record loop, or here once the dispatcher is
// stopping), and those still running are recorded when they finish.
// Deliveries taken longer ago than a lease lasts are forgotten: their
// source transactions are streamed again, by this relay or another, and
// stored leased to whoever decides them then. It implements
// ingest.Handoff.
func (d *Dispatcher) Stored(lsn event.LSN) {
	d.mu.Lock()
	var s settled
	old := time.Now().Add(-d.opts.Lease)
	for id, a := range d.ahead {
		switch {
		case a.lsn < lsn:
			s.settleLocked(d, id, a)
		case a.at.Before(old):
			delete(d.ahead, id)
		}
	}
	d.settle(s)
}

// PartStored learns that a part of a source transaction (one stored in
// parts as it is read) has stored the deliveries of ids, which it took
// ahead: they are settled as Stored settles those of a whole one, without
// waiting for the transaction's commit. It implements ingest.Handoff.
func (d *Dispatcher) PartStored(ids []uuid.UUID) {
	d.mu.Lock()
	var s settled
	for _, id := range ids {
		if a, ok := d.ahead[id]; ok {
			s.settleLocked(d, id, a)
		}
	}
	d.settle(s)
}

// settled is what a store write settled of the deliveries taken ahead
// (Stored, PartStored): the results to record (done), those it stored with
// their deliveries (withWrite), and those let go before it, which it
// stored leased to this dispatcher (letGo).
type settled struct {
	done, withWrite []finished
	letGo           []uuid.UUID
}

// settleLocked settles a, the delivery id taken ahead, which a write has
// stored, and forgets it. d.mu must be held.
func (s *settled) settleLocked(d *Dispatcher, id uuid.UUID, a *aheadDelivery) {
	switch {
	case a.letGo:
		s.letGo = append(s.letGo, id)
	case a.stored:
		s.withWrite = append(s.withWrite, *a.result)
	case a.result != nil:
		s.done = append(s.done, *a.result)
	}
	delete(d.ahead, id)
}

// settle acts on what a write settled (see settled): it gives back those
// let go, and records the results. d.mu must be held; settle releases it.
func (d *Dispatcher) settle(s settled) {
	run, done := d.run, s.done
	if len(s.letGo) > 0 {
		d.mu.Unlock()
		d.giveBackStored(run, s.letGo)
		d.mu.Lock()
	}
	if len(s.withWrite) > 0 && run != nil {
		d.mu.Unlock()
		d.recorded(run.dbCtx, s.withWrite, false, nil)
		d.mu.Lock()
	}
	if len(done) == 0 {
		d.mu.Unlock()
		return
	}
	if run == nil || run.draining {
		// Stopping (a feed's last write as the relay stops): its record
		// loop may be gone, so record them here, within the grace the
		// drain gives the store; what cannot be recorded is sent again,
		// under its id, once its lease expires.
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		defer cancel()
		d.flush(ctx, done)
		return
	}
	run.attempts.Add(1)
	d.mu.Unlock()
	go func() {
		defer run.attempts.Done()
		for _, f := range done {
			run.results <- f
		}
	}()
}

// Finished reports whether the dispatcher still holds a delivery it took
// ahead (kept): one it gave back before its store write (it waited in the
// queue for longer than a lease allows, or the dispatcher is stopping),
// or forgot (taken longer ago than a lease lasts), is left to the write
// to decide as any other. For one kept whose attempt is over, it returns
// the result (done) for the store write to store the delivery as the
// attempt left it (store.Ahead.Result): a first attempt, not aborted,
// that asked for no pause (those are recorded once stored). Once the
// write has stored it (Stored), it is not recorded again. It implements
// ingest.Handoff.
func (d *Dispatcher) Finished(id uuid.UUID) (r store.AttemptResult, done, kept bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.ahead[id]
	if a == nil || a.letGo {
		return store.AttemptResult{}, false, false
	}
	if a.result == nil {
		return store.AttemptResult{}, false, true
	}
	r = a.result.result
	if a.result.aborted || r.Aborted || r.Attempt != 1 || r.PauseWebhook > 0 {
		return store.AttemptResult{}, false, true
	}
	a.stored = true
	return r, true, true
}

// AwaitAhead waits until every delivery of ids that the dispatcher holds
// ahead has its attempt's result (or was let go, or its attempt has run
// for slowAttempt already, or it is queued for a webhook whose recent
// attempts are not quicker than that), until hurry is closed, or until
// ctx is done. It implements ingest.Handoff.
func (d *Dispatcher) AwaitAhead(ctx context.Context, ids []uuid.UUID, hurry <-chan struct{}) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	i := 0 // ids before i are over or slow: either, once so, stays so
	for {
		d.mu.Lock()
		now := time.Now()
		var slowAt time.Time
		for ; i < len(ids); i++ {
			a := d.ahead[ids[i]]
			if a == nil || a.result != nil || a.letGo {
				continue
			}
			if a.started.IsZero() {
				// Queued: worth waiting for behind a webhook whose attempts
				// are quick, not behind a slow or hanging one.
				if took, ok := d.pace[a.hook]; ok && took < slowAttempt {
					break
				}
				continue
			}
			if slowAt = a.started.Add(slowAttempt); slowAt.After(now) {
				break
			}
			slowAt = time.Time{}
		}
		if i == len(ids) {
			d.mu.Unlock()
			return
		}
		if d.aheadMoved == nil {
			d.aheadMoved = make(chan struct{})
		}
		moved := d.aheadMoved
		d.mu.Unlock()
		var slow <-chan time.Time
		if !slowAt.IsZero() {
			if timer == nil {
				timer = time.NewTimer(slowAt.Sub(now))
			} else {
				timer.Reset(slowAt.Sub(now))
			}
			slow = timer.C
		}
		select {
		case <-moved:
		case <-slow:
		case <-hurry:
			return
		case <-ctx.Done():
			return
		}
	}
}

// slowAttempt is how long a write waits for an attempt that has started
// (AwaitAhead): one that takes longer is a slow or hanging receiver's,
// whose delivery is stored before the result and updated with it, rather
// than keeping its write, and every write behind it, from the store.
const slowAttempt = 100 * time.Millisecond

// letGoLocked gives up a delivery that waits in a queue and reports
// whether the caller gives it back now: one taken ahead and not known to
// be stored is not, for no write may have stored it yet, and a write that
// decides it later may lease it to this dispatcher again, whose lease a
// late give-back would take from the attempt it then starts. It is given
// back once a write stored it taken ahead (Stored; see
// aheadDelivery.letGo). d.mu must be held.
func (d *Dispatcher) letGoLocked(id uuid.UUID) (giveBack bool) {
	a := d.ahead[id]
	if a == nil {
		return true
	}
	a.letGo = true
	d.aheadMovedLocked()
	return false
}

// giveBackStored gives back deliveries let go before a write that was
// already in flight stored them leased to this sender: while running,
// within the run's store context; once stopped, within the grace the
// drain gives the store, as a feed's last write comes after the drain.
func (d *Dispatcher) giveBackStored(run *runState, ids []uuid.UUID) {
	if run != nil && !run.draining {
		d.giveBack(run.dbCtx, ids)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
	defer cancel()
	d.giveBack(ctx, ids)
}

// aheadMovedLocked wakes AwaitAhead. d.mu must be held.
func (d *Dispatcher) aheadMovedLocked() {
	if d.aheadMoved != nil {
		close(d.aheadMoved)
		d.aheadMoved = nil
	}
}

// keptAhead keeps the result of an attempt whose delivery was taken ahead
// and is not stored yet, to be recorded once it is (Stored) or stored with
// it (Finished), and reports whether it did. The attempt's own goroutine
// keeps it at once: the write waiting for it (AwaitAhead) goes on without
// a trip through the record loop and its linger, and the record loop is
// not woken for a result it would only hand back here.
func (d *Dispatcher) keptAhead(f *finished) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.keepLocked(f) {
		return false
	}
	d.aheadMovedLocked()
	return true
}

// keepLocked keeps a copy of f with its delivery if that was taken ahead
// and is not stored yet, and reports whether it did. d.mu must be held.
func (d *Dispatcher) keepLocked(f *finished) bool {
	a := d.ahead[f.result.DeliveryID]
	if a == nil {
		return false
	}
	kept := *f
	a.result = &kept
	return true
}

// keepAhead takes the results of attempts whose deliveries were taken
// ahead and are not stored yet out of batch, to be recorded once they are
// (Stored), and returns the rest.
func (d *Dispatcher) keepAhead(batch []finished) []finished {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ahead) == 0 {
		return batch
	}
	rest := batch[:0]
	for i := range batch {
		if !d.keepLocked(&batch[i]) {
			rest = append(rest, batch[i])
		}
	}
	if len(rest) < len(batch) {
		d.aheadMovedLocked()
	}
	return rest
}
