// Package ingest joins the change feed to the store: it maps each committed
// source transaction into events and writes them, with one delivery per
// subscribed webhook, the relay's row state and the position past the
// transaction, in one store transaction. It implements cdc.Handler.
//
// Memory stays bounded for transactions of any size: changes are mapped and
// written in chunks inside the one store transaction that the source
// transaction's commit finally commits.
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
	// Committed is called after each store commit that created deliveries,
	// so the sender can start at once instead of waiting for its poll.
	Committed func(deliveries int64)
	Logger    *slog.Logger
	// TracerProvider traces each event from decoding to the commit of its
	// deliveries; nil traces nothing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the ingester's metrics; nil records none.
	MeterProvider metric.MeterProvider
}

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
	w          *store.Writer
	pending    []*event.Change
	nextSeq    int
	deliveries int64     // created in the open store transaction
	txStart    int64     // deliveries when the current source transaction began
	end        event.LSN // position past the last committed source transaction
}

var _ cdc.Handler = (*Ingester)(nil)

// New returns an Ingester.
func New(st *store.Store, m *mapper.Mapper, opts Options) *Ingester {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 2000
	}
	if opts.CompaniesTable == "" {
		opts.CompaniesTable = "companies"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Committed == nil {
		opts.Committed = func(int64) {}
	}
	tel, err := newTelem(opts.TracerProvider, opts.MeterProvider)
	if err != nil {
		// The instruments still work (as no-ops); the metrics are missing.
		opts.Logger.Warn("ingest metrics not available", "err", err)
	}
	return &Ingester{st: st, m: m, opts: opts, log: opts.Logger, specs: m.Tables(), companies: mapper.NewCompanies(), tel: tel}
}

// Position implements cdc.Handler. It also reloads the company directory
// from the state that belongs to that position.
func (in *Ingester) Position(ctx context.Context) (event.LSN, cdc.State, error) {
	in.abort(ctx)
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
	return in.loadCompanies(ctx)
}

// Begin implements cdc.Handler.
func (in *Ingester) Begin(ctx context.Context, tx event.Tx) error {
	in.pending = in.pending[:0]
	in.nextSeq = 0
	in.txStart = in.deliveries
	in.tel.begin(tx)
	return nil
}

// Change implements cdc.Handler.
func (in *Ingester) Change(ctx context.Context, c *event.Change) error {
	in.pending = append(in.pending, c)
	if len(in.pending) >= in.opts.ChunkSize {
		return in.flush(ctx)
	}
	return nil
}

// Commit implements cdc.Handler: it writes what is left of the transaction
// into the open store transaction, which Flush commits.
func (in *Ingester) Commit(ctx context.Context, tx event.Tx) error {
	if err := in.flush(ctx); err != nil {
		return err
	}
	in.end = tx.EndLSN
	in.tel.txCommitted(tx, in.deliveries-in.txStart)
	return nil
}

// Flush implements cdc.Handler: it records the position past the last
// committed source transaction and commits the store transaction.
func (in *Ingester) Flush(ctx context.Context) error {
	if err := in.writer(ctx); err != nil {
		return err
	}
	w, n := in.w, in.deliveries
	in.w, in.deliveries = nil, 0
	if err := w.Commit(ctx, in.end); err != nil {
		in.tel.aborted("store commit failed")
		return err
	}
	in.tel.committed()
	if n > 0 {
		in.opts.Committed(n)
	}
	return nil
}

// Close rolls back a store transaction that a stopped feed left open (it
// stopped in the middle of a source transaction), so that the store's
// connection pool can close. Call it after cdc.Source.Run returns.
func (in *Ingester) Close(ctx context.Context) {
	in.abort(context.WithoutCancel(ctx))
}

// Idle implements cdc.Handler.
func (in *Ingester) Idle(ctx context.Context, lsn event.LSN) error {
	if err := in.st.SaveIdle(ctx, in.opts.Slot, lsn); err != nil {
		return err
	}
	in.tel.idle()
	return nil
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

// abort drops a store transaction left open by a lost connection: the
// source transactions in it were never confirmed and are streamed again.
func (in *Ingester) abort(ctx context.Context) {
	if in.w != nil {
		in.w.Rollback(ctx)
		in.w = nil
	}
	in.pending = in.pending[:0]
	in.deliveries = 0
	in.tel.aborted("source transactions abandoned (connection lost)")
}

// flush maps the pending changes in order and writes what they produce.
func (in *Ingester) flush(ctx context.Context) error {
	if len(in.pending) == 0 {
		return nil
	}
	if err := in.writer(ctx); err != nil {
		return err
	}
	// Load the recorded state of every row the chunk touches, per table.
	keys := map[string][]string{}
	priorKeys := make([]string, len(in.pending))
	for i, c := range in.pending {
		// An inserted row has no prior state to read (the mapper's old is
		// empty for inserts), which saves a query for insert-heavy loads.
		if c.Op == event.Truncate || c.Op == event.Insert || len(in.specs[c.Table].Tracked) == 0 {
			continue
		}
		if k, ok := in.m.PriorKey(c); ok {
			priorKeys[i] = k
			keys[c.Table] = append(keys[c.Table], k)
		}
	}
	prior := map[string]map[string]event.Row{}
	for table, ks := range keys {
		rows, err := in.w.RowState(ctx, table, ks)
		if err != nil {
			return err
		}
		prior[table] = rows
	}

	var events []event.Event
	var states []store.StateRow
	for i, c := range in.pending {
		if c.Op == event.Truncate {
			// Changes before the truncate must be written first.
			if _, err := in.write(ctx, &events, &states); err != nil {
				return err
			}
			if err := in.w.TruncateState(ctx, c.Table); err != nil {
				return err
			}
			delete(prior, c.Table)
			in.m.UpdateCompanies(in.companies, c, nil)
			continue
		}
		var before event.Row
		if rows := prior[c.Table]; rows != nil && priorKeys[i] != "" {
			before = rows[priorKeys[i]]
		}
		drafts, next, err := in.m.Map(c, before, in.companies)
		if err != nil {
			// A rule that cannot be evaluated on this row is a rule problem:
			// say so loudly; the other rules' events of the change still go.
			in.log.ErrorContext(in.tel.txCtxOr(ctx), "change not fully mapped", "table", c.Table, "op", c.Op, "commit_lsn", c.CommitLSN.String(), "err", err)
		}
		for _, d := range drafts {
			events = append(events, event.Event{
				Type: d.Type, CompanyID: d.CompanyID, CommitLSN: c.CommitLSN, Seq: in.nextSeq,
				CommitTime: c.CommitTime, Table: c.Table, Op: c.Op, Body: d.Body,
			})
			e := &events[len(events)-1]
			e.TraceParent = in.tel.event(e)
			in.nextSeq++
		}
		in.m.UpdateCompanies(in.companies, c, next)
		if len(in.specs[c.Table].Tracked) == 0 {
			continue
		}
		key, ok := in.m.RowKey(c)
		if prior[c.Table] == nil {
			prior[c.Table] = map[string]event.Row{}
		}
		if pk := priorKeys[i]; pk != "" && (c.Op == event.Delete || !ok || pk != key) {
			// The key changed (or the row is gone): the old record is obsolete.
			prior[c.Table][pk] = nil
			states = append(states, store.StateRow{Table: c.Table, Key: pk})
		}
		if ok && c.Op != event.Delete {
			prior[c.Table][key] = next
			states = append(states, store.StateRow{Table: c.Table, Key: key, Vals: next})
		}
	}
	in.pending = in.pending[:0]
	_, err := in.write(ctx, &events, &states)
	return err
}

func (in *Ingester) write(ctx context.Context, events *[]event.Event, states *[]store.StateRow) (int64, error) {
	if len(*events) == 0 && len(*states) == 0 {
		return 0, nil
	}
	n, err := in.w.Write(ctx, *events, *states)
	if err != nil {
		return 0, err
	}
	in.deliveries += n
	in.tel.written()
	*events, *states = (*events)[:0], (*states)[:0]
	return n, nil
}
