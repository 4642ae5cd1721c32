// Package ingest joins the change feed to the store: it maps each committed
// source transaction into events and writes them, with one delivery per
// subscribed webhook, the relay's row state and the position past the
// transaction, in one store transaction. It implements cdc.Handler.
//
// Memory stays bounded for transactions of any size: changes are mapped and
// written in chunks. A large transaction's events are stored in parts, each
// committed with how far into the transaction it goes, while its row state
// and the position commit with the store transaction that its commit
// finally commits (see mapChunk).
//
// The deliveries go to the sender in the same process through Handoff,
// which the relay implements, by two roads. A source transaction read whole,
// or a chunk of a large one, has its deliveries offered to the sender as
// soon as it is mapped, before anything of it is stored (sending ahead,
// ahead.go): the sender starts the first attempts of those it takes at
// once, and the next write stores them leased to it, or as their attempts
// left them; a group of which every delivery went ahead, and every part, is
// written while the feed reads on (inflight.go).
// The rest are leased by the write itself, as far as the sender has room,
// and taken as soon as their store transaction commits.
package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
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
	// the sender (see store.WriteLease), given what the open store
	// transaction has leased to it already (open); false leases none.
	Reserve(open *store.Leased) (store.WriteLease, bool)
	// Reserve, Committed, Stored, PartStored, Finished and AwaitAhead may
	// be called from the goroutine of a store write in flight (see
	// launch), beside the feed's calls of the others; Committed, Stored
	// and PartStored one write at a time and in the writes' order.
	//
	// Committed is called after each store commit that created deliveries
	// (deliveries of them in all), with those of them leased to the
	// sender: the sender owns them from then on, and the rest are due in
	// the store for any sender to claim.
	Committed(deliveries int64, leased store.Leased)
	// AheadLease is the owner and the lease under which deliveries taken
	// ahead are stored (store.Batch.Ahead); an empty owner takes none.
	AheadLease() (owner string, lease time.Duration)
	// Ahead offers the sender a delivery of the source transaction
	// committed at lsn before it is stored, to send its first attempt at
	// once (see sendAhead). It reports whether the sender took it: it
	// takes it when its webhook has nothing waiting in the store and a
	// free slot or room in its queue, and when it has it already, from an
	// earlier reading of the same source transaction. A delivery taken is
	// stored with the next write. inParts says the transaction is stored
	// in parts as it is read (mapChunk), the next write being its part.
	Ahead(c *store.Claimed, lsn event.LSN, inParts bool) bool
	// Finished reports whether the sender still holds a delivery it took
	// ahead (kept; one it gave back is decided by the write as any other)
	// and, when its first attempt is over and the write may store it with
	// the delivery (store.Ahead.Result), the result (done); the sender
	// then does not record it once stored.
	Finished(id uuid.UUID) (r store.AttemptResult, done, kept bool)
	// AwaitAhead waits until every delivery of ids that the sender holds
	// ahead has its first attempt over, until hurry is closed, or until
	// ctx is done, whichever comes first. It is called from the goroutine
	// of a store write in flight.
	AwaitAhead(ctx context.Context, ids []uuid.UUID, hurry <-chan struct{})
	// Stored tells the sender that everything it took ahead of the source
	// transactions committed before lsn is stored.
	Stored(lsn event.LSN)
	// PartStored tells the sender that a part of a source transaction
	// stored in parts has stored the deliveries of ids, which it took
	// ahead.
	PartStored(ids []uuid.UUID)
}

// noHandoff leases nothing to anyone.
type noHandoff struct{}

func (noHandoff) Reserve(*store.Leased) (store.WriteLease, bool) {
	return store.WriteLease{}, false
}
func (noHandoff) Committed(int64, store.Leased)                            {}
func (noHandoff) AheadLease() (string, time.Duration)                      { return "", 0 }
func (noHandoff) Ahead(*store.Claimed, event.LSN, bool) bool               { return false }
func (noHandoff) Stored(event.LSN)                                         {}
func (noHandoff) PartStored([]uuid.UUID)                                   {}
func (noHandoff) AwaitAhead(context.Context, []uuid.UUID, <-chan struct{}) {}
func (noHandoff) Finished(uuid.UUID) (store.AttemptResult, bool, bool) {
	return store.AttemptResult{}, false, false
}

// ingestStore is what the ingester asks of the store: the slot's position
// and row state, and the writes of what the change feed brings.
// *store.Store implements it.
type ingestStore interface {
	Position(ctx context.Context, slot string) (event.LSN, string, error)
	MarkSeeding(ctx context.Context, slot string) error
	Seed(ctx context.Context, slot string, start event.LSN, rows func(yield func(store.StateRow) error) error) error
	AllRowState(ctx context.Context, slot, table string) ([]store.StateRow, error)
	RowState(ctx context.Context, slot, table string, keys []string) (map[string]event.Row, error)
	Parts(ctx context.Context, slot string) (map[event.LSN]store.Part, error)
	BeginWrite(ctx context.Context, slot string) (*store.Writer, error)
	WriteCommit(ctx context.Context, slot string, batch store.Batch, from, end event.LSN) (int64, store.Leased, error)
	WritePart(ctx context.Context, slot string, commitLSN event.LSN, p store.Part, batch store.Batch) (int64, store.Leased, error)
	SaveIdle(ctx context.Context, slot string, from, lsn event.LSN) error
	WebhookFilters(ctx context.Context) ([]store.WebhookFilter, error)
	Sync(ctx context.Context, slot string, at event.LSN) error
	LoadFanOut(ctx context.Context) (*store.FanOut, error)
	AnnounceInFeed(ctx context.Context, content string) error
	WebhooksVersion(ctx context.Context) (int64, error)
	DeliveryKey(ctx context.Context) ([]byte, error)
}

var _ ingestStore = (*store.Store)(nil)

// Ingester implements cdc.Handler.
type Ingester struct {
	st   ingestStore
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
	// idle is a position Idle was given while a write was in flight; Sync
	// stores it once that write is over (see Idle).
	idle event.LSN

	// known is the recorded state of rows as the open store transaction
	// has it, written or buffered (a nil row: no state), for rows seen
	// lately: mapping an update to one of them needs no read. It is
	// dropped whenever a store transaction rolls back or a session starts.
	known map[string]map[string]event.Row
	// maxKnown bounds known (maxKnownRows; tests set less).
	maxKnown int

	// filters are the webhooks' filters, read before the first write that
	// stores events and again whenever a write finds them changed; nil
	// until then.
	filters *filterSet

	// aheadState: deliveries sent before they are stored (ahead.go).
	aheadState

	// flights are the store writes running while the feed reads on,
	// oldest first, and spare the buffers of a group they stored
	// (inflight.go).
	flights []*inflight
	spare   buffers
}

var _ cdc.Handler = (*Ingester)(nil)

// New returns an Ingester.
func New(st ingestStore, m *mapper.Mapper, opts Options) *Ingester {
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
	if err := in.join(ctx); err != nil {
		in.log.Debug("the last store write of the previous session failed; its transactions are streamed again", "err", err)
	}
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
	ready := cdc.StateReady
	if state == store.StateReadyUnbound {
		ready = cdc.StateReadyUnbound
	}
	if err := in.loadCompanies(ctx); err != nil {
		return 0, 0, err
	}
	if in.parts, err = in.st.Parts(ctx, in.opts.Slot); err != nil {
		return 0, 0, err
	}
	in.stored, in.idle = lsn, 0
	in.listen(ctx)
	// What this dispatcher took ahead of transactions before the position
	// was stored by the write that moved the position past them.
	in.opts.Handoff.Stored(lsn)
	return lsn, ready, nil
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
	in.stored, in.idle = start, 0
	in.listen(ctx)
	return in.loadCompanies(ctx)
}

// Close rolls back a store transaction that a stopped feed left open (it
// stopped in the middle of a source transaction), so that the store's
// connection pool can close. Call it after cdc.Source.Run returns.
func (in *Ingester) Close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	if err := in.join(ctx); err != nil {
		in.log.Warn("the last store write failed; its transactions are streamed again at the next start", "err", err)
	}
	in.abort(ctx, lostConnection)
}

// Idle implements cdc.Handler.
//
// While a store write is in flight it stores nothing rather than wait for
// it: everything committed before lsn is in that write or made nothing to
// store. The feed confirms lsn after the next Sync, which waits for the
// write and then stores lsn, so that the store's position is never behind
// what the slot was confirmed up to.
func (in *Ingester) Idle(ctx context.Context, lsn event.LSN) error {
	if in.writing() {
		in.idle = max(in.idle, lsn)
		return nil
	}
	if err := in.join(ctx); err != nil {
		return err
	}
	return in.saveIdle(ctx, lsn)
}

// saveIdle stores lsn as the position, past the one stored.
func (in *Ingester) saveIdle(ctx context.Context, lsn event.LSN) error {
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
	if err := in.join(ctx); err != nil {
		return err
	}
	if in.idle > in.stored {
		if err := in.saveIdle(ctx, in.idle); err != nil {
			return err
		}
	}
	in.idle = 0
	return in.st.Sync(ctx, in.opts.Slot, in.stored)
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
	in.waiting = false
	// The rolled-back writes may be in it; the store is the truth again.
	in.known = nil
	in.tel.aborted(reason)
}
