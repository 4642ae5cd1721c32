package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/store"
)

// checkRun runs relay check with the binary and returns the exit code,
// stdout and stderr.
func checkRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	code, out := cli(t, nil, append([]string{"check"}, args...)...)
	// cli returns stdout then stderr; split them again by running with
	// stderr alone would cost a second run: the problem lines carry a
	// prefix instead.
	var stdout, stderr []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "relay check: ") {
			stderr = append(stderr, l)
		} else {
			stdout = append(stdout, l)
		}
	}
	return code, strings.Join(stdout, "\n"), strings.Join(stderr, "\n")
}

// TestCheckConnects checks that relay check checks what relay run needs of
// the database, one line per problem with its fix, and exits 3 for the
// database's problems and 2 for the config's.
func TestCheckConnects(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	good := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	if err := srv.Exec(ctx, "postgres", "DO $$ BEGIN CREATE ROLE norepl LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"); err != nil {
		t.Fatal(err)
	}

	t.Run("good database", func(t *testing.T) {
		code, out, errOut := checkRun(t, "--config", writeConfig(t, good, "https://example.com/x", ""))
		for _, want := range []string{"config OK", "ok: wal_level = logical", "ok: role postgres may replicate",
			"have the columns the rules read", "publication smtm_relay does not exist yet; relay run creates it",
			"replication slot smtm_relay does not exist yet", "state schema relay does not exist yet", "ready: relay run can start"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if code != 0 || errOut != "" {
			t.Errorf("exit %d, problems:\n%s", code, errOut)
		}
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
	})

	t.Run("webhook at a private address", func(t *testing.T) {
		// The admin API refuses such a URL; the file's gets a warning, and
		// one the allowlist opens (loopback, in these tests) none.
		code, out, errOut := checkRun(t, "--config", writeConfig(t, good, "http://10.0.0.5/hook", ""))
		want := `warning: webhooks.endpoints[0] ("all"): blocked: 10.0.0.5 is a private address`
		if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "every attempt will be blocked until delivery.allow_networks opens it") {
			t.Errorf("exit %d, want 0 and %q:\n%s\n%s", code, want, out, errOut)
		}
		if _, out, _ := checkRun(t, "--config", writeConfig(t, good, "http://127.0.0.1:9/hook", "")); strings.Contains(out, "will be blocked") {
			t.Errorf("a warning for an allowed address:\n%s", out)
		}
	})

	t.Run("offline", func(t *testing.T) {
		code, out, _ := checkRun(t, "--offline", "--config", writeConfig(t, "postgres://postgres@127.0.0.1:1/x", "https://example.com/x", ""))
		if code != 0 || !strings.Contains(out, "config OK") || strings.Contains(out, "ok: ") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		code, out, errOut := checkRun(t, "--config", writeConfig(t, "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", "https://example.com/x", ""))
		if code != 3 || strings.Count(errOut, "\n") != 0 || !strings.Contains(errOut, "connect") ||
			!strings.Contains(errOut, "connection refused (is PostgreSQL running, and listening on that address and port?") {
			t.Errorf("exit %d, want 3 and one line with the cause and a hint:\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("no such database", func(t *testing.T) {
		// sslmode=prefer: pgx tries TLS first, which the test server
		// refuses; the line names the plain attempt's cause, not that.
		url := good[:strings.LastIndex(good, "/")+1] + "no_such_db?sslmode=prefer"
		code, out, errOut := checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 3 || strings.Count(errOut, "\n") != 0 || strings.Contains(errOut, "TLS") ||
			!strings.Contains(errOut, `database "no_such_db" does not exist`) || !strings.Contains(errOut, "(check the database's name in the URL)") {
			t.Errorf("exit %d, want 3 and one line with the cause and a hint:\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("no database.url", func(t *testing.T) {
		code, _, errOut := checkRun(t, "--config", writeConfig(t, "", "https://example.com/x", ""))
		if code != 2 || !strings.Contains(errOut, "database.url is required") || !strings.Contains(errOut, "--offline") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
	})

	t.Run("no REPLICATION", func(t *testing.T) {
		url := strings.Replace(good, "postgres@", "norepl@", 1)
		code, _, errOut := checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		for _, want := range []string{`role lacks the REPLICATION attribute: run ALTER ROLE "norepl" WITH REPLICATION as a superuser`,
			"role norepl may not read", "GRANT SELECT ON",
			"publication smtm_relay does not exist and role norepl may not create it", "CREATE PUBLICATION"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("problems lack %q", want)
			}
		}
		if code != 3 {
			t.Errorf("exit %d, want 3", code)
		}
		if t.Failed() {
			t.Logf("problems:\n%s", errOut)
		}
	})

	t.Run("missing column and table", func(t *testing.T) {
		url := pgtest.NewDatabase(t, platform.Schema, "ALTER TABLE tasks DROP COLUMN reviewed_by; DROP TABLE activity_log_exports")
		code, out, errOut := checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 2 || !strings.Contains(errOut, "reads tasks.reviewed_by, which does not exist: override the rule under mapping.rules") {
			t.Errorf("exit %d, want 2 and the missing column:\n%s", code, errOut)
		}
		if !strings.Contains(out, "warning: table(s) activity_log_exports do not exist: audit.exported not offered") {
			t.Errorf("no warning for the missing table:\n%s", out)
		}
	})

	t.Run("slot lost, migrations pending", func(t *testing.T) {
		url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
		st, err := store.Open(ctx, url, "relay")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		// The relay had streamed the slot, which is gone now; and this
		// binary has a migration the schema lacks.
		if _, err := st.Pool().Exec(ctx, `INSERT INTO relay.checkpoints (slot, lsn, state) VALUES ('smtm_relay', 1000, 'ready');
			DELETE FROM relay.schema_migrations WHERE version = (SELECT max(version) FROM relay.schema_migrations)`); err != nil {
			t.Fatal(err)
		}
		versions, _ := store.MigrationVersions()
		code, out, errOut := checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 3 || !strings.Contains(errOut, "replication slot is missing") || !strings.Contains(errOut, "Recovering a lost slot") {
			t.Errorf("exit %d, want 3 and the lost slot:\n%s", code, errOut)
		}
		if want := fmt.Sprintf("migrations applied; relay run applies %04d", versions[len(versions)-1]); !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}

		// With its slot, the relay's position is good; check says what
		// the slot retains.
		if _, err := st.Pool().Exec(ctx, `SELECT pg_create_logical_replication_slot('smtm_relay', 'pgoutput')`); err != nil {
			t.Fatal(err)
		}
		defer st.Pool().Exec(ctx, `SELECT pg_drop_replication_slot('smtm_relay')`) //nolint:errcheck
		code, out, errOut = checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 0 || !strings.Contains(out, "ok: replication slot smtm_relay exists; retains ") || !strings.Contains(out, "wal_status reserved") {
			t.Errorf("exit %d, want 0 and the slot's retained WAL:\n%s\n%s", code, out, errOut)
		}
		// The position (0/3E8) is an earlier version's: only a warning.
		if !strings.Contains(out+errOut, "past the relay's position 0/3E8, which an earlier version of the relay stored") {
			t.Errorf("no warning for a position an earlier version stored behind the slot:\n%s\n%s", out, errOut)
		}

		// A position stored by this version behind the slot's: the state
		// database lost what it had made durable.
		if _, err := st.Pool().Exec(ctx, `UPDATE relay.checkpoints SET bound_lsn = lsn`); err != nil {
			t.Fatal(err)
		}
		code, _, errOut = checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 3 || !strings.Contains(errOut, "replication slot was confirmed past the relay's position") || !strings.Contains(errOut, "is 0/3E8 (state database restored") {
			t.Errorf("exit %d, want 3 and the position behind the slot:\n%s", code, errOut)
		}
		if _, err := st.Pool().Exec(ctx, `UPDATE relay.checkpoints SET lsn = s.confirmed_flush_lsn - '0/0'::pg_lsn, bound_lsn = s.confirmed_flush_lsn - '0/0'::pg_lsn
			FROM pg_replication_slots s WHERE s.slot_name = 'smtm_relay'`); err != nil {
			t.Fatal(err)
		}
		code, out, errOut = checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 0 || !strings.Contains(out, "ok: replication slot smtm_relay exists; retains ") {
			t.Errorf("exit %d, want 0 with the position at the slot's:\n%s\n%s", code, out, errOut)
		}
		if m := regexp.MustCompile(`confirmed up to (\S+); the relay's position (\S+)\)`).FindStringSubmatch(out); m == nil || m[1] != m[2] {
			t.Errorf("check does not show the relay's position at the slot's: %q\n%s", m, out)
		}
		const sealedWarning = "stored encrypted, and secrets.key is not set"
		if strings.Contains(out, sealedWarning) {
			t.Errorf("a warning for encrypted secrets where there are none:\n%s", out)
		}

		// A secret stored encrypted, and no secrets.key: every delivery to
		// that webhook would fail.
		if _, err := st.Pool().Exec(ctx, `INSERT INTO relay.webhooks (company_id, name, url, events, headers)
			VALUES (1, 'sealed', 'https://example.com/s', '{task.completed}', '{"X-Token": "enc:v1:abcd:xyz"}')`); err != nil {
			t.Fatal(err)
		}
		code, out, errOut = checkRun(t, "--config", writeConfig(t, url, "https://example.com/x", ""))
		if code != 0 || !regexp.MustCompile(`(?m)^warning: webhook \d+ \("sealed" of company 1\): header X-Token `+sealedWarning+
			` \(set RELAY_SECRETS__KEY to the key that sealed it\): its deliveries fail until then$`).MatchString(out) {
			t.Errorf("exit %d, want 0 and the warning for the encrypted secret:\n%s\n%s", code, out, errOut)
		}
	})

	t.Run("wal_level replica", func(t *testing.T) {
		noLogical, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{"wal_level = replica", "max_wal_senders = 10"}})
		if err != nil {
			t.Fatal(err)
		}
		defer noLogical.Stop()
		db, err := noLogical.CreateDatabase(ctx, platform.Schema)
		if err != nil {
			t.Fatal(err)
		}
		code, out, errOut := checkRun(t, "--config", writeConfig(t, noLogical.URL(db), "https://example.com/x", ""))
		if code != 3 || !strings.Contains(errOut, `wal_level is not logical (it is "replica"): set wal_level = logical in postgresql.conf`) {
			t.Errorf("exit %d, want 3 and the wal_level fix:\n%s\n%s", code, out, errOut)
		}
		if strings.Count(errOut, "\n") != 0 {
			t.Errorf("more problems than wal_level:\n%s", errOut)
		}
	})
}
