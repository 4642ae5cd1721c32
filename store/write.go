package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/smartmaintenance/relay/event"
)

// Writer writes what one source transaction produces: events, their
// deliveries and row state, and finally the position past the transaction,
// all in one database transaction of the store.
//
// Its commits (and those of WriteCommit and WritePart) do not wait for the
// disk: the leased deliveries' first attempts start as soon as the commit
// is visible, one disk flush earlier. A PostgreSQL crash can forget the
// last fraction of a second of them, events, deliveries, row state and
// position together, after some of those deliveries were sent; the change
// feed then streams the forgotten source transactions again, since the
// slot is confirmed only past what Sync made durable, and their deliveries
// are stored again under the same ids (delivery_id), so a receiver sees a
// repeated X-SMTM-Delivery, never a new one for the same event.
type Writer struct {
	s    *Store
	slot string
	tx   pgx.Tx
	// began is when the transaction was begun, by this process's clock: no
	// later than the database's now() in it, from which leases run.
	began time.Time
	// parts is set when a source transaction in it was stored in parts.
	parts bool
}

// SawParts tells the writer that a source transaction it commits was
// stored in parts (WritePart): Commit forgets them.
func (w *Writer) SawParts() { w.parts = true }

// Part is how far a source transaction stored in parts got: its first
// Changes changes produced the events stored, numbered below NextSeq.
type Part struct {
	Changes int64
	NextSeq int
}

// Parts returns the parts stored of the slot's source transactions that
// are not committed yet, by commit LSN: at most the one a relay was
// storing when it stopped.
func (s *Store) Parts(ctx context.Context, slot string) (map[event.LSN]Part, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT commit_lsn, changes, next_seq FROM {{schema}}.parts WHERE slot = $1`), slot)
	if err != nil {
		return nil, fmt.Errorf("read stored parts: %w", err)
	}
	out := map[event.LSN]Part{}
	var lsn, changes int64
	var next int32
	_, err = pgx.ForEachRow(rows, []any{&lsn, &changes, &next}, func() error {
		out[event.LSN(lsn)] = Part{Changes: changes, NextSeq: int(next)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stored parts: %w", err)
	}
	return out, nil
}

// WritePart stores the events of a source transaction that is not
// completely read yet (batch; its row state changes are not stored in
// parts), with their deliveries, leasing as Write does, in one
// transaction of its own that also records how far into the source
// transaction they go (p); a part recorded earlier that went further (a
// replay's first parts) is kept. The source transaction's row state and
// the slot's position are left to the writer that commits it; until then a
// relay that streams it again maps its first p.Changes changes for their
// row state only (Parts). It commits at once.
func (s *Store) WritePart(ctx context.Context, slot string, commitLSN event.LSN, p Part, batch Batch) (int64, Leased, error) {
	n, leased, err := s.writePart(ctx, slot, commitLSN, p, batch)
	if batch.WholeAt != 0 && errors.Is(err, errWebhooksMoved) {
		// Nothing was stored: decide as usual.
		batch.WholeAt = 0
		return s.writePart(ctx, slot, commitLSN, p, batch)
	}
	return n, leased, err
}

func (s *Store) writePart(ctx context.Context, slot string, commitLSN event.LSN, p Part, batch Batch) (int64, Leased, error) {
	if len(batch.States) > 0 {
		return 0, Leased{}, errors.New("store part: row state is stored with the commit, not in parts")
	}
	events := batch.Events
	w := &Writer{s: s, slot: slot, began: time.Now()}
	b := &pgx.Batch{}
	b.Queue(s.q(`INSERT INTO {{schema}}.parts (slot, commit_lsn, changes, next_seq) VALUES ($1, $2, $3, $4)
		ON CONFLICT (slot, commit_lsn) DO UPDATE SET changes = excluded.changes, next_seq = excluded.next_seq
		WHERE parts.changes < excluded.changes`),
		slot, int64(commitLSN), p.Changes, int32(p.NextSeq))
	var wholeAt int64
	if len(events) > 0 {
		var err error
		if wholeAt, err = w.queueEvents(ctx, b, batch, true); err != nil {
			return 0, Leased{}, err
		}
	}
	br := s.hot.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return 0, Leased{}, fmt.Errorf("store part: %w", err)
	}
	n, leased, err := w.results(br, 0, events, wholeAt)
	if err != nil {
		return 0, Leased{}, fmt.Errorf("store part: %w", err)
	}
	return n, leased, nil
}

// BeginWrite opens a store transaction for one source transaction.
func (s *Store) BeginWrite(ctx context.Context, slot string) (*Writer, error) {
	began := time.Now()
	tx, err := s.hot.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin store transaction: %w", err)
	}
	return &Writer{s: s, slot: slot, tx: tx, began: began}, nil
}

// Batch is what one write stores: events, each with one delivery per
// subscribed, active webhook of its company, some of which it leases to a
// sender (Lease), and row state changes (States).
type Batch struct {
	Events []event.Event
	States []StateRow
	Lease  WriteLease
	// Filtering is what the webhooks' filters decided about Events.
	Filtering Filtering
	// Ahead are deliveries of Events that Lease.Owner took before the
	// write, deciding from its own copy of the webhooks (see FanOut), and
	// may have sent already. Each is stored whatever the webhooks are now,
	// leased to Lease.Owner for Lease.Lease and due at once, under the id
	// DeliveryID gives it; its event is stored with it. It does not count
	// in the lease's limits and is not returned as leased: its sender has
	// it.
	Ahead []Ahead
	// WholeAt, when not zero, says that Ahead holds every delivery that
	// the webhooks of this version (FanOut.Version) make of Events, none
	// let go since. A write that commits as it is sent (WriteCommit,
	// WritePart) then stores the events with those deliveries alone, and
	// no other fan-out, lease or filter check, in a statement that costs
	// PostgreSQL a fraction of the full one (writeAheadSQL), if the
	// webhooks' version is still WholeAt; if it moved, the write decides
	// as usual. The result is the same either way.
	WholeAt int64
}

// Ahead names a delivery of a batch's event that its sender took before
// the write: the event by its place in the feed, and the webhook.
type Ahead struct {
	CommitLSN event.LSN
	Seq       int
	WebhookID int64
	// ID is the delivery's id, as DeliveryID gives it (the one its sender
	// sent it under); computed from the batch's event when zero.
	ID uuid.UUID
	// Result is the first attempt's result when it was over before the
	// write: the delivery is then stored as the attempt left it
	// (delivered, retrying or failed; not leased) with the attempt, as
	// RecordAttempts would record it. It must be attempt 1, neither
	// aborted nor asking for a pause (those are recorded once stored).
	Result *AttemptResult
}

// aheadArgs returns the parameters of the deliveries taken ahead for
// writeEventsSQL: eleven arrays. An Ahead without its ID gets the one
// DeliveryID gives it, keyed with key, from its event in events.
func aheadArgs(key []byte, source string, events []event.Event, ahead []Ahead) ([]any, error) {
	n := len(ahead)
	lsns, seqs, hooks := make([]int64, n), make([]int32, n), make([]int64, n)
	statuses, errs, snippets := make([]string, n), make([]string, n), make([]string, n)
	started, durations, codes, retry := make([]time.Time, n), make([]float64, n), make([]int32, n), make([]int64, n)
	ids := make([][16]byte, n) // not []uuid.UUID, which pgx encodes as text, one string each
	var committed map[[2]int64]time.Time
	for i, a := range ahead {
		lsns[i], seqs[i], hooks[i] = int64(a.CommitLSN), int32(a.Seq), a.WebhookID
		ids[i] = a.ID
		if a.ID == uuid.Nil {
			if committed == nil {
				committed = make(map[[2]int64]time.Time, len(events))
				for _, e := range events {
					committed[[2]int64{int64(e.CommitLSN), int64(e.Seq)}] = e.CommitTime
				}
			}
			at, ok := committed[[2]int64{int64(a.CommitLSN), int64(a.Seq)}]
			if !ok {
				return nil, fmt.Errorf("store events: a delivery taken ahead names event %s/%d, which is not in the batch", a.CommitLSN, a.Seq)
			}
			ids[i] = DeliveryID(key, source, a.CommitLSN, a.Seq, a.WebhookID, at)
		}
		started[i] = time.Unix(0, 0)
		r := a.Result
		if r == nil {
			continue
		}
		switch {
		case r.Attempt != 1 || r.Aborted || r.PauseWebhook > 0:
			return nil, fmt.Errorf("store events: the result of attempt %d of delivery %s cannot be stored with it (aborted %v, pause %v)",
				r.Attempt, r.DeliveryID, r.Aborted, r.PauseWebhook)
		case r.Status != StatusDelivered && r.Status != StatusRetrying && r.Status != StatusFailed:
			return nil, fmt.Errorf("store events: delivery %s: bad status %q", r.DeliveryID, r.Status)
		}
		statuses[i], started[i], durations[i] = string(r.Status), r.StartedAt, float64(r.Duration)/float64(time.Millisecond)
		codes[i], errs[i], snippets[i] = int32(r.StatusCode), cleanText(r.Error), cleanText(r.Snippet)
		retry[i] = max(r.RetryIn, 0).Microseconds()
	}
	return []any{lsns, seqs, hooks, statuses, started, durations, codes, errs, snippets, retry, ids}, nil
}

// WriteLease says which of a write's new deliveries to lease to Owner for
// Lease as they are stored: each webhook's oldest new deliveries within its
// room, ready to send (Leased.Ready), up to Limit in all, and its next ones
// within its hold, as ids (Leased.Held), up to HeldLimit in all. The
// sender decides the numbers; the store applies them. The zero WriteLease
// leases nothing.
type WriteLease struct {
	Owner string
	Lease time.Duration
	// Limit is the most deliveries leased ready in all; Room is how many of
	// one webhook's may be, for the webhooks not in Webhooks.
	Limit, Room int
	// HeldLimit is the most deliveries leased held in all; Hold is how
	// many of one webhook's may be beyond its room, for the webhooks not in
	// Webhooks.
	HeldLimit, Hold int
	// Webhooks gives some webhooks a room and a hold of their own.
	Webhooks map[int64]WebhookLease
}

// WebhookLease is one webhook's room and hold in a WriteLease.
type WebhookLease struct{ Room, Hold int }

// Leased is what a write leased to the sender that asked for it: deliveries
// ready to send, with their payloads, and deliveries held as ids, whose
// payloads the sender reads when it has room for them (LoadHeld).
type Leased struct {
	Ready []Claimed
	Held  []Held
	// Due is the held deliveries' next attempt time, by the database's
	// clock: that of the store transaction that wrote them. Claims of
	// their webhooks look only before it (ClaimRequest.Before) while they
	// are held, so that they are not walked past.
	Due time.Time
	// At is when the leases began at the latest, by this process's clock:
	// each lasts at least WriteLease.Lease from then.
	At time.Time
	// Ahead is how many of the batch's Ahead deliveries the write stored
	// (all of them, but those of events stored before).
	Ahead int
	// WebhooksVersion is the webhooks' version (FanOut.Version) the write
	// saw; 0 when it stored no event.
	WebhooksVersion int64
}

// Held is a delivery leased as it was stored, without its payload.
type Held struct {
	ID        uuid.UUID
	WebhookID int64
}

// Add appends what another write of the same store transaction leased.
func (l *Leased) Add(o Leased) {
	l.Ready = append(l.Ready, o.Ready...)
	l.Held = append(l.Held, o.Held...)
	if l.At.IsZero() || (!o.At.IsZero() && o.At.Before(l.At)) {
		l.At = o.At
	}
	if len(o.Held) > 0 {
		l.Due = o.Due
	}
	l.Ahead += o.Ahead
	if o.WebhooksVersion != 0 {
		l.WebhooksVersion = o.WebhooksVersion
	}
}

// Len is the number of deliveries leased, ready and held.
func (l *Leased) Len() int { return len(l.Ready) + len(l.Held) }

// Write stores a batch in the writer's transaction: its events with one
// delivery per subscribed, active webhook of the event's company, and its
// row state changes. Events already stored (a replayed transaction) are
// skipped with their deliveries, so replays never create a delivery twice.
// It returns the number of deliveries created, and those it leased to
// b.Lease.Owner, as Claim would once they are committed (see WriteLease):
// the ready ones with their payloads, so the sender can start their first
// attempts as soon as the store transaction commits, without claiming them,
// and the held ones as ids. If the transaction rolls back they never
// existed; if the owner stops before sending them, their leases expire and
// any sender claims them.
//
// When b.Filtering was decided with filters that are no longer the
// webhooks' current ones, it stores the row state changes but no event,
// and returns ErrFiltersChanged: the caller decides again and writes the
// events alone (see Filtering). The transaction stays usable.
func (w *Writer) Write(ctx context.Context, b Batch) (int64, Leased, error) {
	// One round trip: the row state statements and the events statement go
	// to the server together.
	pb := &pgx.Batch{}
	if err := w.queueState(pb, b.States); err != nil {
		return 0, Leased{}, err
	}
	nState := pb.Len()
	if len(b.Events) > 0 {
		if _, err := w.queueEvents(ctx, pb, b, false); err != nil {
			return 0, Leased{}, err
		}
	}
	if pb.Len() == 0 {
		return 0, Leased{}, nil
	}
	return w.results(w.tx.SendBatch(ctx, pb), nState, b.Events, 0)
}

// results reads what queueState and queueEvents queued, in that order, and
// closes br: the number of deliveries created and the leased ones. A
// non-zero wholeAt says that queueEvents queued writeAheadSQL for that
// version of the webhooks.
func (w *Writer) results(br pgx.BatchResults, nState int, events []event.Event, wholeAt int64) (int64, Leased, error) {
	for range nState {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return 0, Leased{}, fmt.Errorf("store row state: %w", err)
		}
	}
	var created int64
	var leased Leased
	if len(events) > 0 {
		var err error
		if wholeAt != 0 {
			created, leased, err = w.scanAhead(br.QueryRow(), wholeAt)
		} else {
			created, leased, err = w.scanEvents(br.QueryRow(), events)
		}
		if err != nil {
			br.Close()
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				switch {
				case pgErr.Code == "22012": // division_by_zero: see writeEventsSQL
					err = ErrFiltersChanged
				case wholeAt != 0 && pgErr.Code == "22P02" && strings.Contains(pgErr.Message, webhooksMovedMark):
					err = errWebhooksMoved
				}
			}
			return 0, Leased{}, fmt.Errorf("store events: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return 0, Leased{}, fmt.Errorf("store events and row state: %w", err)
	}
	return created, leased, nil
}

// WriteCommit is BeginWrite, Write and Commit(from, end) in one
// round trip: the statements go to the server as one pipeline, which
// PostgreSQL runs as one implicit transaction, so either all of it is
// stored or nothing. It fails, storing nothing, when slot is not ready or
// its position is not from.
func (s *Store) WriteCommit(ctx context.Context, slot string, batch Batch, from, end event.LSN) (int64, Leased, error) {
	n, leased, err := s.writeCommit(ctx, slot, batch, from, end)
	if batch.WholeAt != 0 && errors.Is(err, errWebhooksMoved) {
		// Nothing was stored: decide as usual.
		batch.WholeAt = 0
		return s.writeCommit(ctx, slot, batch, from, end)
	}
	return n, leased, err
}

func (s *Store) writeCommit(ctx context.Context, slot string, batch Batch, from, end event.LSN) (int64, Leased, error) {
	events, states := batch.Events, batch.States
	w := &Writer{s: s, slot: slot, began: time.Now()}
	b := &pgx.Batch{}
	// First, so that a slot that is not ready stops the rest: the division
	// fails when no checkpoint row was updated.
	b.Queue(s.q(`WITH u AS (
			UPDATE {{schema}}.checkpoints SET lsn = $2, bound_lsn = $2, updated_at = now()
			WHERE slot = $1 AND state = 'ready' AND lsn = $3 RETURNING 1)
		SELECT 1 / (SELECT count(*)::int FROM u)`), slot, int64(end), int64(from))
	if err := w.queueState(b, states); err != nil {
		return 0, Leased{}, err
	}
	nState := b.Len() - 1
	var wholeAt int64
	if len(events) > 0 {
		var err error
		if wholeAt, err = w.queueEvents(ctx, b, batch, true); err != nil {
			return 0, Leased{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, Leased{}, fmt.Errorf("store transaction not sent: %w", err)
	}
	// The pipeline commits as it ends: see it through (see seeThrough).
	cctx, cancel := seeThrough(ctx)
	defer cancel()
	br := s.hot.SendBatch(cctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "22012" { // division_by_zero
			return 0, Leased{}, fmt.Errorf("save checkpoint: %w", s.positionMoved(ctx, slot, from))
		}
		return 0, Leased{}, fmt.Errorf("save checkpoint: %w", err)
	}
	return w.results(br, nState, events, wholeAt)
}

// queueEvents queues the statement that stores events with one delivery per
// subscribed, active webhook of the event's company whose filter takes it,
// leasing some of them (see Write). When the filters the batch was decided
// with are not the current ones, the statement stores nothing: strict
// makes it fail (for a pipeline that commits as it ends), else it answers
// that they changed (scanEvents).
//
// In a pipeline that commits as it ends (strict), a batch whose
// deliveries all went ahead (Batch.WholeAt) is stored by writeAheadSQL
// instead, which fails, storing nothing, when the webhooks' version moved
// (errWebhooksMoved); it then returns that version.
func (w *Writer) queueEvents(ctx context.Context, b *pgx.Batch, batch Batch, strict bool) (wholeAt int64, err error) {
	events, lease := batch.Events, batch.Lease
	if len(batch.Ahead) > 0 && (lease.Owner == "" || lease.Lease <= 0) {
		return 0, errors.New("store events: deliveries taken ahead need the lease owner and duration to store them under")
	}
	key, err := w.s.deliveryKey(ctx)
	if err != nil {
		return 0, err
	}
	n := len(events)
	lsns, seqs := make([]int64, n), make([]int32, n)
	types, tables, ops := make([]string, n), make([]string, n), make([]string, n)
	companies := make([]int64, n)
	times := make([]time.Time, n)
	bodies := make([][]byte, n)
	traces := make([]string, n)
	for i, e := range events {
		lsns[i], seqs[i] = int64(e.CommitLSN), int32(e.Seq)
		types[i], tables[i], ops[i] = e.Type, e.Table, string(e.Op)
		companies[i], times[i], bodies[i] = e.CompanyID, e.CommitTime, e.Body
		traces[i] = e.TraceParent
	}
	ahead, err := aheadArgs(key, w.slot, events, batch.Ahead)
	if err != nil {
		return 0, err
	}
	if strict && batch.WholeAt != 0 {
		args := []any{w.slot, lsns, seqs, types, companies, tables, ops, times, bodies, traces,
			lease.Owner, lease.Lease.Microseconds(), batch.WholeAt}
		b.Queue(w.s.q(writeAheadSQL), append(args, ahead...)...)
		return batch.WholeAt, nil
	}
	limit, room, hold, holdLimit := 0, 0, 0, 0
	var ids []int64
	var rooms, holds []int32
	if lease.Owner != "" && lease.Lease > 0 && (lease.Limit > 0 || lease.HeldLimit > 0) {
		limit, room = max(lease.Limit, 0), max(lease.Room, 0)
		hold, holdLimit = max(lease.Hold, 0), max(lease.HeldLimit, 0)
		ids = make([]int64, 0, len(lease.Webhooks))
		rooms, holds = make([]int32, 0, len(lease.Webhooks)), make([]int32, 0, len(lease.Webhooks))
		for id, wl := range lease.Webhooks {
			ids, rooms, holds = append(ids, id), append(rooms, int32(max(wl.Room, 0))), append(holds, int32(max(wl.Hold, 0)))
		}
	}
	args := []any{w.slot, lsns, seqs, types, companies, tables, ops, times, bodies, traces,
		lease.Owner, lease.Lease.Microseconds(), limit, room, ids, rooms, holds, hold, holdLimit, key}
	sql := writeEventsPlainSQL
	if len(batch.Filtering.Known) > 0 {
		sql = writeEventsSQL
		args = append(args, filterArgs(batch.Filtering)...)
	}
	b.Queue(w.s.q(sql), append(append(args, strict), ahead...)...)
	return 0, nil
}

// deliveryKey returns the installation's key for delivery ids (migration
// 0012), read once. (Passed to writeEventsSQL as a parameter: read from
// its table inside the statement, it made the statement fifty times
// slower, BenchmarkWriteBatch 1.4 ms per event instead of 28 µs.)
func (s *Store) deliveryKey(ctx context.Context) ([]byte, error) {
	s.key.mu.Lock()
	defer s.key.mu.Unlock()
	if s.key.b != nil {
		return s.key.b, nil
	}
	var k []byte
	if err := s.pool.QueryRow(ctx, s.q(`SELECT delivery_key FROM {{schema}}.installation`)).Scan(&k); err != nil {
		return nil, fmt.Errorf("read the installation's key for delivery ids: %w", err)
	}
	s.key.b = k
	return k, nil
}

// writeEventsSQL stores the events that at least one subscribed, active
// webhook of their company that existed when they were committed takes
// (subscribers), fans each out to one delivery per such webhook, leases
// the first deliveries within the limits given, holds the next ones within
// theirs, and returns how many deliveries it created, the leased ones with
// what sending them needs, and the held ones' ids. An event no webhook
// takes is not stored: only deliveries read events, and it would cost the
// write a row and two index entries for nothing (a replay decides again,
// as the first write did).
// A webhook's nth delivery of the write is leased when n is within its
// room (and the whole write's limit), held when within its room and hold.
// A delivery's id is derived from its event's place in the feed and its
// webhook (delivery_id), so that a replay stores it under the same id.
//
// A webhook with a filter takes the events that the filter does not refuse
// ($24-$26, decided by the caller, see Filtering), provided the filters the
// caller decided with ($21-$23) are the current ones of every filtered
// webhook of the events' companies (stale, read in the same snapshot as
// the fan-out). When they are not, nothing is stored and the statement
// either fails with division_by_zero (strict, the last parameter) or
// answers stale.
//
// A write whose caller knew of no filtered webhook in the events'
// companies (the usual case) runs writeEventsPlainSQL: the same statement
// without the filters' parameters, whose staleness check is one probe of
// an index that holds only filtered webhooks. Each part costs a statement
// of one event a few tens of microseconds of the database's CPU, mostly in
// setting up its plan, which every source transaction of the steady path
// pays (BenchmarkWriteCommitOne).
var (
	writeEventsSQL      = writeEvents(true)
	writeEventsPlainSQL = writeEvents(false)
)

// writeEvents returns writeEventsSQL (filtered) or writeEventsPlainSQL.
func writeEvents(filtered bool) string {
	stale := `
WITH stale AS (
    SELECT EXISTS (
        SELECT 1 FROM {{schema}}.webhooks f
        WHERE f.filter IS NOT NULL AND f.deleted_at IS NULL AND f.company_id = ANY ($5::bigint[])
          AND NOT EXISTS (
              SELECT 1 FROM unnest($21::bigint[], $22::text[], $23::text[]) AS k(id, filter, events)
              WHERE k.id = f.id AND k.filter = f.filter AND k.events = array_to_string(f.events, ','))
    ) AS s
), ex AS (
    SELECT * FROM unnest($24::bigint[], $25::int[], $26::bigint[]) AS x(lsn, seq, webhook_id)`
	strict, unfilteredEv, unfilteredFan := "$27", "\n                  AND "+unfiltered("wh", "u.lsn", "u.seq"), "\n     AND "+unfiltered("wh", "ev.commit_lsn", "ev.seq")
	if !filtered {
		stale = `
WITH stale AS (
    SELECT EXISTS (
        SELECT 1 FROM {{schema}}.webhooks f
        WHERE f.filter IS NOT NULL AND f.deleted_at IS NULL AND f.company_id = ANY ($5::bigint[])
    ) AS s`
		strict, unfilteredEv, unfilteredFan = "$21", "", ""
	}
	// The deliveries taken ahead: 11 arrays from $22 on ($28 filtered).
	first := 22
	if filtered {
		first = 28
	}
	return stale + `
), ahead AS (
    ` + aheadRows(first) + `
), ev AS (
    ` + insertEvents + `
    WHERE (SELECT CASE WHEN NOT st.s THEN true WHEN ` + strict + `::boolean THEN 1 / (st.s::int - 1) = 1 ELSE false END FROM stale st)
      AND (EXISTS (SELECT 1 FROM {{schema}}.webhooks wh WHERE ` + subscribers("wh", "u.company", "u.typ", "u.at") + unfilteredEv + `)
           OR EXISTS (SELECT 1 FROM ahead a WHERE a.lsn = u.lsn AND a.seq = u.seq))
    ON CONFLICT (source, commit_lsn, seq) DO NOTHING
    RETURNING id, commit_lsn, seq, event_type, company_id, committed_at
), fan AS (
    SELECT ev.id AS event_id, ev.commit_lsn, ev.seq, ev.committed_at, wh.id AS webhook_id, ev.company_id, ev.event_type,
           row_number() OVER (PARTITION BY wh.id ORDER BY ev.commit_lsn, ev.seq) AS nth, p.until AS paused_until, false AS ahead,
           NULL::uuid AS ahead_id
    FROM ev JOIN {{schema}}.webhooks wh
      ON ` + subscribers("wh", "ev.company_id", "ev.event_type", "ev.committed_at") + unfilteredFan + `
    LEFT JOIN {{schema}}.webhook_pauses p ON p.webhook_id = wh.id AND p.until > now()
    WHERE NOT EXISTS (SELECT 1 FROM ahead a WHERE a.lsn = ev.commit_lsn AND a.seq = ev.seq AND a.webhook_id = wh.id)
    UNION ALL
    SELECT ev.id, ev.commit_lsn, ev.seq, ev.committed_at, wh.id, ev.company_id, ev.event_type, 0, NULL, true, a.id
    FROM ev JOIN ahead a ON a.lsn = ev.commit_lsn AND a.seq = ev.seq
    JOIN {{schema}}.webhooks wh ON wh.id = a.webhook_id
), eligible AS (
    SELECT fan.*, NOT fan.ahead AND fan.paused_until IS NULL AND fan.nth <= COALESCE(b.room, $14::int) AS fits,
           NOT fan.ahead AND fan.paused_until IS NULL AND fan.nth <= COALESCE(b.room, $14::int) + COALESCE(b.hold, $18::int) AS holdable
    FROM fan LEFT JOIN unnest($15::bigint[], $16::int[], $17::int[]) AS b(webhook_id, room, hold) ON b.webhook_id = fan.webhook_id
), ranked AS (
    SELECT eligible.*, fits AND row_number() OVER (PARTITION BY fits ORDER BY commit_lsn, seq, webhook_id) <= $13 AS leased
    FROM eligible
), kinds AS (
    SELECT ranked.*,
           -- Taken ahead: the id its sender computed (DeliveryID) and sent
           -- it under. Computed here, each id cost about 4 µs of the
           -- database's CPU.
           COALESCE(ahead_id, {{schema}}.delivery_id($20, $1, commit_lsn, seq, webhook_id, committed_at)) AS id,
           NOT leased AND holdable
             AND row_number() OVER (PARTITION BY NOT leased AND holdable ORDER BY commit_lsn, seq, webhook_id) <= $19 AS held
    FROM ranked
), done AS (
    -- Taken ahead, with their first attempts over: stored as those
    -- attempts left them, not leased, with the attempts recorded.
    SELECT k.id, k.webhook_id, a.status, a.started_at, a.duration_ms, a.status_code, a.error, a.snippet, a.retry_us
    FROM kinds k JOIN ahead a ON a.lsn = k.commit_lsn AND a.seq = k.seq AND a.webhook_id = k.webhook_id
    WHERE k.ahead AND a.status <> ''
), ins AS (
    ` + insertDeliveries + `
    SELECT k.id, k.event_id, k.webhook_id, k.company_id, k.event_type,
           CASE WHEN d.status = 'retrying' THEN now() + d.retry_us * interval '1 microsecond'
                WHEN k.ahead THEN now() ELSE COALESCE(k.paused_until, now()) END,
           CASE WHEN d.id IS NULL AND (k.leased OR k.held OR k.ahead) THEN $11 END,
           CASE WHEN d.id IS NULL AND (k.leased OR k.held OR k.ahead) THEN now() + $12::bigint * interval '1 microsecond' END,
           COALESCE(d.status, 'pending'), CASE WHEN d.id IS NULL THEN 0 ELSE 1 END,
           NULLIF(d.status_code, 0), NULLIF(d.error, ''),
           CASE WHEN d.status IN ('delivered', 'failed') THEN now() END,
           -- A first attempt answered 2xx is kept in the row (migration
           -- 0023), any other in attempt_rows.
           CASE WHEN d.status = 'delivered' THEN d.started_at END, CASE WHEN d.status = 'delivered' THEN d.duration_ms END,
           CASE WHEN d.status = 'delivered' THEN NULLIF(d.status_code, 0) END, CASE WHEN d.status = 'delivered' THEN NULLIF(d.snippet, '') END,
           CASE WHEN d.status = 'delivered' THEN $11 END
    FROM kinds k LEFT JOIN done d ON d.id = k.id
    RETURNING 1
), att AS (
    ` + insertAttempts + `
    SELECT d.id, d.webhook_id, 1, d.started_at, d.duration_ms, NULLIF(d.status_code, 0), NULLIF(d.error, ''), NULLIF(d.snippet, ''), $11
    FROM done d
    WHERE d.status <> 'delivered'
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins),
       array_agg(k.id), array_agg(k.commit_lsn), array_agg(k.seq), array_agg(k.webhook_id),
       array_agg(k.event_id), array_agg(k.committed_at), now(), now() + $12::bigint * interval '1 microsecond',
       array_agg(w.url), array_agg(w.secret), array_agg(w.headers::text), array_agg(w.format),
       (SELECT array_agg(h.id ORDER BY h.commit_lsn, h.seq, h.webhook_id) FROM kinds h WHERE h.held),
       (SELECT array_agg(h.webhook_id ORDER BY h.commit_lsn, h.seq, h.webhook_id) FROM kinds h WHERE h.held),
       array_agg(w.standard_webhooks), ` + claimPreviousAgg + `,
       (SELECT s FROM stale),
       (SELECT count(*) FROM kinds h WHERE h.ahead),
       (SELECT version FROM {{schema}}.webhooks_version WHERE one)
FROM kinds k JOIN {{schema}}.webhooks w ON w.id = k.webhook_id
WHERE k.leased`
}

// aheadRows reads the deliveries taken ahead, as aheadArgs passes them
// from parameter first on, as the rows of a (writeEventsSQL,
// writeAheadSQL).
func aheadRows(first int) string {
	p := func(i int, typ string) string { return "$" + strconv.Itoa(first+i) + "::" + typ + "[]" }
	return `SELECT * FROM unnest(` + p(0, "bigint") + `, ` + p(1, "int") + `, ` + p(2, "bigint") + `, ` + p(3, "text") + `, ` +
		p(4, "timestamptz") + `, ` + p(5, "float8") + `, ` + p(6, "int") + `, ` + p(7, "text") + `, ` + p(8, "text") + `, ` + p(9, "bigint") + `, ` +
		p(10, "uuid") + `)
      AS a(lsn, seq, webhook_id, status, started_at, duration_ms, status_code, error, snippet, retry_us, id)`
}

// insertEvents inserts the batch's events, the rows u of $1 (the source)
// and the nine arrays $2-$10 (queueEvents), that its WHERE clause takes.
const insertEvents = `INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, traceparent)
    SELECT $1, u.lsn, u.seq, u.typ, u.company, u.tbl, u.op, u.at, u.body, NULLIF(u.trace, '')
    FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[], $9::bytea[], $10::text[])
      AS u(lsn, seq, typ, company, tbl, op, at, body, trace)`

// insertDeliveries and insertAttempts name the columns a write stores of
// a delivery, and of a first attempt over before it that was not
// answered 2xx (one answered 2xx is kept in the delivery's row, migration
// 0023).
const (
	insertDeliveries = `INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, next_attempt_at, lease_owner, lease_until,
                                       status, attempts, last_status_code, last_error, finished_at,
                                       first_started_at, first_duration_ms, first_status_code, first_snippet, first_sent_by)`
	insertAttempts = `INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error, response_snippet, sent_by)`
)

// subscribers is the condition on webhook w that it takes an event of the
// given company and type, committed at the given time: one of the
// company's, active and not deleted, subscribed to the type, and existing
// when the event was committed.
func subscribers(w, company, typ, committed string) string {
	return w + ".company_id = " + company + " AND " + w + ".active AND " + w + ".deleted_at IS NULL AND " +
		typ + " = ANY (" + w + ".events) AND " + w + ".created_at <= " + committed
}

// unfiltered is the condition on webhook w that its filter does not refuse
// the event at (lsn, seq) (see writeEventsSQL).
func unfiltered(w, lsn, seq string) string {
	return "(" + w + ".filter IS NULL OR NOT EXISTS (SELECT 1 FROM ex WHERE ex.lsn = " + lsn + " AND ex.seq = " + seq +
		" AND ex.webhook_id = " + w + ".id))"
}

// scanEvents reads writeEventsSQL's answer into the number of deliveries
// created and the leased deliveries, with their events' payloads.
func (w *Writer) scanEvents(row pgx.Row, events []event.Event) (int64, Leased, error) {
	var created int64
	var ids, heldIDs [][16]byte // not uuid.UUID, which pgx scans as text through sql.Scanner
	var lsns, hooks, eventIDs, heldHooks []int64
	var seqs []int32
	var committed []time.Time
	var now, until time.Time
	var urls, secrets, headers, formats, previous [][]byte
	var standard []bool
	var previousUntil []pgtype.Timestamptz
	var stale bool
	var ahead, version int64
	if err := row.Scan(&created, &ids, &lsns, &seqs, &hooks, &eventIDs, &committed, &now, &until, &urls, &secrets, &headers, &formats,
		&heldIDs, &heldHooks, &standard, &previous, &previousUntil, &stale, &ahead, &version); err != nil {
		return 0, Leased{}, err
	}
	if stale {
		return 0, Leased{}, ErrFiltersChanged
	}
	leased := Leased{Due: now, At: w.began, Ahead: int(ahead), WebhooksVersion: version}
	if len(heldIDs) > 0 {
		leased.Held = make([]Held, len(heldIDs))
		for i, id := range heldIDs {
			leased.Held[i] = Held{ID: uuid.UUID(id), WebhookID: heldHooks[i]}
		}
	}
	if len(ids) == 0 {
		return created, leased, nil
	}
	type pos struct {
		lsn int64
		seq int32
	}
	byPos := make(map[pos]*event.Event, len(events))
	for i := range events {
		byPos[pos{int64(events[i].CommitLSN), int32(events[i].Seq)}] = &events[i]
	}
	leased.Ready = make([]Claimed, 0, len(ids))
	for i, id := range ids {
		e := byPos[pos{lsns[i], seqs[i]}]
		if e == nil {
			return 0, Leased{}, fmt.Errorf("leased delivery %s: its event %s/%d is not in the batch", id, event.LSN(lsns[i]), seqs[i])
		}
		leased.Ready = append(leased.Ready, Claimed{ID: id, WebhookID: hooks[i], EventID: eventIDs[i], EventType: e.Type, CompanyID: e.CompanyID,
			TraceParent: e.TraceParent, NextAttemptAt: now, LeaseUntil: until, Body: e.Body,
			CreatedAt: now, CommittedAt: committed[i]})
		w.s.endpointOf(hooks[i], urls[i], secrets[i], headers[i], formats[i], signing{previous: previous[i], until: previousUntil[i].Time, standard: standard[i]}).fill(&leased.Ready[len(leased.Ready)-1])
	}
	return created, leased, nil
}

// Commit moves the slot's position from from to end, forgets the parts of
// the source transactions before it (WritePart), and commits everything
// written. It rolls back when the slot is not ready or its position is not
// from (ErrPositionMoved).
func (w *Writer) Commit(ctx context.Context, from, end event.LSN) error {
	tag, err := w.tx.Exec(ctx, w.s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, bound_lsn = $2, updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn = $3`), w.slot, int64(end), int64(from))
	if err != nil {
		w.Rollback(ctx)
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		w.Rollback(ctx)
		return fmt.Errorf("save checkpoint: %w", w.s.positionMoved(ctx, w.slot, from))
	}
	if w.parts {
		if _, err := w.tx.Exec(ctx, w.s.q(`DELETE FROM {{schema}}.parts WHERE slot = $1 AND commit_lsn < $2`), w.slot, int64(end)); err != nil {
			w.Rollback(ctx)
			return fmt.Errorf("forget stored parts: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		w.Rollback(ctx)
		return fmt.Errorf("commit store transaction: %w", err)
	}
	cctx, cancel := seeThrough(ctx)
	defer cancel()
	if err := w.tx.Commit(cctx); err != nil {
		return fmt.Errorf("commit store transaction: %w", err)
	}
	return nil
}

// seeThrough returns the context for a round trip that commits a store
// transaction: once it is sent, a stop (ctx ending) no longer cuts it short,
// for up to commitGrace. A commit cut short leaves its outcome unknown to
// the writer while the server may have committed it, and with it deliveries
// leased to a sender that never hears of them: they stay claimed until
// their leases expire, even across a graceful stop.
func seeThrough(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), commitGrace)
}

// commitGrace bounds how long a commit already sent is waited for once its
// context has ended.
const commitGrace = 10 * time.Second

// Rollback abandons the writer's transaction. It is safe to call twice.
func (w *Writer) Rollback(ctx context.Context) {
	_ = w.tx.Rollback(context.WithoutCancel(ctx))
}
