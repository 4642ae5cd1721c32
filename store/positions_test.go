package store

import (
	"context"
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
