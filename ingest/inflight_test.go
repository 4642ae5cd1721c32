package ingest_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/ingest"
	"github.com/smartmaintenance/relay/store"
)

// takeAll is a sender that takes every delivery ahead of its store write
// and finishes none by then, so that every group is written in flight.
type takeAll struct{ stored chan event.LSN }

func (takeAll) Reserve(*store.Leased) (store.WriteLease, bool) { return store.WriteLease{}, false }
func (takeAll) Committed(int64, store.Leased)                  {}
func (takeAll) AheadLease() (string, time.Duration)            { return "test", time.Minute }
func (takeAll) Ahead(*store.Claimed, event.LSN, bool) bool     { return true }
func (takeAll) Finished(uuid.UUID) (store.AttemptResult, bool, bool) {
	return store.AttemptResult{}, false, true
}
func (h takeAll) Stored(lsn event.LSN)                                   { h.stored <- lsn }
func (takeAll) AwaitAhead(context.Context, []uuid.UUID, <-chan struct{}) {}
func (takeAll) PartStored([]uuid.UUID)                                   {}

// inFlightFixture returns a fixture whose ingester hands every delivery
// to a takeAll sender, so that every group is written in flight, and that
// sender.
func inFlightFixture(t *testing.T) (*fixture, takeAll) {
	f := newFixture(t, 3, 100)
	h := takeAll{stored: make(chan event.LSN, 10)}
	f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: h})
	t.Cleanup(func() { f.in.Close(context.Background()) })
	return f, h
}

// TestWriteInFlight: a group of which every delivery went ahead is written
// while the feed goes on: Flush returns with its write held up, the next
// transaction is mapped and its write launched behind the first, and the
// step after that (Sync) waits for both. When the first write fails (here:
// the store's position moved under it), that step says so, nothing of
// either transaction is stored, and both are stored once streamed again.
func TestWriteInFlight(t *testing.T) {
	ctx := context.Background()
	f, h := inFlightFixture(t)
	next := func() event.LSN {
		t.Helper()
		select {
		case lsn := <-h.stored:
			return lsn
		case <-time.After(10 * time.Second):
			t.Fatal("the sender never learned of a write")
			return 0
		}
	}
	f.start()
	if lsn := next(); lsn != f.lsn {
		t.Fatalf("a session starting at %s told the sender %s was stored", f.lsn, lsn)
	}

	// Held up: the write's first statement moves the position, whose row
	// this transaction holds.
	lock, err := f.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `UPDATE relay.checkpoints SET lsn = lsn + 1 WHERE slot = 's'`); err != nil {
		t.Fatal(err)
	}
	f.tx(set{1, false})
	f.flush() // returns with the write in flight
	f.tx(set{2, false})
	select {
	case lsn := <-h.stored:
		t.Fatalf("stored up to %s while its write was held up", lsn)
	case <-time.After(200 * time.Millisecond):
	}
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The next group's write goes in flight behind the first.
	if err := f.in.Flush(ctx); err != nil {
		t.Fatalf("the flush of a group behind a write in flight: %v", err)
	}
	if err := f.in.Sync(ctx); !errors.Is(err, store.ErrPositionMoved) {
		t.Fatalf("the step after a failed write in flight: %v, want %v", err, store.ErrPositionMoved)
	}
	if got := f.deactivations(); got != 0 {
		t.Fatalf("%d user.deactivated stored by a failed write", got)
	}

	// The session starts again from the store's position (put back where
	// the failed write found it moved from) and reads both again.
	if _, err := f.st.Pool().Exec(ctx, `UPDATE relay.checkpoints SET lsn = lsn - 1 WHERE slot = 's'`); err != nil {
		t.Fatal(err)
	}
	f.start()
	if lsn := next(); lsn != f.lsn-20 {
		t.Fatalf("a session starting again at %s told the sender %s was stored", f.lsn-20, lsn)
	}
	f.lsn -= 20
	f.tx(set{1, false})
	f.tx(set{2, false})
	f.flush()
	if err := f.in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.deactivations(); got != 2 {
		t.Fatalf("%d user.deactivated once streamed again, want 2", got)
	}
	if lsn := next(); lsn != f.lsn+1 {
		t.Fatalf("the sender learned of a write up to %s, want %s", lsn, f.lsn+1)
	}
}

// keepNone is a sender that takes every delivery ahead of its store write
// and has let each go again by the time of the write (it waited in the
// sender's queue too long, or the sender is stopping).
type keepNone struct{ takeAll }

func (keepNone) Finished(uuid.UUID) (store.AttemptResult, bool, bool) {
	return store.AttemptResult{}, false, false
}

// TestAheadLetGoIsDecidedByTheWrite: a delivery the sender took ahead and
// let go before the write is stored by the write as any other, for any
// sender to claim, not leased to the one that let it go; one it still
// holds is stored leased to it.
func TestAheadLetGoIsDecidedByTheWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		h     ingest.Handoff
		owner string
	}{
		{"kept", takeAll{stored: make(chan event.LSN, 10)}, "test"},
		{"let go", keepNone{takeAll{stored: make(chan event.LSN, 10)}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, 1, 100)
			f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: tc.h})
			t.Cleanup(func() { f.in.Close(context.Background()) })
			f.start()
			f.tx(set{1, false})
			f.flush()
			if err := f.in.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			var owner string
			if err := f.st.Pool().QueryRow(ctx, `SELECT count(*), coalesce(max(lease_owner), '') FROM relay.deliveries`).Scan(&n, &owner); err != nil {
				t.Fatal(err)
			}
			if n != 1 || owner != tc.owner {
				t.Fatalf("%d deliveries stored, leased to %q; want 1, leased to %q", n, owner, tc.owner)
			}
		})
	}
}

// awaitHurry is a sender that takes every delivery ahead of its store
// write and finishes none before a step needs the write: each write in
// flight waits until it is hurried.
type awaitHurry struct{ takeAll }

func (awaitHurry) AwaitAhead(ctx context.Context, _ []uuid.UUID, hurry <-chan struct{}) {
	select {
	case <-hurry:
	case <-ctx.Done():
	}
}

// TestWritesInFlightStoreInOrder: groups launched while the writes before
// them wait (here: for first attempts that do not end) go in flight behind
// them; the step that needs them (Sync) ends their wait, and they are
// stored in the feed's order, the sender learning of each in that order,
// with a row changed in several of them keeping its transitions. When the
// webhooks' filters changed under writes in flight, the first is refused
// and the ones behind it fail with it; that step decides and writes them
// all again.
func TestWritesInFlightStoreInOrder(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 3, 100)
	h := awaitHurry{takeAll{stored: make(chan event.LSN, 10)}}
	f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: h})
	t.Cleanup(func() { f.in.Close(context.Background()) })
	f.start()
	<-h.stored

	for round, filter := range []bool{false, true} {
		var lsns []event.LSN
		for _, active := range []bool{false, true, false} {
			f.tx(set{round + 1, active})
			f.flush()
			lsns = append(lsns, f.lsn+1)
		}
		select {
		case lsn := <-h.stored:
			t.Fatalf("stored up to %s while the writes waited", lsn)
		case <-time.After(200 * time.Millisecond):
		}
		if filter {
			// A filter that takes the user's events: decided again, they
			// are stored as before.
			if _, err := f.st.Pool().Exec(ctx, `UPDATE relay.webhooks SET filter = 'data.user_id == 2'`); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.in.Sync(ctx); err != nil {
			t.Fatalf("filter changed %v: %v", filter, err)
		}
		for _, want := range lsns {
			select {
			case lsn := <-h.stored:
				if lsn != want {
					t.Fatalf("filter changed %v: the sender learned of %s, want %s (in the feed's order)", filter, lsn, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("filter changed %v: the sender never learned of the write up to %s", filter, want)
			}
		}
	}
	if got := f.deactivations(); got != 4 {
		t.Fatalf("%d user.deactivated stored, want 4 (two a round)", got)
	}
}

// TestIdleDuringAWriteIsStoredBySync: a quiet feed's position, given while
// a write is in flight, is stored by the next Sync once that write is
// over. The feed confirms it to the server after that Sync, and the
// store's position must never be behind what the slot was confirmed up to.
func TestIdleDuringAWriteIsStoredBySync(t *testing.T) {
	ctx := context.Background()
	f, _ := inFlightFixture(t)
	f.start()

	// Held up: the write's first statement moves the position, whose row
	// this transaction holds.
	lock, err := f.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `SELECT 1 FROM relay.checkpoints WHERE slot = 's' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	f.tx(set{1, false})
	f.flush() // returns with the write in flight
	idle := f.lsn + 5
	if err := f.in.Idle(ctx, idle); err != nil {
		t.Fatal(err)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var at int64
	if err := f.st.Pool().QueryRow(ctx, `SELECT lsn FROM relay.checkpoints WHERE slot = 's'`).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if event.LSN(at) != idle {
		t.Fatalf("the store's position after Sync is %s, want the idle position %s given during the write", event.LSN(at), idle)
	}
	if got := f.deactivations(); got != 1 {
		t.Fatalf("%d user.deactivated stored, want the write's 1", got)
	}
}

// TestPartsInFlightAreBounded: a large transaction's parts are written
// while the feed reads on, but with their writes held up (the store's
// parts locked) the feed waits after a few chunks rather than read the
// whole transaction into memory; once the writes go through, every event
// is stored, and the transaction's commit waits for its parts.
func TestPartsInFlightAreBounded(t *testing.T) {
	f := newFixture(t, partsUsers, partsChunk)
	// A sender that takes every delivery ahead: each part is written in
	// flight.
	f.in.Close(context.Background())
	f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: partsChunk,
		Handoff: takeAll{stored: make(chan event.LSN, 10)}})
	f.start()
	// Three parts in flight and the next chunk read: the fourth part
	// waits for the oldest.
	readWithPartsHeldUp(t, f, 5*partsChunk)
}

// TestPartWithDeliveriesLeftIsStoredFirst: a part with deliveries left to
// its write (here: no sender takes any ahead) is stored before the next
// chunk is read, so that none of the next chunk's deliveries goes ahead
// of them.
func TestPartWithDeliveriesLeftIsStoredFirst(t *testing.T) {
	f := newFixture(t, partsUsers, partsChunk)
	readWithPartsHeldUp(t, f, partsChunk)
}

const partsUsers, partsChunk = 1000, 100

// readWithPartsHeldUp feeds f's ingester a transaction that deactivates
// every user, in chunks, while the store's parts are locked, and fails if
// it reads as many changes as most before it waits for a part's write,
// or stores anything. Then it releases the lock and checks that the
// transaction is stored whole and its parts are gone.
func readWithPartsHeldUp(t *testing.T, f *fixture, most int64) {
	t.Helper()
	ctx := context.Background()
	lock, err := f.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `LOCK TABLE relay.parts IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	tx := event.Tx{CommitLSN: f.lsn + 10, EndLSN: f.lsn + 11, CommitTime: time.Now()}
	var read atomic.Int64
	done := make(chan error, 1)
	go func() {
		if err := f.in.Begin(ctx, tx); err != nil {
			done <- err
			return
		}
		for id := 1; id <= partsUsers; id++ {
			c := &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Table: "users", Op: event.Update, New: user(id, false)}
			if err := f.in.Change(ctx, c); err != nil {
				done <- err
				return
			}
			read.Add(1)
		}
		if err := f.in.Commit(ctx, tx); err != nil {
			done <- err
			return
		}
		done <- f.in.Flush(ctx)
	}()
	time.Sleep(500 * time.Millisecond)
	if got := read.Load(); got >= most {
		t.Fatalf("%d of %d changes read with the parts' writes held up; want fewer than %d", got, partsUsers, most)
	}
	if got := f.deactivations(); got != 0 {
		t.Fatalf("%d user.deactivated stored with the parts' writes held up", got)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the transaction was not stored once the parts' writes went through")
	}
	if got := f.deactivations(); got != partsUsers {
		t.Fatalf("%d user.deactivated stored, want %d", got, partsUsers)
	}
	if parts, err := f.st.Parts(ctx, "s"); err != nil || len(parts) != 0 {
		t.Fatalf("parts left after the transaction's commit: %v, %v", parts, err)
	}
}
