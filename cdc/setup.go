package cdc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/event"
)

// Preflight checks that the database can feed the relay: wal_level is
// logical and the role may replicate.
func Preflight(ctx context.Context, conn *pgx.Conn) error {
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w (it is %q): set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", ErrWalLevel, level)
	}
	var canReplicate bool
	var role string
	err := conn.QueryRow(ctx, "SELECT rolname, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&role, &canReplicate)
	if err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return fmt.Errorf("%w: run ALTER ROLE %s WITH REPLICATION as a superuser", ErrNoReplication, pgx.Identifier{role}.Sanitize())
	}
	return nil
}

// Columns returns, for each of the given tables that exists in schema
// public, its column names in order. Missing tables are absent from the map.
func Columns(ctx context.Context, conn *pgx.Conn, tables []string) (map[string][]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT c.relname, a.attname
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY($1)
		ORDER BY c.relname, a.attnum`, tables)
	if err != nil {
		return nil, fmt.Errorf("read table columns: %w", err)
	}
	out := map[string][]string{}
	var table, col string
	_, err = pgx.ForEachRow(rows, []any{&table, &col}, func() error {
		out[table] = append(out[table], col)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read table columns: %w", err)
	}
	return out, nil
}

// EnsurePublication creates the publication for tables when it is missing,
// and adds tables it lacks when it exists. It never removes a table.
// It returns the tables it added.
func EnsurePublication(ctx context.Context, conn *pgx.Conn, name string, tables []string) ([]string, error) {
	if len(tables) == 0 {
		return nil, errors.New("no tables to publish")
	}
	ident := pgx.Identifier{name}.Sanitize()
	var allTables bool
	err := conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", name).Scan(&allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		list := quoteTables(tables)
		stmt := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident, list)
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create publication %s: %w%s", name, err, publicationHint(err, stmt))
		}
		return tables, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	if allTables {
		return nil, nil
	}
	rows, err := conn.Query(ctx, "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'", name)
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	present := map[string]bool{}
	for _, t := range have {
		present[t] = true
	}
	var missing []string
	for _, t := range tables {
		if !present[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	stmt := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", ident, quoteTables(missing))
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return nil, fmt.Errorf("add tables to publication %s: %w%s", name, err, publicationHint(err, stmt))
	}
	return missing, nil
}

// publicationHint says how to fix a publication the relay's role may not
// create or change: the tables' owner or a superuser runs the statement once.
func publicationHint(err error, stmt string) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return "; the relay's role does not own the watched tables: have their owner or a superuser run " + stmt + " once"
	}
	return ""
}

func quoteTables(tables []string) string {
	sorted := append([]string(nil), tables...)
	sort.Strings(sorted)
	parts := make([]string, len(sorted))
	for i, t := range sorted {
		parts[i] = pgx.Identifier{"public", t}.Sanitize()
	}
	return strings.Join(parts, ", ")
}

// SlotStatus describes a replication slot as the server sees it.
type SlotStatus struct {
	Exists         bool
	Plugin         string
	Database       string
	Active         bool
	ActivePID      int32
	ConfirmedFlush event.LSN
	// WALStatus is pg_replication_slots.wal_status: reserved, extended,
	// unreserved or lost.
	WALStatus string
	// RetainedBytes is how much WAL the slot holds back from removal.
	RetainedBytes int64
}

// Slot reads the status of a replication slot.
func Slot(ctx context.Context, conn *pgx.Conn, name string) (SlotStatus, error) {
	var st SlotStatus
	var confirmed *string
	var pid *int32
	var walStatus *string
	var retained *int64
	err := conn.QueryRow(ctx, `
		SELECT plugin, database, active, active_pid, confirmed_flush_lsn::text, wal_status,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&st.Plugin, &st.Database, &st.Active, &pid, &confirmed, &walStatus, &retained)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read slot %s: %w", name, err)
	}
	st.Exists = true
	if pid != nil {
		st.ActivePID = *pid
	}
	if walStatus != nil {
		st.WALStatus = *walStatus
	}
	if retained != nil {
		st.RetainedBytes = *retained
	}
	if confirmed != nil {
		if st.ConfirmedFlush, err = event.ParseLSN(*confirmed); err != nil {
			return st, err
		}
	}
	return st, nil
}

// DropSlot drops a replication slot. It is the explicit operation behind
// `relay slot drop`; the feed never drops a slot that was confirmed.
func DropSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name); err != nil {
		return fmt.Errorf("drop replication slot %s: %w", name, err)
	}
	return nil
}
