package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
)

// TestSecretsNeverPrinted: relay check (good and bad configs), a failed
// start and a running relay's log (at debug level) never print a webhook
// secret, a header value, the database password or a key.
func TestSecretsNeverPrinted(t *testing.T) {
	const (
		dbPassword = "dbpw-never-shown-7531"
		header     = "Bearer header-never-shown-8642"
		key        = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
		prevKey    = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
	)
	values := []string{secret, dbPassword, header, key, prevKey}
	noneIn := func(t *testing.T, out string) {
		t.Helper()
		for _, v := range values {
			if strings.Contains(out, v) {
				t.Errorf("output prints %q:\n%s", v, out)
			}
		}
	}
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	withPassword := strings.Replace(url, "postgres@", "postgres:"+dbPassword+"@", 1)
	if withPassword == url {
		t.Fatalf("cannot add a password to %s", url)
	}
	extra := `      headers:
        Authorization: "` + header + `"
log:
  level: debug
secrets:
  key: "` + key + `"
  previous_keys: ["` + prevKey + `"]
`
	good := writeConfig(t, withPassword, "http://127.0.0.1:9/x", extra)

	t.Run("check", func(t *testing.T) {
		code, out := runRelay(t, "check", "--config", good)
		if code != 0 || !strings.Contains(out, "config OK") {
			t.Fatalf("check: exit %d\n%s", code, out)
		}
		noneIn(t, out)
	})
	t.Run("check of a bad config", func(t *testing.T) {
		raw, _ := os.ReadFile(good)
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		// Every secret-bearing key with a value of the wrong type.
		text := strings.NewReplacer(
			`secret: "`+secret+`"`, `secret: [`+secret+`]`,
			`Authorization: "`+header+`"`, `Authorization: {`+header+`: 1}`,
			`key: "`+key+`"`, `key: ["`+key+`"]`,
			`previous_keys: ["`+prevKey+`"]`, `previous_keys: "`+prevKey+`"`,
			`url: "`+withPassword+`"`, `url: ["`+withPassword+`"]`,
		).Replace(string(raw))
		os.WriteFile(bad, []byte(text), 0o600)
		code, out := runRelay(t, "check", "--config", bad)
		for _, k := range []string{"database.url", "webhooks.endpoints[0].secret", "webhooks.endpoints[0].headers[Authorization]", "secrets.key", "secrets.previous_keys"} {
			if !strings.Contains(out, k+":") {
				t.Errorf("the error does not name %s", k)
			}
		}
		if code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		noneIn(t, out)
	})
	t.Run("unreachable database", func(t *testing.T) {
		cfg := writeConfig(t, "postgres://postgres:"+dbPassword+"@127.0.0.1:1/x?connect_timeout=2", "http://127.0.0.1:9/x", extra)
		code, out := runRelay(t, "run", "--config", cfg)
		if code != 3 {
			t.Errorf("exit %d, want 3\n%s", code, out)
		}
		noneIn(t, out)
	})
	t.Run("running relay's log", func(t *testing.T) {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		p := startRelay(t, "run", "--config", good)
		waitStreaming(t, pool)
		p.cmd.Process.Signal(os.Interrupt)
		<-p.done
		p.done <- nil // for the cleanup's wait
		if !strings.Contains(p.output(), "relay starting") {
			t.Fatalf("no log:\n%s", p.output())
		}
		noneIn(t, p.output())
	})
}
