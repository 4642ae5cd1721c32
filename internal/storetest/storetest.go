// Package storetest gives tests outside package store a migrated store on
// a fresh database of the test PostgreSQL (see package pgtest).
package storetest

import (
	"context"
	"testing"

	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/store"
)

// Open returns a store in schema "relay" of a new database, migrated, and
// closed when the test ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.NewDatabase(t), "relay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}
