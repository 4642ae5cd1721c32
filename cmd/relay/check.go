package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgconnect"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/service"
	"github.com/smartmaintenance/relay/store"
)

// checkTimeout bounds the whole database check: a server that accepts
// connections but does not answer should not hang a deployment script.
const checkTimeout = 30 * time.Second

// cmdCheck is `relay check`: the config file and environment, then, unless
// offline, what `relay run` needs of the databases.
func cmdCheck(c *cobra.Command, path string, offline bool) error {
	stdout := c.OutOrStdout()
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	m, err := checkConfig(cfg)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if !offline && cfg.Database.URL == "" {
		return fmt.Errorf("%w: database.url is required to check the database (or RELAY_DATABASE__URL); --offline checks the file only", service.ErrConfig)
	}
	fmt.Fprintf(stdout, "config OK: %d webhook(s) from %s, %d event type(s) in the rules\n",
		len(cfg.Webhooks.Endpoints), cfg.Webhooks.Source, len(m.EventTypes()))
	if offline {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.Context(), checkTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("%w: connect: %w", service.ErrDatabase, pgconnect.Explain(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	ch := &checker{cfg: cfg, m: m, conn: conn, out: stdout, errOut: c.ErrOrStderr()}
	if err := ch.run(ctx); err != nil {
		return fmt.Errorf("%w: %w", service.ErrDatabase, err)
	}
	switch {
	case ch.database > 0:
		return exitError{exitDatabase}
	case ch.config > 0:
		return exitError{exitUsage}
	}
	fmt.Fprintln(stdout, "ready: relay run can start with this config and database")
	return nil
}

// checker runs the database checks. Each finding is one line: "ok:" and
// "warning:" lines on stdout, each problem on stderr with its fix.
type checker struct {
	cfg    *config.Config
	m      *mapper.Mapper
	conn   *pgx.Conn
	out    io.Writer
	errOut io.Writer

	role      string
	superuser bool
	// config and database count the problems of each kind: the exit code
	// is 3 when the database has one, else 2 when the config or rules do.
	config, database int
}

func (ch *checker) ok(format string, args ...any) {
	fmt.Fprintf(ch.out, "ok: "+format+"\n", args...)
}

func (ch *checker) warn(format string, args ...any) {
	fmt.Fprintf(ch.out, "warning: "+format+"\n", args...)
}

// problem reports what relay run would refuse; kind is service.ErrConfig
// or service.ErrDatabase.
func (ch *checker) problem(kind error, format string, args ...any) {
	if errors.Is(kind, service.ErrDatabase) {
		ch.database++
	} else {
		ch.config++
	}
	fmt.Fprintf(ch.errOut, "relay check: problem: "+format+"\n", args...)
}

// run checks in the order relay run needs things; it returns an error only
// when the database cannot be read at all.
func (ch *checker) run(ctx context.Context) error {
	var db, version string
	err := ch.conn.QueryRow(ctx, `SELECT current_user, current_database(), current_setting('server_version'),
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`).Scan(&ch.role, &db, &version, &ch.superuser)
	if err != nil {
		return fmt.Errorf("read the server's identity: %w", err)
	}
	ch.ok("database %s reachable as role %s (PostgreSQL %s)", db, ch.role, version)

	if err := cdc.Preflight(ctx, ch.conn); err != nil {
		switch {
		case errors.Is(err, cdc.ErrWalLevel):
			ch.problem(service.ErrDatabase, "%v", err)
			// The role's attribute is still worth knowing.
			if err := ch.replicationRole(ctx); err != nil {
				return err
			}
		case errors.Is(err, cdc.ErrNoReplication):
			ch.ok("wal_level = logical")
			ch.problem(service.ErrDatabase, "%v", err)
		default:
			return err
		}
	} else {
		ch.ok("wal_level = logical")
		ch.ok("role %s may replicate (%s)", ch.role, map[bool]string{true: "superuser", false: "REPLICATION"}[ch.superuser])
	}

	tables, err := ch.tables(ctx)
	if err != nil {
		return err
	}
	if err := ch.publication(ctx, tables); err != nil {
		return err
	}
	slotExists, err := ch.slot(ctx, db)
	if err != nil {
		return err
	}
	if !slotExists {
		if err := ch.freeSlots(ctx); err != nil {
			return err
		}
	}
	return ch.webhookAddresses(ctx)
}

// webhookAddresses warns of each active webhook of the config file whose
// host the egress policy refuses (a private, loopback or other internal
// address, as written or as it resolves now), as the admin API refuses
// such a URL: its attempts would all be blocked.
func (ch *checker) webhookAddresses(ctx context.Context) error {
	policy, err := egress.NewPolicy(ch.cfg.Delivery.AllowNetworks)
	if err != nil {
		return err // Validate checked the entries
	}
	for i, w := range ch.cfg.Webhooks.Endpoints {
		if !w.Active {
			continue
		}
		u, err := url.Parse(w.URL)
		if err != nil {
			continue // Validate reported it
		}
		if err := policy.CheckHost(ctx, u.Hostname()); err != nil {
			ch.warn("webhooks.endpoints[%d] (%q): %v; every attempt will be blocked until delivery.allow_networks opens it", i, w.Name, err)
		}
	}
	return nil
}

// replicationRole reports the REPLICATION attribute alone (after a
// wal_level problem, which Preflight checks first).
func (ch *checker) replicationRole(ctx context.Context) error {
	var can bool
	if err := ch.conn.QueryRow(ctx, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&can); err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !can {
		ch.problem(service.ErrDatabase, "%s: run ALTER ROLE %s WITH REPLICATION as a superuser", cdc.ErrNoReplication, pgx.Identifier{ch.role}.Sanitize())
		return nil
	}
	ch.ok("role %s may replicate", ch.role)
	return nil
}

// tables checks the watched tables against the rules and the role's right
// to read them, and returns the ones that exist.
func (ch *checker) tables(ctx context.Context) ([]string, error) {
	cat, err := service.Inspect(ctx, ch.conn, ch.m)
	if err != nil {
		return nil, err
	}
	for _, p := range cat.Problems {
		ch.problem(service.ErrConfig, "%s", p)
	}
	if len(cat.Tables) == 0 {
		var names []string
		for t := range ch.m.Tables() {
			names = append(names, t)
		}
		sort.Strings(names)
		ch.problem(service.ErrConfig, "none of the watched tables exists in schema public of this database (looked for %s): check database.url", strings.Join(names, ", "))
		return nil, nil
	}
	if len(cat.Problems) == 0 {
		ch.ok("watched tables %s have the columns the rules read", strings.Join(cat.Tables, ", "))
	}
	var missing []string
	for t := range ch.m.Tables() {
		if !slices.Contains(cat.Tables, t) {
			missing = append(missing, t)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		ch.warn("table(s) %s do not exist: %s not offered (relay run starts without them; relay events says why)",
			strings.Join(missing, ", "), strings.Join(sortedKeys(cat.Unavailable), ", "))
	}
	rows, err := ch.conn.Query(ctx, `SELECT t FROM unnest($1::text[]) AS t
		WHERE NOT has_table_privilege(current_user, format('public.%I', t), 'SELECT')`, cat.Tables)
	if err != nil {
		return nil, fmt.Errorf("read table privileges: %w", err)
	}
	unreadable, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read table privileges: %w", err)
	}
	if len(unreadable) > 0 {
		ch.problem(service.ErrDatabase, "role %s may not read %s: run GRANT SELECT ON %s TO %s",
			ch.role, strings.Join(unreadable, ", "), strings.Join(unreadable, ", "), pgx.Identifier{ch.role}.Sanitize())
	}
	return cat.Tables, nil
}

// publication checks that the publication exists with the watched tables,
// or that the role can create or extend it as relay run will.
func (ch *checker) publication(ctx context.Context, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	name := ch.cfg.Replication.Publication
	var all bool
	var owner string
	err := ch.conn.QueryRow(ctx, "SELECT puballtables, pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = $1", name).Scan(&all, &owner)
	exists := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	if exists && all {
		ch.ok("publication %s exists (FOR ALL TABLES)", name)
		return nil
	}
	var lacking []string
	if exists {
		rows, err := ch.conn.Query(ctx, `SELECT t FROM unnest($2::text[]) AS t WHERE t NOT IN
			(SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public') ORDER BY t`, name, tables)
		if err != nil {
			return fmt.Errorf("read publication %s: %w", name, err)
		}
		if lacking, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("read publication %s: %w", name, err)
		}
		if len(lacking) == 0 {
			ch.ok("publication %s exists with every watched table", name)
			return nil
		}
	}
	// Creating a publication for tables, or adding tables to one, takes
	// ownership of the tables (and of the publication), or a superuser.
	var ownsAll, mayCreate bool
	err = ch.conn.QueryRow(ctx, `SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), true),
			has_database_privilege(current_database(), 'CREATE')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relname = ANY($1)`, tables).Scan(&ownsAll, &mayCreate)
	if err != nil {
		return fmt.Errorf("read table owners: %w", err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	switch {
	case !exists && (ch.superuser || ownsAll && mayCreate):
		ch.ok("publication %s does not exist yet; relay run creates it for %s", name, strings.Join(tables, ", "))
	case !exists:
		ch.problem(service.ErrDatabase, "publication %s does not exist and role %s may not create it (it does not own the watched tables): have their owner or a superuser run CREATE PUBLICATION %s FOR TABLE %s once",
			name, ch.role, ident, qualified(tables))
	case ch.superuser || ownsAll && owner == ch.role:
		ch.ok("publication %s lacks %s; relay run adds them", name, strings.Join(lacking, ", "))
	default:
		ch.problem(service.ErrDatabase, "publication %s lacks %s and role %s may not add them: have the owner of the tables or a superuser run ALTER PUBLICATION %s ADD TABLE %s once",
			name, strings.Join(lacking, ", "), ch.role, ident, qualified(lacking))
	}
	return nil
}

// slot checks the replication slot against the relay's recorded position,
// as relay run decides where to start, and reports the WAL it retains.
func (ch *checker) slot(ctx context.Context, db string) (bool, error) {
	name := ch.cfg.Replication.Slot
	slot, err := cdc.Slot(ctx, ch.conn, name)
	if err != nil {
		return false, err
	}
	state, pos, err := ch.state(ctx)
	if err != nil {
		return slot.Exists, err
	}
	recovery := "see the README, section 'Recovering a lost slot' (relay slot drop --config FILE --yes accepts the gap)"
	ready := store.Ready(state)
	switch {
	case ready && !slot.Exists:
		ch.problem(service.ErrDatabase, "%s: slot %s does not exist but the relay has a position for it: %s", cdc.ErrSlotMissing, name, recovery)
		return false, nil
	case !slot.Exists:
		ch.ok("replication slot %s does not exist yet; relay run creates it (changes committed before that are not delivered)", name)
		return false, nil
	case slot.Plugin != "pgoutput" || slot.Database != db:
		ch.problem(service.ErrDatabase, "replication slot %s belongs to plugin %s in database %s, not pgoutput in %s: set replication.slot to another name, or drop it", name, slot.Plugin, slot.Database, db)
		return true, nil
	case ready && slot.WALStatus == "lost":
		ch.problem(service.ErrDatabase, "%s: slot %s lost the WAL it needed (max_slot_wal_keep_size exceeded): %s", cdc.ErrSlotInvalidated, name, recovery)
		return true, nil
	case state == store.StateReady && slot.ConfirmedFlush > pos:
		ch.problem(service.ErrDatabase, "%s: slot %s is confirmed up to %s but the relay's position is %s (state database restored from an older backup?): relay slot forward --config FILE --yes resumes from the slot's position; see the README, section 'Recovering a lost slot'",
			cdc.ErrPositionBehind, name, slot.ConfirmedFlush, pos)
		return true, nil
	case state == "" && slot.Exists:
		ch.problem(service.ErrDatabase, "%s: slot %s exists but the relay has no position for it in its state database: if no relay uses it, drop it with relay slot drop --config FILE --yes", cdc.ErrSlotForeign, name)
		return true, nil
	case !ready:
		ch.ok("replication slot %s was being created when a relay stopped; relay run creates it again", name)
		return true, nil
	}
	if state == store.StateReadyUnbound && slot.ConfirmedFlush > pos {
		ch.warn("replication slot %s is confirmed up to %s, past the relay's position %s, which an earlier version of the relay stored: relay run warns and resumes from the slot's position (harmless unless the state database was restored from an older backup)",
			name, slot.ConfirmedFlush, pos)
	}
	retained := fmt.Sprintf("retains %s of WAL (wal_status %s, confirmed up to %s; the relay's position %s)", bytesText(slot.RetainedBytes), slot.WALStatus, slot.ConfirmedFlush, pos)
	if slot.Active {
		ch.ok("replication slot %s is streamed by backend pid %d (another relay: this one stands by and takes over); %s", name, slot.ActivePID, retained)
	} else {
		ch.ok("replication slot %s exists; %s", name, retained)
	}
	if warnAt := int64(ch.cfg.Replication.RetainedWALWarn); warnAt > 0 && slot.RetainedBytes > warnAt {
		ch.warn("replication slot %s retains more WAL than replication.retained_wal_warn (%s): is a relay running? see the README, section 'WAL safety'", name, bytesText(warnAt))
	}
	return true, nil
}

// freeSlots checks that a slot can be created.
func (ch *checker) freeSlots(ctx context.Context) error {
	var free int
	err := ch.conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)`).Scan(&free)
	if err != nil {
		return fmt.Errorf("read max_replication_slots: %w", err)
	}
	if free <= 0 {
		ch.problem(service.ErrDatabase, "no free replication slot (max_replication_slots is used up): raise max_replication_slots and restart PostgreSQL, or drop a slot nobody uses")
	}
	return nil
}

// state checks the relay's state schema in the state database: the
// migrations applied and pending, or the right to create it. It returns
// the recorded state of the slot ("" when none) and its position.
func (ch *checker) state(ctx context.Context) (string, event.LSN, error) {
	conn := ch.conn
	where := "the platform database"
	if ch.cfg.Database.StateURL != "" && ch.cfg.Database.StateURL != ch.cfg.Database.URL {
		where = "the state database"
		var err error
		conn, err = pgx.Connect(ctx, ch.cfg.Database.StateURL)
		if err != nil {
			ch.problem(service.ErrDatabase, "database.state_url: connect: %s", oneLine(pgconnect.Explain(err)))
			return "", 0, nil
		}
		defer conn.Close(context.WithoutCancel(ctx))
	}
	schema := ch.cfg.Database.Schema
	qs := pgx.Identifier{schema}.Sanitize()
	var hasSchema, hasVersions, hasCheckpoints, mayCreate bool
	var role string
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
			to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL,
			has_database_privilege(current_database(), 'CREATE'), current_user`,
		schema, qs+".schema_migrations", qs+".checkpoints").Scan(&hasSchema, &hasVersions, &hasCheckpoints, &mayCreate, &role)
	if err != nil {
		return "", 0, fmt.Errorf("read the state schema: %w", err)
	}
	want, err := store.MigrationVersions()
	if err != nil {
		return "", 0, err
	}
	if !hasSchema {
		if !mayCreate {
			var db string
			_ = conn.QueryRow(ctx, "SELECT current_database()").Scan(&db)
			ch.problem(service.ErrDatabase, "state schema %s does not exist in %s and role %s may not create it: run GRANT CREATE ON DATABASE %s TO %s, or create the schema owned by the role",
				schema, where, role, pgx.Identifier{db}.Sanitize(), pgx.Identifier{role}.Sanitize())
			return "", 0, nil
		}
		ch.ok("state schema %s does not exist yet in %s; relay run creates it and applies %d migrations", schema, where, len(want))
		return "", 0, nil
	}
	var applied []int
	if hasVersions {
		rows, err := conn.Query(ctx, "SELECT version FROM "+qs+".schema_migrations ORDER BY version")
		if err != nil {
			return "", 0, fmt.Errorf("read the state schema's migrations: %w", err)
		}
		if applied, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil {
			return "", 0, fmt.Errorf("read the state schema's migrations: %w", err)
		}
	}
	var pending, unknown []string
	for _, v := range want {
		if !slices.Contains(applied, v) {
			pending = append(pending, fmt.Sprintf("%04d", v))
		}
	}
	for _, v := range applied {
		if !slices.Contains(want, v) {
			unknown = append(unknown, fmt.Sprintf("%04d", v))
		}
	}
	if len(pending) == 0 {
		ch.ok("state schema %s in %s: all %d migrations applied", schema, where, len(want))
	} else {
		ch.ok("state schema %s in %s: %d of %d migrations applied; relay run applies %s", schema, where, len(want)-len(pending), len(want), strings.Join(pending, ", "))
	}
	if len(unknown) > 0 {
		ch.warn("state schema %s has migrations this relay does not know (%s): a newer relay ran on it", schema, strings.Join(unknown, ", "))
	}
	if ch.cfg.Secrets.Key == "" {
		// Encrypted values need the key that sealed them: without one, every
		// delivery to such a webhook fails.
		var table bool
		var sealed []string
		err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, qs+".webhooks").Scan(&table)
		if err == nil && table {
			sealed, err = store.SealedWithoutKey(ctx, conn, schema)
		}
		if err != nil {
			return "", 0, fmt.Errorf("read the webhooks' secrets: %w", err)
		}
		for _, p := range sealed {
			ch.warn("%s: its deliveries fail until then", p)
		}
	}
	if !hasCheckpoints {
		return "", 0, nil
	}
	// As store.Position reads it; bound_lsn is missing until relay run
	// applies migration 0024.
	var state string
	var lsn int64
	err = conn.QueryRow(ctx, `SELECT CASE WHEN state = 'ready' AND (to_jsonb(c) ->> 'bound_lsn') IS DISTINCT FROM lsn::text
			THEN '`+store.StateReadyUnbound+`' ELSE state END, lsn
		FROM `+qs+`.checkpoints c WHERE slot = $1`, ch.cfg.Replication.Slot).Scan(&state, &lsn)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", 0, fmt.Errorf("read the relay's position: %w", err)
	}
	return state, event.LSN(lsn), nil
}

// qualified lists tables as public."name", for statements to run.
func qualified(tables []string) string {
	parts := make([]string, len(tables))
	for i, t := range tables {
		parts[i] = pgx.Identifier{"public", t}.Sanitize()
	}
	return strings.Join(parts, ", ")
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
