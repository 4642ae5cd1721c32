// One source transaction's road through the ingester: its changes are
// mapped in chunks (mapChanges) and written into the open store
// transaction or in parts of their own (mapChunk), and the group of
// transactions is committed with its position (Flush).

package ingest

import (
	"context"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// sourceTx is the source transaction being read: how far mapping got, and
// where its events are stored.
type sourceTx struct {
	event.Tx
	// changes counts its changes mapped so far, events the events they
	// made; nextSeq is the next event's number in it.
	changes, events int64
	nextSeq         int
	mode            partMode
	// resume is how far a part stored before a restart got (store.Parts),
	// until mapping passes it; nil when there is none.
	resume *store.Part
}

// partMode says whether a source transaction's events are stored in parts
// (see mapChunk).
type partMode int

const (
	// mayPart: no chunk of it was mapped yet. Its events go into the open
	// store transaction, with its group; a transaction of one chunk is
	// stored whole.
	mayPart partMode = iota
	// inParts: a chunk of it was mapped. Its events are stored in parts,
	// each committed at once; its row state and position commit with the
	// store transaction its commit commits.
	inParts
	// noParts: a chunk of it had a truncate, which is applied in the open
	// store transaction: the rest of its events goes there too, behind the
	// parts stored before the truncate, if any.
	noParts
)

// Begin implements cdc.Handler.
func (in *Ingester) Begin(ctx context.Context, tx event.Tx) error {
	in.pending = in.pending[:0]
	in.tx = sourceTx{Tx: tx}
	if p, ok := in.parts[tx.CommitLSN]; ok {
		// Stored in part before a restart: its first p.Changes changes'
		// events are stored already.
		in.tx.resume = &p
		delete(in.parts, tx.CommitLSN)
	}
	in.tel.begin(tx)
	return nil
}

// Change implements cdc.Handler.
func (in *Ingester) Change(ctx context.Context, c *event.Change) error {
	in.pending = append(in.pending, c)
	if len(in.pending) >= in.opts.ChunkSize {
		return in.mapChunk(ctx)
	}
	return nil
}

// mapChunk maps a chunk of a large source transaction's changes, sends
// their deliveries ahead, and stores its events and their deliveries in a
// part of their own (store.WritePart), written while the rest is read. The
// transaction's row state and the slot's position stay in the store
// transaction that commits at its end; the part records how far into the
// source transaction it goes, so that a relay that streams it again after
// a crash stores neither an event twice nor skips one (see Begin). The
// group's earlier transactions are committed first, so that their events
// are not sent after this one's.
//
// The chunk's row state changes are kept until the next chunk comes; then
// the prior row state the new chunk needs is read and the kept changes are
// written behind the read, in one round trip, and the new chunk is mapped
// as soon as the read is answered, while the write runs. The read need not
// see the write: every row the kept changes touch is in memory (known),
// and nothing is dropped from memory that a write still to be sent
// changes (forget).
func (in *Ingester) mapChunk(ctx context.Context) error {
	if in.tx.mode == noParts || in.pendingTruncate() {
		// A truncate is applied in the store transaction, and with it what
		// its chunk produced: the parts (if any) end before it, and the
		// rest of the transaction goes where the truncate went.
		in.tx.mode = noParts
		if err := in.mapPending(ctx); err != nil {
			return err
		}
		if err := in.write(ctx); err != nil {
			return err
		}
		in.forget()
		return nil
	}
	if in.tx.mode == mayPart {
		if in.w != nil || len(in.events) > 0 || len(in.states) > 0 {
			if err := in.Flush(ctx); err != nil {
				return err
			}
		}
		if err := in.writer(ctx); err != nil {
			return err
		}
		in.w.SawParts()
		in.tx.mode = inParts
	}
	keys, missing := in.priorKeys()
	x, err := in.w.ReadThenWrite(ctx, missing, in.states)
	if err != nil {
		return err
	}
	defer x.Close()
	clear(in.states) // encoded when sent
	in.states = in.states[:0]
	got, err := x.State()
	if err != nil {
		return err
	}
	in.learn(missing, got)
	if err := in.mapChanges(ctx, keys); err != nil {
		return err
	}
	// The kept changes' write is in before anything below may wait for
	// the writes in flight, or abort the store transaction they are in.
	if err := x.Finish(); err != nil {
		return err
	}
	// The part's deliveries go ahead of its write, as those of a
	// transaction read whole go ahead of their group's, and the part is
	// written while the next chunk is read (launch): it first waits for
	// their first attempts, so that it stores each with its result, as
	// one insert. The transaction's commit waits for its parts (join).
	// A part with deliveries left to its write (refused, or of webhooks
	// the write decides) is stored before the next chunk is read, as a
	// group with such deliveries is: the next chunk's deliveries must not
	// go ahead of them.
	all := true
	if len(in.events) > 0 {
		all = in.sendAhead(ctx, in.events)
	}
	in.tel.written()
	if err := in.launch(ctx, &store.Part{Changes: in.tx.changes, NextSeq: in.tx.nextSeq}); err != nil {
		return err
	}
	if !all {
		if err := in.join(ctx); err != nil {
			return err
		}
	}
	in.forget()
	return nil
}

// pendingTruncate reports whether a pending change is a truncate, which
// mapChunk leaves to mapPending.
func (in *Ingester) pendingTruncate() bool {
	for _, c := range in.pending {
		if c.Op == event.Truncate {
			return true
		}
	}
	return false
}

// Commit implements cdc.Handler: it maps what is left of the transaction.
// What it produced is written into the open store transaction when enough
// has gathered or at the latest by Flush, so the source transactions of a
// group cost one write together.
func (in *Ingester) Commit(ctx context.Context, tx event.Tx) error {
	// The events of a transaction read whole (no part of it stored, now
	// or before a restart), or of the rest of one stored in parts, are in
	// the buffer from start on, unless a truncate wrote them: those may go
	// ahead of the write.
	mayGo := in.tx.mode != noParts && in.tx.resume == nil
	start, writes := len(in.events), in.writes
	if err := in.mapPending(ctx); err != nil {
		return err
	}
	if len(in.events) > start || in.writes != writes {
		all := mayGo && in.writes == writes && in.sendAhead(ctx, in.events[start:])
		in.waiting = in.waiting || !all
		if !all {
			in.noteWhole(false, 0) // sendAhead may not have decided
		}
	}
	if len(in.events)+len(in.states) >= in.opts.ChunkSize {
		if err := in.write(ctx); err != nil {
			return err
		}
		in.forget()
	}
	in.end = tx.EndLSN
	in.tel.txCommitted(tx, in.tx.events)
	return nil
}

// Full implements cdc.Handler: a group is full once the deliveries it made
// in the open store transaction and those its buffered events are expected
// to make (as many per event as in the last write) reach GroupDeliveries.
// A group of transactions that fan out to many webhooks is then stored,
// and its deliveries sent, while the next group is read, rather than all
// of a backlog in one store transaction, whose first attempts would wait
// for all of it.
//
// A group of which every delivery went ahead (see Waiting) is full at
// sentGroupDeliveries already: its write runs while the feed reads on
// (launch), but the next group's store write waits for it, and in a wide
// fan-out a write of a thousand deliveries would hold that one up.
// (Measured when such writes still ran on the feed's goroutine:
// docs/PERFORMANCE.md.) While a write is still in flight (or waits for
// its first attempts, see resultWait), it gathers up to GroupDeliveries:
// writes commit one at a time, so its own would only queue behind that
// one, and a larger group costs the store less per delivery.
func (in *Ingester) Full() bool {
	limit := in.opts.GroupDeliveries
	if !in.waiting && !in.writing() {
		limit = min(limit, sentGroupDeliveries)
	}
	return float64(in.deliveries)+float64(len(in.events))*in.perEvent >= float64(limit)
}

// sentGroupDeliveries bounds the deliveries of a group of which every
// delivery went ahead (see Full).
const sentGroupDeliveries = 250

// noteFanOut records how many deliveries n events made.
func (in *Ingester) noteFanOut(events int, n int64) {
	if events > 0 {
		in.perEvent = float64(n) / float64(events)
	}
}

// Flush implements cdc.Handler: it records the position past the last
// committed source transaction and commits the store transaction. A group
// that nothing waits for (every delivery went ahead, nothing of it in an
// open store transaction) is written while the feed reads on (launch),
// after the writes in flight before it; any other is written once they
// are in (join).
func (in *Ingester) Flush(ctx context.Context) error {
	if in.w == nil && !in.waiting {
		// Nothing waits for this write: the feed reads on while it runs.
		return in.launch(ctx, nil)
	}
	if err := in.join(ctx); err != nil {
		return err
	}
	var n int64
	var leased store.Leased
	var err error
	if in.w == nil {
		// Nothing of the group is in the store yet (no large transaction,
		// no state read): all of it goes in one round trip.
		n, leased, err = in.writeCommit(ctx)
	} else {
		n, leased, err = in.commitOpen(ctx)
	}
	if err != nil {
		return err
	}
	in.stored = in.end
	in.waiting = false
	in.committed(n, leased)
	in.opts.Handoff.Stored(in.stored)
	in.forget()
	return nil
}

// commitOpen writes what is buffered into the open store transaction and
// commits it with the position past the group. It returns the deliveries
// the transaction created and those it leased to the sender.
func (in *Ingester) commitOpen(ctx context.Context) (int64, store.Leased, error) {
	if err := in.write(ctx); err != nil {
		return 0, store.Leased{}, err
	}
	w, n, leased := in.w, in.deliveries, in.leased
	in.w, in.deliveries, in.leased = nil, 0, store.Leased{}
	if err := w.Commit(ctx, in.stored, in.end); err != nil {
		// What the rolled-back transaction wrote is not known any more.
		in.known = nil
		in.tel.aborted("store commit failed")
		return 0, store.Leased{}, err
	}
	return n, leased, nil
}

// writeCommit stores the buffered group and its position at once (see
// store.WriteCommit). It returns the deliveries it created and those it
// leased to the sender.
func (in *Ingester) writeCommit(ctx context.Context) (int64, store.Leased, error) {
	var n int64
	var leased store.Leased
	err := in.retryFilters(ctx, in.events, func(f store.Filtering, _ bool) (err error) {
		n, leased, err = in.st.WriteCommit(ctx, in.opts.Slot,
			store.Batch{Events: in.events, States: in.states, Lease: in.leaseRequest(), Filtering: f, Ahead: in.aheadBatch()}, in.stored, in.end)
		return err
	})
	if err != nil {
		in.abort(ctx, "store commit failed")
		return 0, store.Leased{}, err
	}
	in.noteFanOut(len(in.events), n)
	in.tel.written()
	in.dropBuffered()
	return n, leased, nil
}

// committed follows a store commit of a group on the feed's goroutine
// (Flush): it counts the deliveries the commit created, and hands those
// leased to the sender over to it. A write in flight, a group's or a
// part's, does the same itself (inflight.stored).
func (in *Ingester) committed(n int64, leased store.Leased) {
	in.tel.committed(n)
	if n > 0 {
		in.opts.Handoff.Committed(n, leased)
	}
}

func (in *Ingester) writer(ctx context.Context) error {
	if in.w != nil {
		return nil
	}
	// A store transaction opens only after the write before it is in.
	if err := in.join(ctx); err != nil {
		return err
	}
	w, err := in.st.BeginWrite(ctx, in.opts.Slot)
	if err != nil {
		return err
	}
	in.w = w
	return nil
}

// mapPending maps the pending changes in order into events and row state
// changes, buffered for the next write.
func (in *Ingester) mapPending(ctx context.Context) error {
	if len(in.pending) == 0 {
		return nil
	}
	priorKeys, err := in.prior(ctx)
	if err != nil {
		return err
	}
	return in.mapChanges(ctx, priorKeys)
}

// mapChanges maps the pending changes, whose prior states (by priorKeys)
// are known, in order into events and row state changes, buffered for the
// next write, and empties pending.
func (in *Ingester) mapChanges(ctx context.Context, priorKeys []string) error {
	for i, c := range in.pending {
		if c.Op == event.Truncate {
			// Changes before the truncate must be written first.
			if err := in.write(ctx); err != nil {
				return err
			}
			if err := in.writer(ctx); err != nil {
				return err
			}
			if err := in.w.TruncateState(ctx, c.Table); err != nil {
				return err
			}
			delete(in.known, c.Table)
			in.m.UpdateCompanies(in.companies, c, nil)
			continue
		}
		// Read as each change comes: an earlier change of the chunk may
		// have moved the row on.
		var before event.Row
		if pk := priorKeys[i]; pk != "" {
			before = in.known[c.Table][pk]
		}
		drafts, next, err := in.m.Map(c, before, in.companies)
		if r := in.tx.resume; r != nil {
			if in.tx.changes < r.Changes {
				drafts = nil // stored in a part before a restart
			} else {
				in.tx.nextSeq, in.tx.resume = r.NextSeq, nil
			}
		}
		in.tx.changes++
		if err != nil {
			// A rule that cannot be evaluated on this row is a rule problem:
			// say so loudly; the other rules' events of the change still go.
			in.log.ErrorContext(in.tel.txCtxOr(ctx), "change not fully mapped", "table", c.Table, "op", c.Op, "commit_lsn", c.CommitLSN.String(), "err", err)
		}
		for _, d := range drafts {
			in.events = append(in.events, event.Event{
				Type: d.Type, CompanyID: d.CompanyID, CommitLSN: c.CommitLSN, Seq: in.tx.nextSeq,
				CommitTime: c.CommitTime, Table: c.Table, Op: c.Op, Body: d.Body,
			})
			e := &in.events[len(in.events)-1]
			e.TraceParent = in.tel.event(e)
			in.tx.nextSeq++
			in.tx.events++
		}
		in.m.UpdateCompanies(in.companies, c, next)
		if len(in.specs[c.Table].Tracked) == 0 {
			continue
		}
		key, ok := in.m.RowKey(c)
		known := in.knownTable(c.Table)
		if pk := priorKeys[i]; pk != "" && (c.Op == event.Delete || !ok || pk != key) {
			// The key changed (or the row is gone): the old record is obsolete.
			known[pk] = nil
			in.states = append(in.states, store.StateRow{Table: c.Table, Key: pk})
		}
		if ok && c.Op != event.Delete {
			known[key] = next
			in.states = append(in.states, store.StateRow{Table: c.Table, Key: key, Vals: next})
		}
	}
	clear(in.pending)
	in.pending = in.pending[:0]
	return nil
}

// write writes the buffered events and row state changes into the open
// store transaction.
func (in *Ingester) write(ctx context.Context) error {
	if len(in.events) == 0 && len(in.states) == 0 {
		return nil
	}
	if err := in.writer(ctx); err != nil {
		return err
	}
	var n int64
	var leased store.Leased
	err := in.retryFilters(ctx, in.events, func(f store.Filtering, again bool) (err error) {
		states := in.states
		if again {
			states = nil // stored by the write that found the filters changed
		}
		n, leased, err = in.w.Write(ctx, store.Batch{Events: in.events, States: states, Lease: in.leaseRequest(), Filtering: f, Ahead: in.aheadBatch()})
		return err
	})
	if err != nil {
		return err
	}
	in.writes++
	in.noteFanOut(len(in.events), n)
	in.deliveries += n
	in.leased.Add(leased)
	in.tel.written()
	in.dropBuffered()
	return nil
}

// leaseRequest asks the sender what it can take now, given what this store
// transaction has leased to it already.
func (in *Ingester) leaseRequest() store.WriteLease {
	req, ok := in.opts.Handoff.Reserve(&in.leased)
	if !ok {
		req = store.WriteLease{}
	}
	if len(in.ahead) > 0 && req.Owner == "" {
		req.Owner, req.Lease = in.opts.Handoff.AheadLease()
	}
	return req
}

// dropBuffered empties the buffers of mapped, unwritten events and row
// state, keeping their capacity.
func (in *Ingester) dropBuffered() {
	clear(in.events)
	in.events = in.events[:0]
	clear(in.states)
	in.states = in.states[:0]
	in.ahead = in.ahead[:0]
	in.aheadIDs = in.aheadIDs[:0]
	in.wholeAt = 0
}
