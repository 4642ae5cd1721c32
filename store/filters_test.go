package store

import (
	"context"
	"errors"
	"testing"
)

// A webhook's filter refuses events by the caller's decision: no delivery
// for it, and no event when no webhook takes it. A write decided with
// filters that are not the current ones stores nothing and says so.
func TestWriteSkipsFilteredDeliveries(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET filter = 'data.n == 1' WHERE id = $1`), b); err != nil {
		t.Fatal(err)
	}
	known, err := s.WebhookFilters(ctx)
	if err != nil || len(known) != 1 || known[0].WebhookID != b || known[0].Filter != "data.n == 1" || known[0].CompanyID != 1 {
		t.Fatalf("WebhookFilters = %+v, %v", known, err)
	}
	evs := events(10, 3)
	// b refuses events 0 and 2; a has no filter (an exclusion of it is
	// ignored: it has no filter to decide with).
	f := Filtering{Known: known, Excluded: []Exclusion{{10, 0, b}, {10, 2, b}, {10, 1, a}}}
	created, _, err := s.WriteCommit(ctx, "s", Batch{Events: evs, Filtering: f}, s.at(t), 11)
	if err != nil || created != 4 {
		t.Fatalf("WriteCommit: created %d, %v; want 4 (3 for a, 1 for b)", created, err)
	}
	var toB []int32
	rows, _ := s.pool.Query(ctx, s.q(`SELECT e.seq FROM {{schema}}.deliveries d JOIN {{schema}}.events e ON e.id = d.event_id WHERE d.webhook_id = $1`), b)
	for rows.Next() {
		var seq int32
		rows.Scan(&seq)
		toB = append(toB, seq)
	}
	if len(toB) != 1 || toB[0] != 1 {
		t.Fatalf("webhook b got the events %v; want [1]", toB)
	}

	// Only b takes task.completed now: an event it refuses is not stored.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`), a); err != nil {
		t.Fatal(err)
	}
	created, _, err = s.WriteCommit(ctx, "s", Batch{Events: events(20, 1), Filtering: Filtering{Known: known, Excluded: []Exclusion{{20, 0, b}}}}, s.at(t), 21)
	var stored int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.events WHERE commit_lsn = 20`)).Scan(&stored)
	if err != nil || created != 0 || stored != 0 {
		t.Fatalf("an event every webhook refuses: created %d, stored %d, %v", created, stored, err)
	}

	// The filter changes after it was read: nothing is stored, in a
	// pipeline (the position does not move) or in an open transaction.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET filter = 'data.n == 2' WHERE id = $1`), b); err != nil {
		t.Fatal(err)
	}
	from := s.at(t)
	_, _, err = s.WriteCommit(ctx, "s", Batch{Events: events(30, 1), Filtering: Filtering{Known: known}}, from, 31)
	if !errors.Is(err, ErrFiltersChanged) || s.at(t) != from {
		t.Fatalf("WriteCommit with a changed filter: %v, position %v; want ErrFiltersChanged at %v", err, s.at(t), from)
	}
	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Rollback(ctx)
	if _, _, err := w.Write(ctx, Batch{Events: events(30, 1), Filtering: Filtering{Known: known}}); !errors.Is(err, ErrFiltersChanged) {
		t.Fatalf("Write with a changed filter: %v; want ErrFiltersChanged", err)
	}
	known, _ = s.WebhookFilters(ctx)
	if created, _, err := w.Write(ctx, Batch{Events: events(30, 1), Filtering: Filtering{Known: known}}); err != nil || created != 1 {
		t.Fatalf("Write again with the current filters: created %d, %v", created, err)
	}
	// A new webhook with a filter, or a filtered webhook's events changed,
	// is a change too.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET events = '{task.completed,task.assigned}' WHERE id = $1`), b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WritePart(ctx, "s", 40, Part{Changes: 1, NextSeq: 1}, Batch{Events: events(40, 1), Filtering: Filtering{Known: known}}); !errors.Is(err, ErrFiltersChanged) {
		t.Fatalf("WritePart after a filtered webhook's events changed: %v; want ErrFiltersChanged", err)
	}
	// A write whose caller knew of no filter (the plain statement) while
	// the events' company has a filtered webhook stores nothing either.
	if _, _, err := s.WritePart(ctx, "s", 50, Part{Changes: 1, NextSeq: 1}, Batch{Events: events(50, 1)}); !errors.Is(err, ErrFiltersChanged) {
		t.Fatalf("WritePart knowing of no filter: %v; want ErrFiltersChanged", err)
	}
	if _, _, err := w.Write(ctx, Batch{Events: events(50, 1)}); !errors.Is(err, ErrFiltersChanged) {
		t.Fatalf("Write knowing of no filter: %v; want ErrFiltersChanged", err)
	}
	w.Rollback(ctx)
	from = s.at(t)
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(50, 1)}, from, 51); !errors.Is(err, ErrFiltersChanged) || s.at(t) != from {
		t.Fatalf("WriteCommit knowing of no filter: %v, position %v; want ErrFiltersChanged at %v", err, s.at(t), from)
	}
	var n int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.events WHERE commit_lsn = 50`)).Scan(&n)
	if n != 0 {
		t.Fatalf("%d events stored by writes that knew of no filter", n)
	}
}
