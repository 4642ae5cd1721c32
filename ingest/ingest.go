// Package ingest joins the change feed to the store: it maps each committed
// source transaction into events and writes them, with one delivery per
// subscribed webhook, the relay's row state and the position past the
// transaction, in one store transaction. It implements cdc.Handler.
//
// Memory stays bounded for transactions of any size: changes are mapped and
// written in chunks. A large transaction's events are stored in parts, each
// committed at once with how far into the transaction it goes, while its
// row state and the position commit with the store transaction that its
// commit finally commits (see mapChunk).
package ingest

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

// Options configure an Ingester.
type Options struct {
	// Slot names the replication slot whose position the ingester keeps.
	Slot string
	// Tables are the watched tables that exist in the platform database.
	Tables []string
	// CompaniesTable names the table company names and time zones come from.
	CompaniesTable string
	// ChunkSize is how many changes are mapped and written at a time.
	ChunkSize int
	// GroupDeliveries is how many deliveries a group of source
	// transactions may make before it is stored at once (see Full). Default
	// 1000.
	GroupDeliveries int
	// Handoff, when set, is the sender that takes new deliveries as they
	// are stored (see Handoff); nil leases none to anyone.
	Handoff Handoff
	Logger  *slog.Logger
	// TracerProvider traces each event from decoding to the commit of its
	// deliveries; nil traces nothing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the ingester's metrics; nil records none.
	MeterProvider metric.MeterProvider
}

// Handoff is the in-process road from the store write to the sender
// (relay.Dispatcher implements it): each write leases to the sender those
// of its new deliveries that the sender has room for, and the sender takes
// them as soon as their store transaction commits, instead of claiming
// them from the store or waiting for its poll.
type Handoff interface {
	// Reserve says which of the next write's new deliveries to lease to
	// the sender (see store.WriteLeasing), given what the open store
	// transaction has leased to it already (open); false leases none.
	Reserve(open *store.Leased) (store.WriteLease, bool)
	// Committed is called after each store commit that created deliveries
	// (deliveries of them in all), with those of them leased to the
	// sender: the sender owns them from then on, and the rest are due in
	// the store for any sender to claim.
	Committed(deliveries int64, leased store.Leased)
}

// noHandoff leases nothing to anyone.
type noHandoff struct{}

func (noHandoff) Reserve(*store.Leased) (store.WriteLease, bool) {
	return store.WriteLease{}, false
}
func (noHandoff) Committed(int64, store.Leased) {}

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

// Ingester implements cdc.Handler.
type Ingester struct {
	st   *store.Store
	m    *mapper.Mapper
	opts Options
	log  *slog.Logger

	companies *mapper.Companies
	specs     map[string]mapper.TableSpec
	tel       *telem

	// The open store transaction: the source transactions committed since
	// the last Flush (group commit), and the one being read.
	w       *store.Writer
	pending []*event.Change // changes not mapped yet
	events  []event.Event   // mapped, not written yet
	states  []store.StateRow
	tx      sourceTx // the source transaction being read
	// parts are the stored parts of source transactions not committed
	// yet, read when a session starts.
	parts      map[event.LSN]store.Part
	deliveries int64        // created in the open store transaction
	leased     store.Leased // leased to the sender in it
	end        event.LSN    // position past the last committed source transaction
	// perEvent is how many deliveries an event made in the last write that
	// stored events (1 before the first).
	perEvent float64
	// stored is the position the store has as far as this ingester knows:
	// read at the session's start, then what each write and Idle stored.
	// Every write that moves it, and every Sync, checks that the store
	// still has it, so that writes PostgreSQL forgot are noticed (see
	// store.ErrPositionMoved).
	stored event.LSN

	// known is the recorded state of rows as the open store transaction
	// has it, written or buffered (a nil row: no state), for rows seen
	// lately: mapping an update to one of them needs no read. It is
	// dropped whenever a store transaction rolls back or a session starts.
	known map[string]map[string]event.Row
	// maxKnown bounds known (maxKnownRows; tests set less).
	maxKnown int
}

var _ cdc.Handler = (*Ingester)(nil)

// New returns an Ingester.
func New(st *store.Store, m *mapper.Mapper, opts Options) *Ingester {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 2000
	}
	if opts.GroupDeliveries <= 0 {
		opts.GroupDeliveries = 1000
	}
	if opts.CompaniesTable == "" {
		opts.CompaniesTable = "companies"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Handoff == nil {
		opts.Handoff = noHandoff{}
	}
	tel, err := newTelem(opts.TracerProvider, opts.MeterProvider)
	if err != nil {
		// The instruments still work (as no-ops); the metrics are missing.
		opts.Logger.Warn("ingest metrics not available", "err", err)
	}
	return &Ingester{st: st, m: m, opts: opts, log: opts.Logger, specs: m.Tables(), companies: mapper.NewCompanies(), tel: tel,
		maxKnown: maxKnownRows, perEvent: 1}
}

// Position implements cdc.Handler. It also reloads the company directory
// from the state that belongs to that position.
func (in *Ingester) Position(ctx context.Context) (event.LSN, cdc.State, error) {
	in.abort(ctx, lostConnection)
	lsn, state, err := in.st.Position(ctx, in.opts.Slot)
	if err != nil {
		return 0, 0, err
	}
	switch state {
	case "":
		return 0, cdc.StateNone, nil
	case store.StateSeeding:
		return 0, cdc.StateSeeding, nil
	}
	if err := in.loadCompanies(ctx); err != nil {
		return 0, 0, err
	}
	if in.parts, err = in.st.Parts(ctx, in.opts.Slot); err != nil {
		return 0, 0, err
	}
	in.stored = lsn
	return lsn, cdc.StateReady, nil
}

func (in *Ingester) loadCompanies(ctx context.Context) error {
	rows, err := in.st.AllRowState(ctx, in.opts.Slot, in.opts.CompaniesTable)
	if err != nil {
		return err
	}
	in.companies = mapper.NewCompanies()
	for _, r := range rows {
		var id int64
		if _, err := fmt.Sscan(r.Key, &id); err != nil {
			continue
		}
		in.companies.Set(id, r.Vals)
	}
	return nil
}

// MarkSeeding implements cdc.Handler.
func (in *Ingester) MarkSeeding(ctx context.Context) error {
	return in.st.MarkSeeding(ctx, in.opts.Slot)
}

// Seed implements cdc.Handler: it records the tracked columns of every
// watched row as of the slot's consistent point.
func (in *Ingester) Seed(ctx context.Context, snap *cdc.Snapshot, start event.LSN) error {
	err := in.st.Seed(ctx, in.opts.Slot, start, func(yield func(store.StateRow) error) error {
		for _, table := range in.opts.Tables {
			spec, ok := in.specs[table]
			if !ok || len(spec.Tracked) == 0 {
				continue
			}
			cols := append(append([]string(nil), spec.Key...), spec.Tracked...)
			n := 0
			err := snap.Scan(ctx, table, cols, func(r event.Row) error {
				key, ok := in.m.RowKey(&event.Change{Table: table, Op: event.Insert, New: r})
				if !ok {
					return nil
				}
				n++
				return yield(store.StateRow{Table: table, Key: key, Vals: in.m.State(table, r)})
			})
			if err != nil {
				return err
			}
			in.log.Info("recorded watched rows", "table", table, "rows", n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	in.stored = start
	return in.loadCompanies(ctx)
}

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

// mapChunk maps a chunk of a large source transaction's changes and stores
// its events and their deliveries at once, in a part of their own
// (store.WritePart), so that sending starts while the rest is read. The
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
	// Handed to the sender as soon as the part commits: nothing is open.
	lease, _ := in.opts.Handoff.Reserve(&store.Leased{})
	n, leased, err := in.st.WritePart(ctx, in.opts.Slot, in.tx.CommitLSN,
		store.Part{Changes: in.tx.changes, NextSeq: in.tx.nextSeq}, in.events, lease)
	if err != nil {
		return err
	}
	in.tel.written()
	in.committed(n, leased)
	clear(in.events)
	in.events = in.events[:0]
	if err := x.Finish(); err != nil {
		return err
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
	if err := in.mapPending(ctx); err != nil {
		return err
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
func (in *Ingester) Full() bool {
	return float64(in.deliveries)+float64(len(in.events))*in.perEvent >= float64(in.opts.GroupDeliveries)
}

// noteFanOut records how many deliveries n events made.
func (in *Ingester) noteFanOut(events int, n int64) {
	if events > 0 {
		in.perEvent = float64(n) / float64(events)
	}
}

// Flush implements cdc.Handler: it records the position past the last
// committed source transaction and commits the store transaction.
func (in *Ingester) Flush(ctx context.Context) error {
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
	in.committed(n, leased)
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
	n, leased, err := in.st.WriteCommit(ctx, in.opts.Slot, in.events, in.states, in.leaseRequest(), in.stored, in.end)
	if err != nil {
		in.abort(ctx, "store commit failed")
		return 0, store.Leased{}, err
	}
	in.noteFanOut(len(in.events), n)
	in.tel.written()
	in.dropBuffered()
	return n, leased, nil
}

// committed follows every store commit that stored events, a group's
// (Flush) or a part's (mapChunk): it counts the deliveries the commit
// created, and hands those leased to the sender over to it.
func (in *Ingester) committed(n int64, leased store.Leased) {
	in.tel.committed(n)
	if n > 0 {
		in.opts.Handoff.Committed(n, leased)
	}
}

// Close rolls back a store transaction that a stopped feed left open (it
// stopped in the middle of a source transaction), so that the store's
// connection pool can close. Call it after cdc.Source.Run returns.
func (in *Ingester) Close(ctx context.Context) {
	in.abort(context.WithoutCancel(ctx), lostConnection)
}

// Idle implements cdc.Handler.
func (in *Ingester) Idle(ctx context.Context, lsn event.LSN) error {
	if err := in.st.SaveIdle(ctx, in.opts.Slot, in.stored, lsn); err != nil {
		return err
	}
	in.stored = lsn
	in.tel.idle()
	return nil
}

// Sync implements cdc.Handler: it makes what the store transactions
// committed so far durable.
func (in *Ingester) Sync(ctx context.Context) error {
	return in.st.Sync(ctx, in.opts.Slot, in.stored)
}

func (in *Ingester) writer(ctx context.Context) error {
	if in.w != nil {
		return nil
	}
	w, err := in.st.BeginWrite(ctx, in.opts.Slot)
	if err != nil {
		return err
	}
	in.w = w
	return nil
}

// lostConnection is why source transactions are abandoned when a session
// ends in the middle of a group.
const lostConnection = "source transactions abandoned (connection lost)"

// abort drops a store transaction left open by a lost connection: the
// source transactions in it were never confirmed and are streamed again.
func (in *Ingester) abort(ctx context.Context, reason string) {
	if in.w != nil {
		in.w.Rollback(ctx)
		in.w = nil
	}
	in.pending = in.pending[:0]
	in.dropBuffered()
	in.deliveries = 0
	in.leased = store.Leased{}
	// The rolled-back writes may be in it; the store is the truth again.
	in.known = nil
	in.tel.aborted(reason)
}

// maxKnownRows bounds the row states the ingester keeps in memory.
const maxKnownRows = 20_000

// prior returns the key of the recorded state each pending change's row
// had before the change ("" for inserts and rows without state), and makes
// sure that every such state is known: what is not in memory is read from
// the store in one query per table.
func (in *Ingester) prior(ctx context.Context) ([]string, error) {
	keys, missing := in.priorKeys()
	if len(missing) > 0 {
		if err := in.writer(ctx); err != nil {
			return nil, err
		}
		// What is buffered must be in the store transaction before it is
		// read back; nothing buffered is missing from memory, though, so
		// reading first is safe.
		got := make(map[string]map[string]event.Row, len(missing))
		for table, ks := range missing {
			rows, err := in.w.RowState(ctx, table, ks)
			if err != nil {
				return nil, err
			}
			got[table] = rows
		}
		in.learn(missing, got)
	}
	return keys, nil
}

// priorKeys returns the key of the recorded state each pending change's
// row had before the change ("" for inserts and rows without state), and
// the keys of those states that are not in memory, by table.
func (in *Ingester) priorKeys() ([]string, map[string][]string) {
	keys := make([]string, len(in.pending))
	var missing map[string][]string
	for i, c := range in.pending {
		// An inserted row has no prior state to read (the mapper's old is
		// empty for inserts).
		if c.Op == event.Truncate || c.Op == event.Insert || len(in.specs[c.Table].Tracked) == 0 {
			continue
		}
		k, ok := in.m.PriorKey(c)
		if !ok {
			continue
		}
		keys[i] = k
		if _, ok := in.known[c.Table][k]; !ok {
			if missing == nil {
				missing = map[string][]string{}
			}
			missing[c.Table] = append(missing[c.Table], k)
		}
	}
	return keys, missing
}

// learn keeps the state read for the missing keys; a key the store has no
// state for is known to have none.
func (in *Ingester) learn(missing map[string][]string, got map[string]map[string]event.Row) {
	for table, ks := range missing {
		known := in.knownTable(table)
		for _, k := range ks {
			known[k] = got[table][k] // nil: the store has no state for it
		}
	}
}

func (in *Ingester) knownTable(table string) map[string]event.Row {
	if in.known == nil {
		in.known = map[string]map[string]event.Row{}
	}
	t := in.known[table]
	if t == nil {
		t = map[string]event.Row{}
		in.known[table] = t
	}
	return t
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
	n, leased, err := in.w.WriteLeasing(ctx, in.events, in.states, in.leaseRequest())
	if err != nil {
		return err
	}
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
		return store.WriteLease{}
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
}

// forget bounds the row states kept in memory. Call it only when nothing is
// pending: everything known is then in the store transaction or in the
// buffered row state changes, so any of it but the buffered rows may be
// dropped (map order picks which at random) and read again when needed.
func (in *Ingester) forget() {
	if len(in.pending) > 0 {
		return
	}
	total := 0
	for _, t := range in.known {
		total += len(t)
	}
	if total <= in.maxKnown {
		return
	}
	type row struct{ table, key string }
	var buffered map[row]bool
	if len(in.states) > 0 {
		buffered = make(map[row]bool, len(in.states))
		for _, st := range in.states {
			buffered[row{st.Table, st.Key}] = true
		}
	}
	for table, t := range in.known {
		if total <= in.maxKnown {
			return
		}
		for k := range t {
			if buffered[row{table, k}] {
				continue
			}
			delete(t, k)
			total--
			if total <= in.maxKnown*3/4 {
				break
			}
		}
		if len(t) == 0 {
			delete(in.known, table)
		}
	}
}
