package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/event"
)

// Checkpoint states, as stored.
const (
	StateSeeding = "seeding"
	StateReady   = "ready"
)

// Position returns the persisted change-feed position of a slot and its
// state ("" when the relay never created the slot).
func (s *Store) Position(ctx context.Context, slot string) (event.LSN, string, error) {
	var lsn int64
	var state string
	err := s.pool.QueryRow(ctx, s.q("SELECT lsn, state FROM {{schema}}.checkpoints WHERE slot = $1"), slot).Scan(&lsn, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read checkpoint: %w", err)
	}
	return event.LSN(lsn), state, nil
}

// MarkSeeding records that the slot is being (re)created and forgets the
// row state of an earlier attempt.
func (s *Store) MarkSeeding(ctx context.Context, slot string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q(`INSERT INTO {{schema}}.checkpoints (slot, lsn, state) VALUES ($1, 0, 'seeding')
			ON CONFLICT (slot) DO UPDATE SET lsn = 0, state = 'seeding', updated_at = now()`), slot); err != nil {
			return fmt.Errorf("mark seeding: %w", err)
		}
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("clear row state: %w", err)
		}
		return nil
	})
}

// StateRow is the relay's record of one watched row. Vals nil deletes it.
type StateRow struct {
	Table string
	Key   string
	Vals  event.Row
}

// Seed stores the initial row state read from the slot's snapshot and marks
// the slot ready at start, in one transaction.
func (s *Store) Seed(ctx context.Context, slot string, start event.LSN, rows func(yield func(StateRow) error) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("clear row state: %w", err)
		}
		const batch = 5000
		buf := make([][]any, 0, batch)
		flush := func() error {
			if len(buf) == 0 {
				return nil
			}
			_, err := tx.CopyFrom(ctx, pgx.Identifier{s.name, "row_state"}, []string{"slot", "tbl", "pk", "vals"}, pgx.CopyFromRows(buf))
			buf = buf[:0]
			return err
		}
		err := rows(func(r StateRow) error {
			vals, err := appendRow(nil, r.Vals)
			if err != nil {
				return err
			}
			buf = append(buf, []any{slot, r.Table, r.Key, vals})
			if len(buf) == batch {
				return flush()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("seed row state: %w", err)
		}
		if err := flush(); err != nil {
			return fmt.Errorf("seed row state: %w", err)
		}
		// The table may have grown from nothing to millions of rows: without
		// fresh statistics the planner reads it whole for every lookup of
		// prior state until autovacuum gets to it.
		if _, err := tx.Exec(ctx, s.q("ANALYZE {{schema}}.row_state")); err != nil {
			return fmt.Errorf("analyze row state: %w", err)
		}
		tag, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, state = 'ready', updated_at = now()
			WHERE slot = $1 AND state = 'seeding'`), slot, int64(start))
		if err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("save checkpoint: slot %s is not being seeded", slot)
		}
		return nil
	})
}

// Sync makes every store transaction committed so far durable, the ones
// that did not wait for the disk (Writer) among them: it commits a write
// of its own that waits for the disk, which flushes the WAL up to its
// commit record and so everything committed before it. at is the position
// the caller last stored: if the store's is another, PostgreSQL forgot
// writes that had not reached the disk, and Sync fails (ErrPositionMoved)
// rather than make the rest durable without them.
func (s *Store) Sync(ctx context.Context, slot string, at event.LSN) error {
	n := 0
	err := s.hotStatement(ctx, durable, s.q(`UPDATE {{schema}}.checkpoints SET updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn = $2 RETURNING 1`), []any{slot, int64(at)},
		func(rows pgx.Rows) error {
			for rows.Next() {
				n++
			}
			return rows.Err()
		})
	if err != nil {
		return fmt.Errorf("sync the store: %w", err)
	}
	if n != 1 {
		// Without a row to write, the commit would not wait for the disk.
		return fmt.Errorf("sync the store: %w", s.positionMoved(ctx, slot, at))
	}
	return nil
}

// ErrPositionMoved means that the store's position of a slot is not the one
// its writer last stored: PostgreSQL forgot writes that had not reached the
// disk (it crashed or was stopped in immediate mode), or another process
// moved it. The change feed must resume from the store's position.
var ErrPositionMoved = errors.New("the store's position is not the one last stored")

// positionMoved describes why a write that expected the slot's position to
// be want found another.
func (s *Store) positionMoved(ctx context.Context, slot string, want event.LSN) error {
	lsn, state, err := s.Position(ctx, slot)
	switch {
	case err != nil:
		return fmt.Errorf("%w (slot %s, expected %s; reading it: %v)", ErrPositionMoved, slot, want, err)
	case state != StateReady:
		return fmt.Errorf("slot %s is not ready (state %q)", slot, state)
	default:
		return fmt.Errorf("%w: slot %s is at %s, expected %s (PostgreSQL lost writes that were not yet on disk?)", ErrPositionMoved, slot, lsn, want)
	}
}

// SaveIdle advances a ready slot's position from from to lsn when no
// transaction is pending. It fails (ErrPositionMoved) when the position is
// not from.
func (s *Store) SaveIdle(ctx context.Context, slot string, from, lsn event.LSN) error {
	tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn = $3`), slot, int64(lsn), int64(from))
	if err != nil {
		return fmt.Errorf("save idle checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("save idle checkpoint: %w", s.positionMoved(ctx, slot, from))
	}
	return nil
}

// AllRowState returns every recorded row of a table, for loading small
// lookup tables (companies) into memory.
func (s *Store) AllRowState(ctx context.Context, slot, table string) ([]StateRow, error) {
	rows, err := s.pool.Query(ctx, s.q("SELECT pk, vals FROM {{schema}}.row_state WHERE slot = $1 AND tbl = $2"), slot, table)
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	var out []StateRow
	var key string
	var vals rowScan
	_, err = pgx.ForEachRow(rows, []any{&key, &vals}, func() error {
		out = append(out, StateRow{Table: table, Key: key, Vals: vals.row})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	return out, nil
}

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

// WritePart stores events of a source transaction that is not completely
// read yet, with their deliveries, leasing as WriteLeasing does, in one
// transaction of its own that also records how far into the source
// transaction they go (p); a part recorded earlier that went further (a
// replay's first parts) is kept. The source transaction's row state and
// the slot's position are left to the writer that commits it; until then a
// relay that streams it again maps its first p.Changes changes for their
// row state only (Parts). It commits at once.
func (s *Store) WritePart(ctx context.Context, slot string, commitLSN event.LSN, p Part, events []event.Event, lease WriteLease) (int64, Leased, error) {
	w := &Writer{s: s, slot: slot, began: time.Now()}
	b := &pgx.Batch{}
	b.Queue(asyncSettingsSQL)
	b.Queue(s.q(`INSERT INTO {{schema}}.parts (slot, commit_lsn, changes, next_seq) VALUES ($1, $2, $3, $4)
		ON CONFLICT (slot, commit_lsn) DO UPDATE SET changes = excluded.changes, next_seq = excluded.next_seq
		WHERE parts.changes < excluded.changes`),
		slot, int64(commitLSN), p.Changes, int32(p.NextSeq))
	if len(events) > 0 {
		if err := w.queueEvents(ctx, b, events, lease); err != nil {
			return 0, Leased{}, err
		}
	}
	br := s.pool.SendBatch(ctx, b)
	for range 2 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return 0, Leased{}, fmt.Errorf("store part: %w", err)
		}
	}
	n, leased, err := w.results(br, 0, events)
	if err != nil {
		return 0, Leased{}, fmt.Errorf("store part: %w", err)
	}
	return n, leased, nil
}

// BeginWrite opens a store transaction for one source transaction.
func (s *Store) BeginWrite(ctx context.Context, slot string) (*Writer, error) {
	began := time.Now()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin store transaction: %w", err)
	}
	if _, err := tx.Exec(ctx, asyncSettingsSQL); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("begin store transaction: %w", err)
	}
	return &Writer{s: s, slot: slot, tx: tx, began: began}, nil
}

// RowState loads the recorded state of the given rows of a table. Rows with
// no record are absent from the result. It sees the writer's own writes.
func (w *Writer) RowState(ctx context.Context, table string, keys []string) (map[string]event.Row, error) {
	rows, err := w.tx.Query(ctx, w.s.q(rowStateSQL), w.slot, table, keys)
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	return readRowState(rows, table, len(keys))
}

const rowStateSQL = "SELECT pk, vals FROM {{schema}}.row_state WHERE slot = $1 AND tbl = $2 AND pk = ANY($3)"

// readRowState reads rowStateSQL's rows and closes them.
func readRowState(rows pgx.Rows, table string, n int) (map[string]event.Row, error) {
	out := make(map[string]event.Row, n)
	var key string
	var vals rowScan
	_, err := pgx.ForEachRow(rows, []any{&key, &vals}, func() error {
		out[key] = vals.row
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	return out, nil
}

// Exchange is a read of row state and row state changes sent together in
// one round trip (ReadThenWrite): the read's answer comes back as soon as
// the read has run, while the changes are still being applied, so the
// caller can work with it in the meantime. Read it with State, then Finish
// the write; Close releases the connection if either is skipped.
type Exchange struct {
	w      *Writer
	br     pgx.BatchResults
	tables []string
	keys   [][]string
	nState int
	read   bool
	closed bool
}

// ReadThenWrite reads the recorded state of the given rows (keys by table)
// and then applies the row state changes states, in one round trip. The
// read runs first, so it does not see the changes.
func (w *Writer) ReadThenWrite(ctx context.Context, reads map[string][]string, states []StateRow) (*Exchange, error) {
	x := &Exchange{w: w}
	b := &pgx.Batch{}
	for table, keys := range reads {
		x.tables, x.keys = append(x.tables, table), append(x.keys, keys)
		b.Queue(w.s.q(rowStateSQL), w.slot, table, keys)
	}
	if err := w.queueState(b, states); err != nil {
		return nil, err
	}
	x.nState = b.Len() - len(x.tables)
	x.br = w.tx.SendBatch(ctx, b)
	return x, nil
}

// State returns what the read found, by table and row key; rows with no
// record are absent.
func (x *Exchange) State() (map[string]map[string]event.Row, error) {
	x.read = true
	out := make(map[string]map[string]event.Row, len(x.tables))
	for i, table := range x.tables {
		rows, err := x.br.Query()
		if err != nil {
			return nil, fmt.Errorf("read row state of %s: %w", table, err)
		}
		got, err := readRowState(rows, table, len(x.keys[i]))
		if err != nil {
			return nil, err
		}
		out[table] = got
	}
	return out, nil
}

// Finish waits for the row state changes. It closes the exchange.
func (x *Exchange) Finish() error {
	if !x.read {
		if _, err := x.State(); err != nil {
			x.Close()
			return err
		}
	}
	x.closed = true
	_, _, err := x.w.results(x.br, x.nState, nil)
	return err
}

// Close abandons what was not read yet. It is safe to call after Finish.
func (x *Exchange) Close() {
	if !x.closed {
		x.closed = true
		x.br.Close()
	}
}

// Write stores events with one delivery per subscribed, active webhook of
// the event's company, and applies row state changes. Events already stored
// (a replayed transaction) are skipped with their deliveries, so replays
// never create a delivery twice. It returns the number of deliveries created.
func (w *Writer) Write(ctx context.Context, events []event.Event, states []StateRow) (int64, error) {
	n, _, err := w.WriteLeasing(ctx, events, states, WriteLease{})
	return n, err
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
}

// Len is the number of deliveries leased, ready and held.
func (l *Leased) Len() int { return len(l.Ready) + len(l.Held) }

// WriteLeasing is Write that also leases some of the new deliveries to
// lease.Owner, as Claim would once they are committed (see WriteLease). It
// returns the ready ones with their payloads, so the sender can start their
// first attempts as soon as the store transaction commits, without claiming
// them, and the held ones as ids. If the transaction rolls back they never
// existed; if the owner stops before sending them, their leases expire and
// any sender claims them. A zero lease leases nothing.
func (w *Writer) WriteLeasing(ctx context.Context, events []event.Event, states []StateRow, lease WriteLease) (int64, Leased, error) {
	// One round trip: the row state statements and the events statement go
	// to the server together.
	b := &pgx.Batch{}
	if err := w.queueState(b, states); err != nil {
		return 0, Leased{}, err
	}
	nState := b.Len()
	if len(events) > 0 {
		if err := w.queueEvents(ctx, b, events, lease); err != nil {
			return 0, Leased{}, err
		}
	}
	if b.Len() == 0 {
		return 0, Leased{}, nil
	}
	return w.results(w.tx.SendBatch(ctx, b), nState, events)
}

// results reads what queueState and queueEvents queued, in that order, and
// closes br: the number of deliveries created and the leased ones.
func (w *Writer) results(br pgx.BatchResults, nState int, events []event.Event) (int64, Leased, error) {
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
		if created, leased, err = w.scanEvents(br.QueryRow(), events); err != nil {
			br.Close()
			return 0, Leased{}, fmt.Errorf("store events: %w", err)
		}
	}
	if err := br.Close(); err != nil {
		return 0, Leased{}, fmt.Errorf("store events and row state: %w", err)
	}
	return created, leased, nil
}

// WriteCommit is BeginWrite, WriteLeasing and Commit(from, end) in one
// round trip: the statements go to the server as one pipeline, which
// PostgreSQL runs as one implicit transaction, so either all of it is
// stored or nothing. It fails, storing nothing, when slot is not ready or
// its position is not from.
func (s *Store) WriteCommit(ctx context.Context, slot string, events []event.Event, states []StateRow, lease WriteLease, from, end event.LSN) (int64, Leased, error) {
	w := &Writer{s: s, slot: slot, began: time.Now()}
	b := &pgx.Batch{}
	b.Queue(asyncSettingsSQL)
	// Next, so that a slot that is not ready stops the rest: the division
	// fails when no checkpoint row was updated.
	b.Queue(s.q(`WITH u AS (
			UPDATE {{schema}}.checkpoints SET lsn = $2, updated_at = now()
			WHERE slot = $1 AND state = 'ready' AND lsn = $3 RETURNING 1)
		SELECT 1 / (SELECT count(*)::int FROM u)`), slot, int64(end), int64(from))
	if err := w.queueState(b, states); err != nil {
		return 0, Leased{}, err
	}
	nState := b.Len() - 2
	if len(events) > 0 {
		if err := w.queueEvents(ctx, b, events, lease); err != nil {
			return 0, Leased{}, err
		}
	}
	br := s.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return 0, Leased{}, fmt.Errorf("set up store transaction: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		br.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "22012" { // division_by_zero
			return 0, Leased{}, fmt.Errorf("save checkpoint: %w", s.positionMoved(ctx, slot, from))
		}
		return 0, Leased{}, fmt.Errorf("save checkpoint: %w", err)
	}
	return w.results(br, nState, events)
}

// queueEvents queues the statement that stores events with one delivery per
// subscribed, active webhook of the event's company, leasing some of them
// (see WriteLeasing).
func (w *Writer) queueEvents(ctx context.Context, b *pgx.Batch, events []event.Event, lease WriteLease) error {
	key, err := w.s.deliveryKey(ctx)
	if err != nil {
		return err
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
	b.Queue(w.s.q(writeEventsSQL), w.slot, lsns, seqs, types, companies, tables, ops, times, bodies, traces,
		lease.Owner, lease.Lease.Microseconds(), limit, room, ids, rooms, holds, hold, holdLimit, key)
	return nil
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
var writeEventsSQL = `
WITH ev AS (
    INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, traceparent)
    SELECT $1, u.lsn, u.seq, u.typ, u.company, u.tbl, u.op, u.at, u.body, NULLIF(u.trace, '')
    FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[], $9::bytea[], $10::text[])
      AS u(lsn, seq, typ, company, tbl, op, at, body, trace)
    WHERE EXISTS (SELECT 1 FROM {{schema}}.webhooks wh WHERE ` + subscribers("wh", "u.company", "u.typ", "u.at") + `)
    ON CONFLICT (source, commit_lsn, seq) DO NOTHING
    RETURNING id, commit_lsn, seq, event_type, company_id, committed_at
), fan AS (
    SELECT ev.id AS event_id, ev.commit_lsn, ev.seq, ev.committed_at, wh.id AS webhook_id, ev.company_id, ev.event_type,
           row_number() OVER (PARTITION BY wh.id ORDER BY ev.commit_lsn, ev.seq) AS nth
    FROM ev JOIN {{schema}}.webhooks wh
      ON ` + subscribers("wh", "ev.company_id", "ev.event_type", "ev.committed_at") + `
), eligible AS (
    SELECT fan.*, fan.nth <= COALESCE(b.room, $14::int) AS fits,
           fan.nth <= COALESCE(b.room, $14::int) + COALESCE(b.hold, $18::int) AS holdable
    FROM fan LEFT JOIN unnest($15::bigint[], $16::int[], $17::int[]) AS b(webhook_id, room, hold) ON b.webhook_id = fan.webhook_id
), ranked AS (
    SELECT eligible.*, fits AND row_number() OVER (PARTITION BY fits ORDER BY commit_lsn, seq, webhook_id) <= $13 AS leased
    FROM eligible
), kinds AS (
    SELECT ranked.*,
           {{schema}}.delivery_id($20, $1, commit_lsn, seq, webhook_id, committed_at) AS id,
           NOT leased AND holdable
             AND row_number() OVER (PARTITION BY NOT leased AND holdable ORDER BY commit_lsn, seq, webhook_id) <= $19 AS held
    FROM ranked
), ins AS (
    INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, next_attempt_at, lease_owner, lease_until)
    SELECT k.id, k.event_id, k.webhook_id, k.company_id, k.event_type, now(),
           CASE WHEN k.leased OR k.held THEN $11 END,
           CASE WHEN k.leased OR k.held THEN now() + $12::bigint * interval '1 microsecond' END
    FROM kinds k
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins),
       array_agg(k.id), array_agg(e.commit_lsn), array_agg(e.seq), array_agg(k.webhook_id),
       array_agg(k.event_id), array_agg(e.committed_at), now(), now() + $12::bigint * interval '1 microsecond',
       array_agg(w.url), array_agg(w.secret), array_agg(w.headers::text),
       (SELECT array_agg(h.id ORDER BY h.commit_lsn, h.seq, h.webhook_id) FROM kinds h WHERE h.held),
       (SELECT array_agg(h.webhook_id ORDER BY h.commit_lsn, h.seq, h.webhook_id) FROM kinds h WHERE h.held)
FROM kinds k JOIN ev e ON e.id = k.event_id JOIN {{schema}}.webhooks w ON w.id = k.webhook_id
WHERE k.leased`

// subscribers is the condition on webhook w that it takes an event of the
// given company and type, committed at the given time: one of the
// company's, active and not deleted, subscribed to the type, and existing
// when the event was committed.
func subscribers(w, company, typ, committed string) string {
	return w + ".company_id = " + company + " AND " + w + ".active AND " + w + ".deleted_at IS NULL AND " +
		typ + " = ANY (" + w + ".events) AND " + w + ".created_at <= " + committed
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
	var urls, secrets, headers [][]byte
	if err := row.Scan(&created, &ids, &lsns, &seqs, &hooks, &eventIDs, &committed, &now, &until, &urls, &secrets, &headers,
		&heldIDs, &heldHooks); err != nil {
		return 0, Leased{}, err
	}
	leased := Leased{Due: now, At: w.began}
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
		w.s.endpointOf(hooks[i], urls[i], secrets[i], headers[i]).fill(&leased.Ready[len(leased.Ready)-1])
	}
	return created, leased, nil
}

// queueState queues the statements that apply row state changes.
func (w *Writer) queueState(b *pgx.Batch, states []StateRow) error {
	if len(states) == 0 {
		return nil
	}
	// The last state of a row wins; one statement may touch a row once.
	type key struct{ table, pk string }
	last := make(map[key]event.Row, len(states))
	order := make([]key, 0, len(states))
	for _, st := range states {
		k := key{st.Table, st.Key}
		if _, seen := last[k]; !seen {
			order = append(order, k)
		}
		last[k] = st.Vals
	}
	var upTables, upKeys, delTables, delKeys []string
	var upVals [][]byte
	var buf []byte // every row's JSON, one after the other
	for _, k := range order {
		v := last[k]
		if v == nil {
			delTables, delKeys = append(delTables, k.table), append(delKeys, k.pk)
			continue
		}
		start := len(buf)
		var err error
		if buf, err = appendRow(buf, v); err != nil {
			return fmt.Errorf("encode row state: %w", err)
		}
		upTables, upKeys, upVals = append(upTables, k.table), append(upKeys, k.pk), append(upVals, buf[start:len(buf):len(buf)])
	}
	if len(delKeys) > 0 {
		b.Queue(w.s.q(`DELETE FROM {{schema}}.row_state r USING unnest($2::text[], $3::text[]) AS d(tbl, pk)
			WHERE r.slot = $1 AND r.tbl = d.tbl AND r.pk = d.pk`), w.slot, delTables, delKeys)
	}
	if len(upKeys) > 0 {
		b.Queue(w.s.q(`INSERT INTO {{schema}}.row_state (slot, tbl, pk, vals)
			SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS u
			ON CONFLICT (slot, tbl, pk) DO UPDATE SET vals = EXCLUDED.vals`), w.slot, upTables, upKeys, upVals)
	}
	return nil
}

// TruncateState forgets every recorded row of a table.
func (w *Writer) TruncateState(ctx context.Context, table string) error {
	if _, err := w.tx.Exec(ctx, w.s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1 AND tbl = $2"), w.slot, table); err != nil {
		return fmt.Errorf("truncate row state of %s: %w", table, err)
	}
	return nil
}

// Commit moves the slot's position from from to end, forgets the parts of
// the source transactions before it (WritePart), and commits everything
// written. It rolls back when the slot is not ready or its position is not
// from (ErrPositionMoved).
func (w *Writer) Commit(ctx context.Context, from, end event.LSN) error {
	tag, err := w.tx.Exec(ctx, w.s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, updated_at = now()
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
	if err := w.tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit store transaction: %w", err)
	}
	return nil
}

// Rollback abandons the writer's transaction. It is safe to call twice.
func (w *Writer) Rollback(ctx context.Context) {
	_ = w.tx.Rollback(context.WithoutCancel(ctx))
}

// wholeNumbers undoes JSON's loss of integer types: the change feed reports
// integer columns as int64, and a recorded value must compare equal to the
// same value arriving in the stream.
func wholeNumbers(r event.Row) event.Row {
	for k, v := range r {
		if f, ok := v.(float64); ok {
			r[k] = whole(f)
		}
	}
	return r
}

// whole returns f as an int64 when it is a whole number that a float64
// holds exactly, and f otherwise.
func whole(f float64) any {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return f
}

// ForgetSlot deletes a slot's position and row record. Events and
// deliveries already stored are kept.
func (s *Store) ForgetSlot(ctx context.Context, slot string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("forget row state: %w", err)
		}
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.checkpoints WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("forget position: %w", err)
		}
		return nil
	})
}
