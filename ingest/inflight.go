// A store write in flight: the write of a group of which every delivery
// went ahead runs on a goroutine of its own while the feed reads on.

package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// inflight is a group's store write running while the feed reads the next
// transactions (see launch). At most one runs at a time: every step that
// touches the store or the position waits for it first (join), so the
// writes commit in the feed's order, each from the position the one
// before stored.
type inflight struct {
	done      chan struct{}
	batch     store.Batch
	from, end event.LSN
	tel       *storeTel
	// Set by the write before done is closed.
	n   int64
	err error
}

// buffers are the slices a group is mapped into, kept for reuse while the
// other set is written.
type buffers struct {
	events []event.Event
	states []store.StateRow
	ahead  []store.Ahead
}

// launch starts the store write of the buffered group, with the position
// past it, and returns at once: the feed reads, maps and sends the next
// transactions ahead while it runs, instead of waiting for a write that
// no first attempt waits for. The write hands over what it stored to the
// sender as soon as it commits; the ingester learns of it at the next
// join. It is for a group with nothing in an open store transaction and
// every delivery taken ahead (Flush decides), so it leases nothing to the
// sender beyond those.
func (in *Ingester) launch(ctx context.Context) error {
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
		done:  make(chan struct{}),
		batch: store.Batch{Events: in.events, States: in.states, Lease: lease, Filtering: f, Ahead: in.aheadBatch()},
		from:  in.stored, end: in.end,
		tel: in.tel.detach(),
	}
	in.events, in.states, in.ahead = in.spare.events[:0], in.spare.states[:0], in.spare.ahead[:0]
	in.aheadIDs = in.aheadIDs[:0]
	in.spare = buffers{}
	in.waiting = false
	in.flight = fl
	go fl.run(ctx, in)
	return nil
}

// run writes the group. What it calls is safe beside the feed's goroutine:
// the store, the sender's hand-off, and the write's own telemetry.
func (fl *inflight) run(ctx context.Context, in *Ingester) {
	defer close(fl.done)
	var leased store.Leased
	fl.n, leased, fl.err = in.st.WriteCommit(ctx, in.opts.Slot, fl.batch, fl.from, fl.end)
	if fl.err != nil {
		return
	}
	fl.stored(in, leased)
}

// stored hands what the write stored to the sender and ends its spans.
func (fl *inflight) stored(in *Ingester, leased store.Leased) {
	in.tel.finish(fl.tel, fl.n, time.Now())
	if fl.n > 0 {
		in.opts.Handoff.Committed(fl.n, leased)
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

// join waits for the write in flight, if any, and takes in its outcome: the
// position it stored, or its error. A write refused because the webhooks'
// filters changed since they were read is decided and written again here,
// as any write is (retryFilters). Any other failure abandons the group
// being read too: the session ends, and the feed streams both again from
// the stored position.
func (in *Ingester) join(ctx context.Context) error {
	fl := in.flight
	if fl == nil {
		return nil
	}
	<-fl.done
	in.flight = nil
	err := fl.err
	if errors.Is(err, store.ErrFiltersChanged) {
		in.filters = nil
		err = in.retryFilters(ctx, fl.batch.Events, func(f store.Filtering, _ bool) error {
			b := fl.batch
			b.Filtering = f
			n, leased, err := in.st.WriteCommit(ctx, in.opts.Slot, b, fl.from, fl.end)
			if err == nil {
				fl.n = n
				fl.stored(in, leased)
			}
			return err
		})
	}
	if err != nil {
		fl.tel.abort("store commit failed")
		in.abort(ctx, "store commit failed")
		return err
	}
	in.stored = fl.end
	in.noteFanOut(len(fl.batch.Events), fl.n)
	clear(fl.batch.Events)
	clear(fl.batch.States)
	in.spare = buffers{events: fl.batch.Events[:0], states: fl.batch.States[:0], ahead: fl.batch.Ahead[:0]}
	in.forget()
	return nil
}
