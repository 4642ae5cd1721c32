package store

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// A ready position is bound (the slot cannot have been confirmed past it)
// only while this version of the relay stored it: the statements of an
// earlier version move lsn alone, and the position they leave is unbound
// until the next write, idle position or seed of this one.
func TestPositionIsBoundWhenThisVersionStoredIt(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.addWebhook(t, "http://a.example/hook", "", "")
	want := func(lsn event.LSN, state string) {
		t.Helper()
		got, st, err := s.Position(ctx, "s")
		if err != nil || got != lsn || st != state {
			t.Fatalf("position %s %q %v, want %s %q", got, st, err, lsn, state)
		}
	}
	// What an earlier version of the relay does when it stores a position.
	earlier := func(lsn event.LSN) {
		t.Helper()
		if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $1 WHERE slot = 's'`), int64(lsn)); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.MarkSeeding(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	want(0, StateSeeding)
	if err := s.Seed(ctx, "s", 1, func(func(StateRow) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want(1, StateReady)

	earlier(5)
	want(5, StateReadyUnbound)
	if err := s.SaveIdle(ctx, "s", 5, 7); err != nil {
		t.Fatal(err)
	}
	want(7, StateReady)

	earlier(9)
	want(9, StateReadyUnbound)
	ev := []event.Event{{Type: "task.completed", CompanyID: 1, CommitLSN: 10, CommitTime: time.Now(), Table: "tasks", Op: event.Update, Body: []byte(`{}`)}}
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: ev}, 9, 11); err != nil {
		t.Fatal(err)
	}
	want(11, StateReady)

	earlier(12)
	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	ev[0].CommitLSN = 13
	if _, _, err := w.Write(ctx, Batch{Events: ev}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 12, 14); err != nil {
		t.Fatal(err)
	}
	want(14, StateReady)

	// Sync stores no position: it leaves an unbound one unbound.
	earlier(15)
	if err := s.Sync(ctx, "s", 15); err != nil {
		t.Fatal(err)
	}
	want(15, StateReadyUnbound)
}

// TestMigrationKeepsRowStateAsText: row state stored as jsonb before
// migration 0025 is read back the same after it, and written and read as
// the relay's own JSON text from then on.
func TestMigrationKeepsRowStateAsText(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.readySlot(t)
	// Back to the table as it was before 0025, holding a record as jsonb
	// stored it.
	s.mustExec(t, `ALTER TABLE {{schema}}.row_state ALTER COLUMN vals TYPE jsonb USING vals::jsonb`)
	s.mustExec(t, `DELETE FROM {{schema}}.schema_migrations WHERE version = 25`)
	s.mustExec(t, `INSERT INTO {{schema}}.row_state (slot, tbl, pk, vals) VALUES ('s', 'tasks', '1', '{"status": "open", "technician_id": 42, "done": false, "note": null}')`)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.RowState(ctx, "s", "tasks", []string{"1"})
	if err != nil {
		t.Fatal(err)
	}
	want := event.Row{"status": "open", "technician_id": int64(42), "done": false, "note": nil}
	if !reflect.DeepEqual(got["1"], want) {
		t.Fatalf("after the migration: %#v, want %#v", got["1"], want)
	}
	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Write(ctx, Batch{States: []StateRow{{Table: "tasks", Key: "1", Vals: event.Row{"status": "completed", "technician_id": int64(7)}}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, s.at(t), 20); err != nil {
		t.Fatal(err)
	}
	var raw, typ string
	if err := s.pool.QueryRow(ctx, s.q(`SELECT vals, pg_typeof(vals)::text FROM {{schema}}.row_state WHERE pk = '1'`)).Scan(&raw, &typ); err != nil {
		t.Fatal(err)
	}
	if typ != "text" || (raw != `{"status":"completed","technician_id":7}` && raw != `{"technician_id":7,"status":"completed"}`) {
		t.Fatalf("stored as %s: %s", typ, raw)
	}
}
