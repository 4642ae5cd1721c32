// Package store keeps the relay's durable state in PostgreSQL, in a schema
// of its own: the change feed's position, the relay's record of watched
// columns, webhooks, events, deliveries and attempts.
//
// It promises that the events and deliveries of a source transaction and the
// position just past that transaction are committed in one database
// transaction (a large source transaction's in parts, each part with a
// record of how far into the transaction it goes, and the position with its
// last: WritePart), and that a delivery is claimed by at most one sender at
// a time.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/secrets"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the relay's state database.
type Store struct {
	pool *pgxpool.Pool
	// hot runs the hot statements (storing events, their deliveries, row
	// state and the position; claims; attempt records): its connections
	// plan them once, generically, and commit without waiting for the disk
	// unless a statement asks (see hotParams).
	hot    *pgxpool.Pool
	schema string // quoted identifier
	name   string // unquoted schema name
	// box seals webhook secrets when they are written and opens them when
	// they are read; nil keeps them in plain text.
	box *secrets.Box
	// endpoints caches the webhooks of claimed deliveries.
	endpoints endpoints
	// key is the installation's key for delivery ids, once read.
	key struct {
		mu sync.Mutex
		b  []byte
	}
}

// UseSecrets makes the store encrypt webhook secrets it writes and decrypt
// those it reads with box (nil: plain text). Call it before using the store.
func (s *Store) UseSecrets(box *secrets.Box) { s.box = box }

// Open connects to the state database. It does not migrate; call Migrate.
func Open(ctx context.Context, url, schema string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse state database URL: %w", err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8
	}
	// Name the connections in pg_stat_activity unless the URL does.
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "smtm-relay-state"
	}
	// No just-in-time compilation unless the URL asks for it: the relay's
	// statements read by index, and a plan costed above jit_above_cost
	// (the admin list's, over a large history) spent 20 to 90 ms compiling
	// a query that runs in a few.
	if _, ok := cfg.ConnConfig.RuntimeParams["jit"]; !ok {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	hotCfg := cfg.Copy()
	hotCfg.MaxConns = hotConns
	for k, v := range hotParams {
		hotCfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to state database: %w", err)
	}
	hot, err := pgxpool.NewWithConfig(ctx, hotCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to state database: %w", err)
	}
	return &Store{pool: pool, hot: hot, schema: pgx.Identifier{schema}.Sanitize(), name: schema}, nil
}

// hotConns bounds the hot pool: one ingester writes at a time, and a few
// senders record and claim beside it.
const hotConns = 6

// Close closes the connections. It is safe to call more than once.
func (s *Store) Close() {
	s.pool.Close()
	s.hot.Close()
}

// Pool exposes the connection pool for components that share it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the quoted schema identifier, for building queries.
func (s *Store) Schema() string { return s.schema }

// q replaces {{schema}} in a query with the quoted schema name.
func (s *Store) q(sql string) string { return strings.ReplaceAll(sql, "{{schema}}", s.schema) }

// migrationLock is the advisory lock key that serialises concurrent migrations.
const migrationLock = 0x5e1a7_0001

// Migrate applies the embedded migrations that have not run yet, in order,
// each in its own transaction. Concurrent relays are serialised by an
// advisory lock, so it is safe to call from every process at start.
func (s *Store) Migrate(ctx context.Context) error { return s.migrate(ctx, math.MaxInt) }

// migrate applies the embedded migrations up to version last (see Migrate).
func (s *Store) migrate(ctx context.Context, last int) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock) //nolint:errcheck

	if _, err := conn.Exec(ctx, s.q(`CREATE SCHEMA IF NOT EXISTS {{schema}};
		CREATE TABLE IF NOT EXISTS {{schema}}.schema_migrations (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)); err != nil {
		return fmt.Errorf("migrate: create schema %s: %w", s.name, err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, s.q("SELECT version FROM {{schema}}.schema_migrations"))
	if err != nil {
		return fmt.Errorf("migrate: read versions: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("migrate: read versions: %w", err)
	}
	for _, v := range versions {
		applied[v] = true
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migrate: bad migration name %s", base)
		}
		if applied[v] || v > last {
			continue
		}
		body, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, s.q(string(body))); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, s.q("INSERT INTO {{schema}}.schema_migrations (version) VALUES ($1)"), v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", base, err)
		}
	}
	return nil
}

// ErrNotFound is returned when a requested row does not exist.
var ErrNotFound = errors.New("not found")
