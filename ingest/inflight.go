// Store writes in flight: the write of a group of which every delivery
// went ahead runs on a goroutine of its own while the feed reads on, and
// first waits for those deliveries' first attempts, so that it stores
// them with their results.

package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// inflight is a group's store write running while the feed reads the next
// transactions (see launch). Several may be in flight (up to
// maxInFlight), but they write one at a time and in the feed's order:
// each waits for the one before it (prev) and writes from the position
// that one stored. Every step that touches the store or the position
// otherwise waits for all of them first (join).
type inflight struct {
	done chan struct{}
	// hurry is closed once a step waits for the write (join): until then,
	// the write waits for the first attempts of its deliveries taken
	// ahead, up to resultWait, so that it stores them with their results.
	hurry    chan struct{}
	prev     *inflight
	batch    store.Batch
	aheadIDs []uuid.UUID
	from     event.LSN
	end      event.LSN
	// part, when set, makes the write a part of the source transaction
	// committed at partOf, stored in parts (see mapChunk): it stores the
	// part's events with how far into the transaction they go, and moves
	// no position (end is from).
	part   *store.Part
	partOf event.LSN
	tel    *storeTel
	// Set by the write before done is closed.
	n   int64
	err error
}

// errEarlierWrite fails a write in flight whose predecessor failed: it
// would write from a position that is not stored.
var errEarlierWrite = errors.New("the store write before it failed")

// buffers are the slices a group is mapped into, kept for reuse once a
// write in flight has stored them.
type buffers struct {
	events   []event.Event
	states   []store.StateRow
	ahead    []store.Ahead
	aheadIDs []uuid.UUID
}

// resultWait bounds how long a write in flight waits for the first
// attempts of its deliveries taken ahead before it stores them without
// their results, if no step waits for it first (see inflight.hurry). A
// delivery stored with its attempt's result costs one insert; one stored
// before is updated again once the attempt is over, which cost the store
// more than the insert (docs/PERFORMANCE.md). The wait holds nothing up:
// the feed reads on, and the first step that needs the write ends it.
// Two seconds cover what a wide fan-out queues in a one-second stall.
const resultWait = 2 * time.Second

// maxInFlight bounds the writes in flight: the feed waits for the oldest
// before it launches another. Groups that gather while a write is in
// flight are up to Options.GroupDeliveries (see Full), so at 10,000
// deliveries a second this is a few seconds of them, enough for the
// writes to wait out resultWait without holding up the feed.
const maxInFlight = 32

// maxPartsInFlight bounds the writes in flight when a part is launched: a
// part's write need only run beside the reading of the next chunk, for
// its chunk's first attempts to end meanwhile, and each part in flight
// keeps a chunk's events in memory. With the state database slow or
// stalled, the feed then waits after a few chunks instead of reading the
// transaction into memory.
const maxPartsInFlight = 3

// launch starts the store write of the buffered group, with the position
// past it, and returns at once: the feed reads, maps and sends the next
// transactions ahead while it runs, instead of waiting for a write that
// no first attempt waits for. The write hands over what it stored to the
// sender as soon as it commits; the ingester learns of it at the next
// join. It is for a group with nothing in an open store transaction and
// every delivery taken ahead (Flush decides), so it leases nothing to the
// sender beyond those. The write first waits for those deliveries' first
// attempts (see inflight.hurry), then for the write before it.
//
// With part set, the write is instead the next part of the source
// transaction being read (see mapChunk): its buffered events, without
// the row state, which stays with the open store transaction.
func (in *Ingester) launch(ctx context.Context, part *store.Part) error {
	// Take in the writes that are over, so that their buffers are used
	// again and their rows may be forgotten; wait for the oldest only when
	// too many are not.
	limit := maxInFlight
	if part != nil {
		limit = maxPartsInFlight
	}
	for len(in.flights) > 0 && (in.flights[0].finished() || len(in.flights) >= limit) {
		if err := in.joinOldest(ctx); err != nil {
			return err
		}
	}
	f, err := in.filtering(ctx, in.events)
	if err != nil {
		in.abort(ctx, "store commit failed")
		return err
	}
	var lease store.WriteLease
	if len(in.ahead) > 0 {
		lease.Owner, lease.Lease = in.opts.Handoff.AheadLease()
	}
	fl := &inflight{
		done:     make(chan struct{}),
		hurry:    make(chan struct{}),
		batch:    store.Batch{Events: in.events, Lease: lease, Filtering: f, Ahead: in.ahead, WholeAt: in.whole()},
		aheadIDs: in.aheadIDs,
		from:     in.stored,
		end:      in.end,
		tel:      in.tel.detach(),
	}
	if n := len(in.flights); n > 0 {
		fl.prev = in.flights[n-1]
		fl.from = fl.prev.end
	}
	in.events = in.spare.events[:0]
	in.ahead, in.aheadIDs = in.spare.ahead[:0], in.spare.aheadIDs[:0]
	if part == nil {
		fl.batch.States = in.states
		in.states = in.spare.states[:0]
		in.waiting = false
	} else {
		p := *part
		fl.part, fl.partOf, fl.end = &p, in.tx.CommitLSN, fl.from
	}
	in.spare = buffers{}
	in.flights = append(in.flights, fl)
	go fl.run(ctx, in)
	return nil
}

// run writes the group. What it calls is safe beside the feed's goroutine:
// the store, the sender's hand-off, and the write's own telemetry.
func (fl *inflight) run(ctx context.Context, in *Ingester) {
	defer close(fl.done)
	if len(fl.aheadIDs) > 0 {
		wctx, cancel := context.WithTimeout(ctx, resultWait)
		in.opts.Handoff.AwaitAhead(wctx, fl.aheadIDs, fl.hurry)
		cancel()
	}
	if p := fl.prev; p != nil {
		<-p.done
		fl.prev = nil
		if p.err != nil {
			fl.err = errEarlierWrite
			return
		}
	}
	fl.aheadIDs = keptWhole(in.opts.Handoff, &fl.batch, fl.aheadIDs)
	if fl.part != nil {
		// A part leases what the sender can take now of the deliveries it
		// did not take ahead, as a write on the feed's goroutine would.
		if l, ok := in.opts.Handoff.Reserve(&store.Leased{}); ok {
			fl.batch.Lease = l
		}
	}
	// The feed's end (the relay stops, or its session ends) ends the wait
	// above but not the write: what went ahead is stored, rather than sent
	// again under the same ids by the next session.
	var leased store.Leased
	fl.n, leased, fl.err = fl.write(context.WithoutCancel(ctx), in, fl.batch)
	if fl.err != nil {
		return
	}
	fl.stored(in, leased)
}

// write stores b: a group with the position past it, or a part.
func (fl *inflight) write(ctx context.Context, in *Ingester, b store.Batch) (int64, store.Leased, error) {
	if fl.part != nil {
		return in.st.WritePart(ctx, in.opts.Slot, fl.partOf, *fl.part, b)
	}
	return in.st.WriteCommit(ctx, in.opts.Slot, b, fl.from, fl.end)
}

// stored hands what the write stored to the sender and ends its spans.
func (fl *inflight) stored(in *Ingester, leased store.Leased) {
	in.tel.finish(fl.tel, fl.n, time.Now())
	if fl.n > 0 {
		in.opts.Handoff.Committed(fl.n, leased)
	}
	if fl.part != nil {
		if len(fl.aheadIDs) > 0 {
			in.opts.Handoff.PartStored(fl.aheadIDs)
		}
		return
	}
	in.opts.Handoff.Stored(fl.end)
}

// finished reports whether the write is over.
func (fl *inflight) finished() bool {
	select {
	case <-fl.done:
		return true
	default:
		return false
	}
}

// writing reports whether a write is in flight and not over.
func (in *Ingester) writing() bool {
	n := len(in.flights)
	// The writes end in order: the last is over only once all are.
	return n > 0 && !in.flights[n-1].finished()
}

// join waits for every write in flight, oldest first (see joinOldest).
func (in *Ingester) join(ctx context.Context) error {
	for len(in.flights) > 0 {
		if err := in.joinOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// joinOldest waits for the oldest write in flight and takes in its
// outcome: the position it stored, or its error. A write refused because
// the webhooks' filters changed since they were read (or that followed
// such a write) is decided and written again here, as any write is
// (retryFilters). Any other failure abandons the writes after it and the
// group being read too: the session ends, and the feed streams them again
// from the stored position.
func (in *Ingester) joinOldest(ctx context.Context) error {
	fl := in.flights[0]
	close(fl.hurry)
	<-fl.done
	in.flights[0] = nil
	in.flights = in.flights[1:]
	err := fl.err
	if errors.Is(err, store.ErrFiltersChanged) || errors.Is(err, errEarlierWrite) {
		in.filters = nil
		err = in.retryFilters(ctx, fl.batch.Events, func(f store.Filtering, _ bool) error {
			b := fl.batch
			b.Filtering = f
			fl.aheadIDs = keptWhole(in.opts.Handoff, &b, fl.aheadIDs)
			n, leased, err := fl.write(ctx, in, b)
			if err == nil {
				fl.n = n
				fl.stored(in, leased)
			}
			return err
		})
	}
	if err != nil {
		fl.tel.abort("store commit failed")
		for _, later := range in.flights {
			close(later.hurry)
			<-later.done
			later.tel.abort("store commit failed")
		}
		in.flights = in.flights[:0]
		in.abort(ctx, "store commit failed")
		return err
	}
	in.stored = fl.end
	in.noteFanOut(len(fl.batch.Events), fl.n)
	clear(fl.batch.Events)
	clear(fl.batch.States)
	if in.spare.events == nil {
		in.spare = buffers{events: fl.batch.Events[:0], states: fl.batch.States[:0], ahead: fl.batch.Ahead[:0], aheadIDs: fl.aheadIDs[:0]}
	}
	in.forget()
	return nil
}
