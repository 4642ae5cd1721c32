// The hand-off: deliveries leased to the dispatcher as the ingester stores
// them (Reserve, Handoff), and the held ones among them, read when their
// webhook's window has room (loadHeld).

package relay

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/smartmaintenance/relay/store"
)

// heldState is the deliveries leased to the Dispatcher as they were
// stored but not read yet (store.Leased.Held); Dispatcher.mu guards it.
type heldState struct {
	// held holds them webhook by webhook, oldest first; nHeld counts them
	// all. A claim round reads a webhook's next ones (store.LoadHeld) once
	// its window has room for them.
	held  map[int64][]heldBatch
	nHeld int
	// heldLooked is when a claim last looked for deliveries due before a
	// webhook's held ones (see capacity).
	heldLooked time.Time
}

// heldBatch is some held deliveries of one webhook from one store
// transaction.
type heldBatch struct {
	ids []uuid.UUID
	// due is their next attempt time, by the database's clock.
	due time.Time
	// at is when their leases began at the latest.
	at time.Time
}

// Reserve says how many new deliveries the dispatcher can take at once, as
// a lease for store.Writer.Write, given what the open store
// transaction has leased to it already (open; nil for none): its free
// capacity within each webhook's window, ready to send, and beyond that up
// to maxHeld held as ids, within each webhook's hold window. A webhook
// that has held deliveries gets no new ready ones, so that its deliveries
// are sent in the order they were stored. It returns false when the
// dispatcher is not running. It implements ingest.Handoff with Committed.
func (d *Dispatcher) Reserve(open *store.Leased) (store.WriteLease, bool) {
	if open == nil {
		open = &store.Leased{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run == nil || d.run.draining {
		return store.WriteLease{}, false
	}
	limit := min(d.roomLocked()-len(open.Ready), maxClaim)
	hold := maxHeld - d.nHeld - len(open.Held)
	if d.peers.Load() > 0 {
		hold = 0 // see holdWindowLocked
	}
	if limit <= 0 && hold <= 0 {
		return store.WriteLease{}, false
	}
	limit = max(limit, 0)
	most := d.opts.PerWebhook * prefetch
	lease := store.WriteLease{
		Owner:    d.opts.Owner,
		Lease:    d.opts.Lease,
		Limit:    limit,
		Room:     min(most, limit),
		Webhooks: map[int64]store.WebhookLease{},
	}
	if hold > 0 {
		lease.HeldLimit = hold
		lease.Hold = max(maxHeld-lease.Room, 0)
	}
	// The webhooks the dispatcher or the open transaction has deliveries
	// of, with how many the open transaction leased ready and held. They
	// are counted again for each write of the transaction: a few per
	// group, since a group is stored once its deliveries reach
	// ingest.Options.GroupDeliveries.
	hooks := map[int64][2]int{}
	for id := range d.perHook {
		hooks[id] = [2]int{}
	}
	for id := range d.queue {
		hooks[id] = [2]int{}
	}
	for id := range d.pace {
		hooks[id] = [2]int{}
	}
	for id := range d.held {
		hooks[id] = [2]int{}
	}
	for i := range open.Ready {
		n := hooks[open.Ready[i].WebhookID]
		n[0]++
		hooks[open.Ready[i].WebhookID] = n
	}
	for i := range open.Held {
		n := hooks[open.Held[i].WebhookID]
		n[1]++
		hooks[open.Held[i].WebhookID] = n
	}
	for id, n := range hooks {
		ready, held := n[0], n[1]
		ahead := d.perHook[id] + len(d.queue[id]) + ready
		held += d.heldOfLocked(id)
		window := d.windowLocked(id)
		room := max(window-ahead, 0)
		if held > 0 {
			room = 0 // behind the held ones
		}
		lease.Webhooks[id] = store.WebhookLease{
			Room: min(room, lease.Room),
			Hold: max(d.holdWindowLocked(id)-ahead-held-room, 0),
		}
	}
	return lease, true
}

// maxHeld is how many deliveries the dispatcher holds as ids at most:
// 16 bytes each (up to twice that while their batches grow), a few MB,
// against 16,384 deliveries with payloads (minTaken).
const maxHeld = 100_000

// Committed takes what a committed store transaction leased to this
// dispatcher (see Handoff), and wakes the claim loop when the transaction
// created deliveries beyond those: they are due in the store. It
// implements ingest.Handoff with Reserve.
func (d *Dispatcher) Committed(deliveries int64, leased store.Leased) {
	d.forgetLetGo(leased)
	d.Handoff(leased)
	if deliveries > int64(leased.Len()+leased.Ahead) {
		d.Notify()
	}
}

// forgetLetGo forgets the deliveries taken ahead and let go that a write
// decided as any other and leased to this dispatcher: they are its own
// again (Handoff), and must not be given back once their write is known
// to be stored (Stored), which would take the lease from an attempt in
// flight. Claims forget those they take the same way (startOrQueue).
func (d *Dispatcher) forgetLetGo(l store.Leased) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ahead) == 0 {
		return
	}
	d.forgetClaimedLocked(l.Ready)
	for _, h := range l.Held {
		delete(d.ahead, h.ID)
	}
}

// forgetClaimedLocked forgets, among the deliveries taken ahead, those
// this dispatcher now holds as claimed (see forgetLetGo). d.mu must be
// held.
func (d *Dispatcher) forgetClaimedLocked(claimed []store.Claimed) {
	if len(d.ahead) == 0 {
		return
	}
	for i := range claimed {
		delete(d.ahead, claimed[i].ID)
	}
}

// holdFor is how much of a webhook's traffic it may have held at most, at
// the pace of its recent attempts: far less than a held delivery may wait
// before its lease is too short to send it (staleAfter), so that what is
// held is sent, not given back.
const holdFor = 15 * time.Second

// holdWindowLocked is how many deliveries webhook may have in flight,
// queued and held together. A webhook whose window is smaller than the
// largest (a slow one) holds nothing beyond it, and no webhook does while
// other relays share the store: what this one cannot send soon is left
// for claims, by any relay, instead of waiting here. A fast one may hold
// what its slots send in holdFor (or half the time a lease allows, if
// less) at its recent pace, and maxHeld while its pace is not known. d.mu
// must be held.
func (d *Dispatcher) holdWindowLocked(webhook int64) int {
	window := d.windowLocked(webhook)
	if window < d.opts.PerWebhook*prefetch || d.peers.Load() > 0 {
		return window
	}
	took, ok := d.pace[webhook]
	if !ok || took <= 0 {
		return maxHeld
	}
	span := min(holdFor, d.staleAfter()/2)
	w := float64(d.opts.PerWebhook) * float64(span) / float64(took)
	return int(min(max(w, float64(window)), maxHeld))
}

// staleAfter is how long a leased delivery may wait in this dispatcher for
// its attempt: an attempt started later might outlast its lease.
func (d *Dispatcher) staleAfter() time.Duration {
	return d.opts.Lease - d.opts.Timeout - 5*time.Second
}

// heldOfLocked is the number of webhook's held deliveries. d.mu must be held.
func (d *Dispatcher) heldOfLocked(webhook int64) int {
	n := 0
	for _, b := range d.held[webhook] {
		n += len(b.ids)
	}
	return n
}

// Handoff takes deliveries leased to this dispatcher when they were stored
// (see Reserve), once their store transaction has committed: each ready one
// starts at once if its webhook has a free slot, else waits in its queue as
// a claimed one does; held ones wait until their webhook has room for them.
// A dispatcher that has stopped gives them back. The dispatcher owns them
// from then on: the caller must not touch them.
func (d *Dispatcher) Handoff(l store.Leased) {
	if l.Len() == 0 {
		return
	}
	at := l.At
	if at.IsZero() {
		at = time.Now()
	}
	d.mu.Lock()
	run := d.run
	if run == nil || run.draining {
		d.mu.Unlock()
		ids := make([]uuid.UUID, 0, l.Len())
		for i := range l.Ready {
			ids = append(ids, l.Ready[i].ID)
		}
		for _, h := range l.Held {
			ids = append(ids, h.ID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		defer cancel()
		d.giveBack(ctx, ids)
		return
	}
	d.holdLocked(l.Held, l.Due, at)
	d.noteBodiesLocked(l.Ready)
	var start []*store.Claimed
	for i := range l.Ready {
		c := &l.Ready[i]
		if d.inflight < d.opts.Workers && d.perHook[c.WebhookID] < d.opts.PerWebhook {
			d.takeSlotLocked(c)
			run.attempts.Add(1)
			start = append(start, c)
			continue
		}
		d.queue[c.WebhookID] = append(d.queue[c.WebhookID], queuedDelivery{c: c, at: at})
		d.queued++
	}
	want := len(l.Held) > 0
	if want {
		d.wantClaim = true
	}
	d.mu.Unlock()
	if want {
		d.wake()
	}
	for _, c := range start {
		go d.attempt(run.sendCtx, c, run.attempts, run.results)
	}
}

// holdLocked adds held deliveries to their webhooks' batches. d.mu must be held.
func (d *Dispatcher) holdLocked(held []store.Held, due, at time.Time) {
	if len(held) == 0 {
		return
	}
	batch := map[int64]int{} // webhook → its batch of this handoff
	for _, h := range held {
		i, ok := batch[h.WebhookID]
		if !ok {
			i = len(d.held[h.WebhookID])
			batch[h.WebhookID] = i
			d.held[h.WebhookID] = append(d.held[h.WebhookID], heldBatch{due: due, at: at})
		}
		b := &d.held[h.WebhookID][i]
		b.ids = append(b.ids, h.ID)
	}
	d.nHeld += len(held)
}

// dropHeld forgets every held delivery and returns their ids, to be
// given back.
func (d *Dispatcher) dropHeld() []uuid.UUID {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]uuid.UUID, 0, d.nHeld)
	for id, batches := range d.held {
		for _, b := range batches {
			ids = append(ids, b.ids...)
		}
		delete(d.held, id)
	}
	d.nHeld = 0
	return ids
}

// takeHeldLocked takes the next held deliveries of the webhooks whose windows have
// room for them, up to limit in all: those that can still be sent within
// their leases, with when each lease began, and those that waited too long,
// to be given back. d.mu must be held.
func (d *Dispatcher) takeHeldLocked(limit int) (load []uuid.UUID, at []time.Time, stale []uuid.UUID) {
	oldest := time.Now().Add(-d.staleAfter())
	for id, batches := range d.held {
		if len(load) >= limit {
			break
		}
		window := d.windowLocked(id)
		ahead := d.perHook[id] + len(d.queue[id])
		if ahead > claimAt(window) {
			continue
		}
		want := min(window-ahead, limit-len(load))
		for len(batches) > 0 && want > 0 {
			b := &batches[0]
			n := min(want, len(b.ids))
			if b.at.Before(oldest) {
				stale = append(stale, b.ids[:n]...)
			} else {
				load = append(load, b.ids[:n]...)
				for range n {
					at = append(at, b.at)
				}
				want -= n
			}
			b.ids = b.ids[n:]
			d.nHeld -= n
			if len(b.ids) == 0 {
				batches[0] = heldBatch{}
				batches = batches[1:]
			}
		}
		if len(batches) == 0 {
			delete(d.held, id)
		} else {
			d.held[id] = batches
		}
	}
	return load, at, stale
}

// loadHeld reads the next held deliveries of the webhooks that have room
// for them (see takeHeldLocked) and returns them with when their leases began.
// It gives back those that waited too long and those that cannot be read
// as held any more (their webhook was disabled or deleted, or the lease
// is too short to send them), so that they are due for any sender.
func (d *Dispatcher) loadHeld(ctx context.Context) ([]store.Claimed, []time.Time) {
	d.mu.Lock()
	ids, ats, stale := d.takeHeldLocked(min(d.roomLocked(), maxClaim))
	stale = slices.DeleteFunc(stale, func(id uuid.UUID) bool { return d.liveLocked(id, nil) })
	d.mu.Unlock()
	d.giveBack(ctx, stale)
	if len(ids) == 0 {
		return nil, nil
	}
	got, err := d.st.LoadHeld(ctx, d.opts.Owner, ids, d.opts.Timeout+5*time.Second)
	if err != nil {
		d.log.Error("read held deliveries; giving them back", "deliveries", len(ids), "error", err)
		d.giveBack(ctx, ids)
		return nil, nil
	}
	out := make([]time.Time, len(got))
	var lost []uuid.UUID
	j := 0
	for i := range got { // in the order of ids
		for ids[j] != got[i].ID {
			lost = append(lost, ids[j])
			j++
		}
		out[i] = ats[j]
		j++
	}
	d.giveBack(ctx, append(lost, ids[j:]...))
	return got, out
}
