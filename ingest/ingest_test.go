package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/ingest"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestCloseReleasesAnOpenTransaction: when the feed stops in the middle of
// a source transaction, Close rolls back its store transaction, so the
// store's pool can close (before, a relay stopped under load hung in
// store.Close).
func TestCloseReleasesAnOpenTransaction(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.NewDatabase(t), "relay")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := mapper.New(mapper.DefaultRules(), mapper.Options{DefaultLocation: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	in := ingest.New(st, m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 1})
	tx := event.Tx{CommitLSN: 100, CommitTime: time.Now()}
	if err := in.Begin(ctx, tx); err != nil {
		t.Fatal(err)
	}
	// A chunk of one: the change is written at once, in an open store
	// transaction.
	c := &event.Change{CommitLSN: 100, CommitTime: tx.CommitTime, Table: "users", Op: event.Insert,
		New: event.Row{"id": int64(1), "company_id": int64(1), "email": "a@b.example", "full_name": "A", "role": "technician", "active": true}}
	if err := in.Change(ctx, c); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	in.Close(cancelled)
	closed := make(chan struct{})
	go func() { st.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("store.Close hangs: the ingester's transaction still holds a connection")
	}
}
