package service_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/service"
)

// reloadWait bounds how long a change of the config file may take to apply.
const reloadWait = 10 * time.Second

const (
	tokenA = "reload-test-token-a-0123456789"
	tokenC = "reload-test-token-c-0123456789"
)

// fileRelay is a relay whose configuration comes from a file that the test
// rewrites while it runs.
type fileRelay struct {
	*relayEnv
	path  string
	admin string // the admin API's address
}

// fileHook is a webhook of the config file; every one subscribes to
// shutdown.reported.
type fileHook struct {
	company int64
	name    string
	path    string // on the receiver
	url     string // overrides path when set
	secret  string // overrides secret1 when set
	overlap string // secret_overlap, when set
	filter  string // filter, when set
}

// tokenYAML is one admin token entry.
func tokenYAML(name string, company int64, token string) string {
	return fmt.Sprintf("    - {name: %s, company_id: %d, token_sha256: %s}\n", name, company, admin.TokenHash(token))
}

// configYAML is the file: the relay's settings for tests, the admin API
// with the given token entries, and the webhooks.
func (f *fileRelay) configYAML(tokens string, hooks ...fileHook) string {
	var b strings.Builder
	fmt.Fprintf(&b, `database:
  url: %q
replication:
  status_interval: 200ms
delivery:
  allow_networks: [127.0.0.0/8, "::1"]
  poll_interval: 50ms
  timeout: 2s
  retry_schedule: [50ms, 50ms]
  drain_timeout: 2s
admin:
  listen: %q
  tokens:
%swebhooks:
  endpoints:
`, f.url, f.admin, tokens)
	for _, h := range hooks {
		u := h.url
		if u == "" {
			u = f.recv.URL + h.path
		}
		secret := h.secret
		if secret == "" {
			secret = secret1
		}
		overlap := ""
		if h.overlap != "" {
			overlap = fmt.Sprintf(", secret_overlap: %q", h.overlap)
		}
		if h.filter != "" {
			overlap += fmt.Sprintf(", filter: %q", h.filter)
		}
		fmt.Fprintf(&b, "    - {company_id: %d, name: %s, url: %q, secret: %q, events: [shutdown.reported]%s}\n", h.company, h.name, u, secret, overlap)
	}
	return b.String()
}

var hookOne = fileHook{company: 1, name: "one", path: "/one"}

// newFileRelay writes the file and starts the relay from it.
func newFileRelay(t *testing.T, tokens string, hooks ...fileHook) *fileRelay {
	t.Helper()
	f := &fileRelay{relayEnv: newRelay(t), admin: freeAddr(t)}
	f.path = filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(f.path, []byte(f.configYAML(tokens, hooks...)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	f.start()
	f.waitFor("the reloader", func() bool { return strings.Contains(f.logs.String(), "config: reloaded on SIGHUP") })
	return f
}

// replace saves the file as most editors do: a new file renamed over the
// old one.
func (f *fileRelay) replace(content string) {
	f.t.Helper()
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		f.t.Fatal(err)
	}
}

// status is the admin API's answer to a request with token.
func (f *fileRelay) status(token string) int {
	f.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+f.admin+"/v1/webhooks", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// waitWithin waits for cond at most d.
func (f *fileRelay) waitWithin(d time.Duration, what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitWebhook waits, as waitWithin, until exactly one webhook in the
// relay's table matches where (an SQL condition).
func (f *fileRelay) waitWebhook(what, where string) {
	f.waitWithin(reloadWait, what, func() bool {
		var n int
		f.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.webhooks WHERE `+where).Scan(&n)
		return n == 1
	})
}

// waitRevoked waits until tokenA is refused and tokenC accepted.
func (f *fileRelay) waitRevoked() {
	f.t.Helper()
	f.waitWithin(reloadWait, "token A refused and token C accepted", func() bool {
		return f.status(tokenA) == http.StatusUnauthorized && f.status(tokenC) == http.StatusOK
	})
}

// TestTokenRevokedByEditingTheFile: removing a token from the config file
// refuses it within moments, without a restart, and the log says which
// token went without printing any hash.
func TestTokenRevokedByEditingTheFile(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	if s := f.status(tokenA); s != http.StatusOK {
		t.Fatalf("token A before the edit: %d", s)
	}
	if s := f.status(tokenC); s != http.StatusUnauthorized {
		t.Fatalf("token C before the edit: %d", s)
	}
	f.replace(f.configYAML(tokenYAML("ci", 1, tokenC), hookOne))
	f.waitRevoked()
	logs := f.logs.String()
	if !strings.Contains(logs, "config reloaded: admin.tokens: 1 removed (ops-laptop), 1 added (ci)") {
		t.Errorf("no reload line naming the tokens in:\n%s", logs)
	}
	for _, v := range []string{admin.TokenHash(tokenA), admin.TokenHash(tokenC), secret1} {
		if strings.Contains(logs, v) {
			t.Errorf("the log contains a configured value %q", v)
		}
	}
	// The file's webhook still works.
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'after the edit')`)
	f.waitEvents("/one", "shutdown.reported", 1)
}

// TestSIGHUPReloads: with the file not watched, SIGHUP alone applies the
// edited file.
func TestSIGHUPReloads(t *testing.T) {
	service.IgnoreConfigFile(t)
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	f.replace(f.configYAML(tokenYAML("ci", 1, tokenC), hookOne))
	// Not watched: the edit alone changes nothing.
	time.Sleep(config.DefaultDebounce + 300*time.Millisecond)
	if s := f.status(tokenA); s != http.StatusOK {
		t.Fatalf("token A before SIGHUP: %d", s)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitRevoked()
	if !strings.Contains(f.logs.String(), "trigger=SIGHUP") {
		t.Errorf("the reload line does not name SIGHUP:\n%s", f.logs.String())
	}
}

// TestFileWebhooksApplyWithoutRestart: a webhook added to the file gets the
// changes committed after the edit; once removed from the file it gets
// nothing more.
func TestFileWebhooksApplyWithoutRestart(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	hookNew := fileHook{company: 1, name: "added", path: "/added"}
	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hookOne, hookNew))
	f.waitWebhook("webhook added to the table", `name = 'added' AND deleted_at IS NULL`)
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'first')`)
	f.waitEvents("/added", "shutdown.reported", 1)
	f.waitEvents("/one", "shutdown.reported", 1)
	if !strings.Contains(f.logs.String(), `config reloaded: webhooks.endpoints: 0 removed, 1 added (company 1 \"added\")`) {
		t.Errorf("no reload line naming the webhook in:\n%s", f.logs.String())
	}

	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hookOne))
	f.waitWebhook("webhook removed from the table", `name = 'added' AND deleted_at IS NOT NULL`)
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'second')`)
	f.waitEvents("/one", "shutdown.reported", 2)
	time.Sleep(300 * time.Millisecond)
	if n := len(f.recv.requests("/added")); n != 1 {
		t.Fatalf("the removed webhook got %d requests, want 1", n)
	}
}

// TestInvalidFileKeepsTheLastGoodConfig: a file that does not validate
// changes nothing (tokens, webhooks) and is reported in one line naming the
// key; the next valid file applies.
func TestInvalidFileKeepsTheLastGoodConfig(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	// Written in place this time, as `cat > relay.yaml` does.
	bad := f.configYAML(tokenYAML("ci", 1, tokenC), fileHook{company: 1, name: "one", url: "ftp://receiver.invalid/x"})
	if err := os.WriteFile(f.path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	const failed = "config reload failed, keeping the last good config"
	f.waitWithin(reloadWait, "the invalid file reported", func() bool { return strings.Contains(f.logs.String(), failed) })
	time.Sleep(config.DefaultDebounce + 300*time.Millisecond)
	var lines []string
	for l := range strings.SplitSeq(f.logs.String(), "\n") {
		if strings.Contains(l, failed) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "webhooks.endpoints[0].url") {
		t.Fatalf("want one line naming webhooks.endpoints[0].url, got %q", lines)
	}
	if s := f.status(tokenA); s != http.StatusOK {
		t.Fatalf("token A after the invalid file: %d", s)
	}
	if s := f.status(tokenC); s != http.StatusUnauthorized {
		t.Fatalf("token C from the invalid file: %d", s)
	}
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'while invalid')`)
	f.waitEvents("/one", "shutdown.reported", 1)

	f.replace(f.configYAML(tokenYAML("ci", 1, tokenC), fileHook{company: 1, name: "one", path: "/moved"}))
	f.waitRevoked()
	f.waitWithin(reloadWait, "webhook moved", func() bool {
		var u string
		f.pool.QueryRow(context.Background(), `SELECT url FROM relay.webhooks WHERE name = 'one' AND deleted_at IS NULL`).Scan(&u)
		return strings.HasSuffix(u, "/moved")
	})
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'after the fix')`)
	f.waitEvents("/moved", "shutdown.reported", 1)
}

// TestEmptiedFileKeepsTheLastGoodConfig: a file emptied, or cut short
// before its admin section (an editor or a config tool still writing it),
// is one Load takes, but not one the relay could start with nor one that
// leaves its running admin API a token: the reload refuses it, and every
// token and webhook stays.
func TestEmptiedFileKeepsTheLastGoodConfig(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	const failed = "config reload failed, keeping the last good config"
	full := f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hookOne)
	for i, tc := range []struct{ content, want string }{
		{"", "database.url is required"},
		{full[:strings.Index(full, "admin:")], "admin.tokens: the admin API is running (admin.listen) and no token is left"},
	} {
		if err := os.WriteFile(f.path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		f.waitWithin(reloadWait, "the emptied file reported", func() bool { return strings.Count(f.logs.String(), failed) == i+1 })
		if logs := f.logs.String(); !strings.Contains(logs, tc.want) || strings.Contains(logs, "config reloaded") {
			t.Fatalf("file %d: want a refusal naming %q and nothing applied:\n%s", i, tc.want, logs)
		}
		if s := f.status(tokenA); s != http.StatusOK {
			t.Fatalf("file %d: token A after the reload: %d", i, s)
		}
	}
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'after the emptied file')`)
	f.waitEvents("/one", "shutdown.reported", 1)
}

// TestReloadRefusesFilterOfUnknownField: a file whose webhook filter reads
// a data field none of its events has is refused like any invalid file, as
// the admin API and the start refuse it, rather than applied as a filter
// that never passes.
func TestReloadRefusesFilterOfUnknownField(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), fileHook{company: 1, name: "one", path: "/one", filter: `data.reasn == "leak"`}))
	const failed = "config reload failed, keeping the last good config"
	f.waitWithin(reloadWait, "the filter reported", func() bool { return strings.Contains(f.logs.String(), failed) })
	if logs := f.logs.String(); !strings.Contains(logs, "webhooks.endpoints[0].filter: unknown field data.reasn") {
		t.Fatalf("the reload failure does not name the filter's unknown field:\n%s", logs)
	}
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'leak')`)
	f.waitEvents("/one", "shutdown.reported", 1)
}

// TestRestartOnlyKeysAreReported: a change of a key read only at start is
// not applied, and one line says a restart is needed.
func TestRestartOnlyKeysAreReported(t *testing.T) {
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hookOne)
	content := f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hookOne)
	content = strings.Replace(content, "poll_interval: 50ms", "poll_interval: 60ms", 1)
	content = strings.Replace(content, "status_interval: 200ms", "status_interval: 200ms\n  slot: another_slot", 1)
	f.replace(content)
	const want = "config: replication.slot, delivery.poll_interval changed; a restart is needed to apply them"
	f.waitWithin(reloadWait, "the restart line", func() bool { return strings.Contains(f.logs.String(), want) })
	if !strings.Contains(f.logs.String(), "config reloaded: nothing it can apply while running") {
		t.Errorf("no reload line in:\n%s", f.logs.String())
	}
	var slot string
	f.pool.QueryRow(context.Background(), `SELECT slot_name FROM pg_replication_slots WHERE active AND database = current_database()`).Scan(&slot)
	if slot != f.cfg.Replication.Slot {
		t.Errorf("active slot %q", slot)
	}
}
