package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

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
			vals, err := json.Marshal(r.Vals)
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

// SaveIdle advances a ready slot's position when no transaction is pending.
func (s *Store) SaveIdle(ctx context.Context, slot string, lsn event.LSN) error {
	_, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn < $2`), slot, int64(lsn))
	if err != nil {
		return fmt.Errorf("save idle checkpoint: %w", err)
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
	var vals event.Row
	_, err = pgx.ForEachRow(rows, []any{&key, &vals}, func() error {
		out = append(out, StateRow{Table: table, Key: key, Vals: wholeNumbers(vals)})
		vals = nil
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
type Writer struct {
	s    *Store
	slot string
	tx   pgx.Tx
}

// BeginWrite opens a store transaction for one source transaction.
func (s *Store) BeginWrite(ctx context.Context, slot string) (*Writer, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin store transaction: %w", err)
	}
	return &Writer{s: s, slot: slot, tx: tx}, nil
}

// RowState loads the recorded state of the given rows of a table. Rows with
// no record are absent from the result. It sees the writer's own writes.
func (w *Writer) RowState(ctx context.Context, table string, keys []string) (map[string]event.Row, error) {
	rows, err := w.tx.Query(ctx, w.s.q("SELECT pk, vals FROM {{schema}}.row_state WHERE slot = $1 AND tbl = $2 AND pk = ANY($3)"), w.slot, table, keys)
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	out := make(map[string]event.Row, len(keys))
	var key string
	var vals event.Row
	_, err = pgx.ForEachRow(rows, []any{&key, &vals}, func() error {
		out[key] = wholeNumbers(vals)
		vals = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read row state of %s: %w", table, err)
	}
	return out, nil
}

// Write stores events with one delivery per subscribed, active webhook of
// the event's company, and applies row state changes. Events already stored
// (a replayed transaction) are skipped with their deliveries, so replays
// never create a delivery twice. It returns the number of deliveries created.
func (w *Writer) Write(ctx context.Context, events []event.Event, states []StateRow) (int64, error) {
	// One round trip: the row state statements and the events statement go
	// to the server together.
	b := &pgx.Batch{}
	if err := w.queueState(b, states); err != nil {
		return 0, err
	}
	eventsAt := -1
	if len(events) > 0 {
		eventsAt = b.Len()
		w.queueEvents(b, events)
	}
	if b.Len() == 0 {
		return 0, nil
	}
	br := w.tx.SendBatch(ctx, b)
	var created int64
	for i := range b.Len() {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return 0, fmt.Errorf("store events and row state: %w", err)
		}
		if i == eventsAt {
			created = tag.RowsAffected()
		}
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("store events and row state: %w", err)
	}
	return created, nil
}

// queueEvents queues the statement that stores events with one delivery per
// subscribed, active webhook of the event's company.
func (w *Writer) queueEvents(b *pgx.Batch, events []event.Event) {
	n := len(events)
	lsns, seqs := make([]int64, n), make([]int32, n)
	types, tables, ops := make([]string, n), make([]string, n), make([]string, n)
	companies := make([]int64, n)
	times := make([]any, n)
	bodies := make([][]byte, n)
	traces := make([]string, n)
	for i, e := range events {
		lsns[i], seqs[i] = int64(e.CommitLSN), int32(e.Seq)
		types[i], tables[i], ops[i] = e.Type, e.Table, string(e.Op)
		companies[i], times[i], bodies[i] = e.CompanyID, e.CommitTime, e.Body
		traces[i] = e.TraceParent
	}
	b.Queue(w.s.q(`
		WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, traceparent)
			SELECT $1, u.lsn, u.seq, u.typ, u.company, u.tbl, u.op, u.at, u.body, NULLIF(u.trace, '')
			FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[], $9::bytea[], $10::text[])
			  AS u(lsn, seq, typ, company, tbl, op, at, body, trace)
			ON CONFLICT (source, commit_lsn, seq) DO NOTHING
			RETURNING id, event_type, company_id, committed_at
		)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, next_attempt_at)
		SELECT gen_random_uuid(), ev.id, wh.id, ev.company_id, ev.event_type, now()
		FROM ev JOIN {{schema}}.webhooks wh
		  ON wh.company_id = ev.company_id
		 AND wh.active AND wh.deleted_at IS NULL
		 AND ev.event_type = ANY (wh.events)
		 AND wh.created_at <= ev.committed_at`),
		w.slot, lsns, seqs, types, companies, tables, ops, times, bodies, traces)
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
	for _, k := range order {
		v := last[k]
		if v == nil {
			delTables, delKeys = append(delTables, k.table), append(delKeys, k.pk)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode row state: %w", err)
		}
		upTables, upKeys, upVals = append(upTables, k.table), append(upKeys, k.pk), append(upVals, b)
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

// Commit records end as the slot's position and commits everything written.
func (w *Writer) Commit(ctx context.Context, end event.LSN) error {
	tag, err := w.tx.Exec(ctx, w.s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, updated_at = now()
		WHERE slot = $1 AND state = 'ready'`), w.slot, int64(end))
	if err != nil {
		w.Rollback(ctx)
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		w.Rollback(ctx)
		return fmt.Errorf("save checkpoint: slot %s is not ready", w.slot)
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
		if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			r[k] = int64(f)
		}
	}
	return r
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
