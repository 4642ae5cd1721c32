package store

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
)

// StateRow is the relay's record of one watched row. Vals nil deletes it.
type StateRow struct {
	Table string
	Key   string
	Vals  event.Row
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

// RowState loads the recorded state of the given rows of a table. Rows with
// no record are absent from the result. It sees the writer's own writes.
func (w *Writer) RowState(ctx context.Context, table string, keys []string) (map[string]event.Row, error) {
	return w.s.rowState(ctx, w.tx, w.slot, table, keys)
}

// RowState reads the recorded state of table's rows with keys, outside
// any store transaction: for a feed that has nothing of its own in the
// store that the read would need to see (see ingest's prior).
func (s *Store) RowState(ctx context.Context, slot, table string, keys []string) (map[string]event.Row, error) {
	return s.rowState(ctx, s.hot, slot, table, keys)
}

// rowState reads the state of table's rows with keys through q: a store
// transaction or the hot pool.
func (s *Store) rowState(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, slot, table string, keys []string) (map[string]event.Row, error) {
	rows, err := q.Query(ctx, s.q(rowStateSQL), slot, table, keys)
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
	_, _, err := x.w.results(x.br, x.nState, nil, 0)
	return err
}

// Close abandons what was not read yet. It is safe to call after Finish.
func (x *Exchange) Close() {
	if !x.closed {
		x.closed = true
		x.br.Close()
	}
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
			SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::text[]) AS u
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
