package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgtest"
)

// BenchmarkWriteBatch measures storing a batch of 500 events, each fanned
// out to one webhook, with their row state and the position, in one
// transaction. Reported per event.
func BenchmarkWriteBatch(b *testing.B) { benchmarkWrite(b, "task.completed", 1) }

// BenchmarkWriteBatchNoSubscriber is BenchmarkWriteBatch with events that
// no webhook takes: their row state and the position are stored, the
// events are not.
func BenchmarkWriteBatchNoSubscriber(b *testing.B) { benchmarkWrite(b, "task.created", 0) }

// benchmarkWrite stores batches of 2,000 events of type typ (the
// ingester's chunk: a plan that is quadratic in the batch shows at this
// size and hides at a few hundred), with one webhook that takes
// task.completed; each event makes fanOut deliveries.
func benchmarkWrite(b *testing.B, typ string, fanOut int) {
	st := benchStore(b, `INSERT INTO relay.webhooks (company_id, name, url, events, created_at)
		VALUES (1, 'w', 'http://127.0.0.1:1', '{task.completed}', now() - interval '1 day')`)
	const batch = 2000
	body := []byte(`{"event":"task.completed","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"task_id":12345,"asset_id":678,"technician_id":42}}`)
	lsn, prev := event.LSN(100), event.LSN(1)
	b.ReportAllocs()
	for b.Loop() {
		lsn++
		events := make([]event.Event, batch)
		states := make([]StateRow, batch)
		for i := range events {
			events[i] = event.Event{Type: typ, CompanyID: 1, CommitLSN: lsn, Seq: i, CommitTime: time.Now(), Table: "tasks", Op: event.Update, Body: body}
			states[i] = StateRow{Table: "tasks", Key: fmt.Sprint(i), Vals: event.Row{"status": "completed", "technician_id": int64(42)}}
		}
		writeBatch(b, st, Batch{Events: events, States: states}, int64(batch*fanOut), prev, lsn)
		prev = lsn
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
}

// benchStore opens a store in a database of its own, migrated, with one
// webhook inserted by insertWebhook and the slot "s" ready at position 1.
func benchStore(b *testing.B, insertWebhook string) *Store {
	b.Helper()
	ctx := context.Background()
	st, err := Open(ctx, pgtest.NewDatabase(b), "relay")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := st.pool.Exec(ctx, insertWebhook); err != nil {
		b.Fatal(err)
	}
	if err := st.MarkSeeding(ctx, "s"); err != nil {
		b.Fatal(err)
	}
	if err := st.Seed(ctx, "s", 1, func(func(StateRow) error) error { return nil }); err != nil {
		b.Fatal(err)
	}
	return st
}

// writeBatch stores batch in one store transaction that moves the slot
// "s" from prev to lsn, and fails b unless it made want deliveries.
func writeBatch(b *testing.B, st *Store, batch Batch, want int64, prev, lsn event.LSN) {
	ctx := context.Background()
	w, err := st.BeginWrite(ctx, "s")
	if err != nil {
		b.Fatal(err)
	}
	n, _, err := w.Write(ctx, batch)
	if err != nil || n != want {
		b.Fatalf("wrote %d deliveries: %v", n, err)
	}
	if err := w.Commit(ctx, prev, lsn); err != nil {
		b.Fatal(err)
	}
}
