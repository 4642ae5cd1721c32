package ingest_test

import (
	"context"
	"errors"
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
func (takeAll) Ahead(*store.Claimed, event.LSN) bool           { return true }
func (takeAll) Finished(uuid.UUID) (store.AttemptResult, bool) { return store.AttemptResult{}, false }
func (h takeAll) Stored(lsn event.LSN)                         { h.stored <- lsn }

// TestWriteInFlight: a group of which every delivery went ahead is written
// while the feed goes on: Flush returns with its write held up, the next
// transaction is mapped meanwhile, and the step after that waits for the
// write. When the write fails (here: the store's position moved under
// it), that step says so, nothing of either transaction is stored, and
// both are stored once streamed again.
func TestWriteInFlight(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 3, 100)
	h := takeAll{stored: make(chan event.LSN, 10)}
	f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 100, Handoff: h})
	t.Cleanup(func() { f.in.Close(context.Background()) })
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
	if err := f.in.Flush(ctx); !errors.Is(err, store.ErrPositionMoved) {
		t.Fatalf("the flush after a failed write in flight: %v, want %v", err, store.ErrPositionMoved)
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
