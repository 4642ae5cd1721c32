package service_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/service"
)

// ForwardSlot refuses a slot that another process streams, and a slot the
// relay has no position for; the fault suite covers the rest (a missing or
// invalidated slot, nothing to forward, and the forward itself).
func TestForwardSlotRefuses(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t, platform.Schema)
	cfg := config.Default()
	cfg.Database.URL = url
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The publication first: a slot decodes with the catalog as of its
	// changes, and would not find a publication created after it.
	if _, err := conn.Exec(ctx, `CREATE PUBLICATION forward_test FOR TABLE tasks`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.Replication.Slot); err != nil {
		t.Fatal(err)
	}
	if _, _, err := service.ForwardSlot(ctx, cfg); err == nil || !strings.Contains(err.Error(), "the relay has no position for slot") {
		t.Fatalf("forward without a position: %v", err)
	}

	// A replication connection streaming the slot.
	rconn, err := pgconn.Connect(ctx, url+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(ctx)
	err = pglogrepl.StartReplication(ctx, rconn, cfg.Replication.Slot, 0,
		pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names 'forward_test'"}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = service.ForwardSlot(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "is in use by backend pid") {
		t.Fatalf("forward while the slot is streamed: %v", err)
	}
}
