package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { Main(m) }

func TestServerIsLogical(t *testing.T) {
	url := NewDatabase(t, "CREATE TABLE t (id int primary key)")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "logical" {
		t.Fatalf("wal_level = %q, want logical", level)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	srv := Shared(t)
	ctx := context.Background()
	url := NewDatabase(t, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)")
	if err := srv.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: n=%d err=%v", n, err)
	}
}

// TestDropDatabaseDropsAnActiveSlot: a database whose slot a client keeps
// streaming, connecting again as soon as its walsender is terminated (as
// a relay still running does), is dropped with its slot; a slot left
// behind would stand in the way of every later test's slot of the same
// name.
func TestDropDatabaseDropsAnActiveSlot(t *testing.T) {
	srv := Shared(t)
	ctx := context.Background()
	name, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream := func() error {
		rconn, err := pgconn.Connect(ctx, srv.URL(name)+"&replication=database")
		if err != nil {
			return err
		}
		defer rconn.Close(ctx)
		if err := pglogrepl.StartReplication(ctx, rconn, "drop_me", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'none'"}}); err != nil {
			return err
		}
		for {
			if _, err := rconn.ReceiveMessage(ctx); err != nil {
				return err
			}
		}
	}
	rconn, err := pgconn.Connect(ctx, srv.URL(name)+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pglogrepl.CreateReplicationSlot(ctx, rconn, "drop_me", "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
		t.Fatal(err)
	}
	rconn.Close(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = stream() // ends when terminated; connect again at once
		}
	}()
	waitActive := func() {
		t.Helper()
		conn, err := pgx.Connect(ctx, srv.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for range 200 {
			var active bool
			if conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'drop_me'`).Scan(&active) == nil && active {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("the slot never became active")
	}
	waitActive()
	err = srv.DropDatabase(ctx, name)
	close(done)
	<-stopped
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var slots, dbs int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'drop_me'),
		(SELECT count(*) FROM pg_database WHERE datname = $1)`, name).Scan(&slots, &dbs); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || dbs != 0 {
		t.Fatalf("%d slots and %d databases left", slots, dbs)
	}
}
