package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/signature"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// cli runs the binary with the admin API's URL and token in the
// environment.
func cli(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	out, err := cmd.Output()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), string(out) + string(exit.Stderr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestWebhooksCLI drives the admin API of a running relay with the relay
// command, as an operator would in a shell: register, list, test-fire, look
// at deliveries, re-fire, disable, delete; table output and --json.
func TestWebhooksCLI(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var mu sync.Mutex
	var got []http.Header
	status := 500
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.Header.Clone())
		s := status
		mu.Unlock()
		w.WriteHeader(s)
	}))
	defer recv.Close()
	addr := freeAddr(t)
	const token = "cli-test-token-of-company-one"
	cfgPath := writeConfig(t, url, recv.URL+"/file", fmt.Sprintf(`
admin:
  listen: %q
  tokens:
    - name: cli
      company_id: 1
      token_sha256: %s
`, addr, admin.TokenHash(token)))
	p := startRelay(t, "run", "--config", cfgPath)
	waitStreaming(t, pool)
	env := []string{"RELAY_ADMIN_URL=http://" + addr, "RELAY_ADMIN_TOKEN=" + token}

	code, out := cli(t, env, "webhooks", "create", "--name", "cli hook", "--endpoint", recv.URL+"/cli",
		"--events", "task.completed,user.created", "--header", "Authorization: Bearer for-receiver")
	if code != 0 || !strings.Contains(out, "secret (shown once") || !strings.Contains(out, "warning: url: not HTTPS") {
		t.Fatalf("create: %d %s", code, out)
	}
	secret := strings.TrimSpace(strings.SplitN(strings.SplitN(out, "store it now): ", 2)[1], "\n", 2)[0])

	code, out = cli(t, env, "webhooks", "list", "--json")
	var list struct {
		Webhooks []struct {
			ID        int64  `json:"id"`
			Name      string `json:"name"`
			ManagedBy string `json:"managed_by"`
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Webhooks) != 2 {
		t.Fatalf("list --json: %d %s", code, out)
	}
	id := list.Webhooks[1].ID
	if list.Webhooks[0].ManagedBy != "file" || list.Webhooks[1].Name != "cli hook" {
		t.Errorf("list: %+v", list.Webhooks)
	}
	code, out = cli(t, env, "webhooks", "list")
	if code != 0 || !strings.Contains(out, "LAST FIRED") || !strings.Contains(out, "cli hook") || strings.Contains(out, secret) {
		t.Errorf("list: %d %s", code, out)
	}

	// A test event, signed with the generated secret.
	mu.Lock()
	status = 200
	mu.Unlock()
	code, out = cli(t, env, "webhooks", "test", fmt.Sprint(id), "--event", "task.completed")
	if code != 0 || !strings.HasPrefix(out, "OK") {
		t.Fatalf("test: %d %s", code, out)
	}

	// Standard Webhooks on and a rotation with a 2h window: the test event
	// carries both secrets' signatures in both forms.
	code, out = cli(t, env, "webhooks", "update", fmt.Sprint(id), "--rotate-secret", "--secret-overlap", "200h")
	if code != 1 || !strings.Contains(out, "secret_overlap") {
		t.Fatalf("update --secret-overlap 200h: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "update", fmt.Sprint(id), "--standard-webhooks", "--rotate-secret", "--secret-overlap", "2h")
	if code != 0 || !strings.Contains(out, "standard webhooks: on") || !strings.Contains(out, "Standard Webhooks libraries: whsec_") ||
		!strings.Contains(out, "previous secret still signs too until") {
		t.Fatalf("update --standard-webhooks --rotate-secret: %d %s", code, out)
	}
	newSecret := strings.TrimSpace(strings.SplitN(strings.SplitN(out, "store it now): ", 2)[1], "\n", 2)[0])
	if code, out = cli(t, env, "webhooks", "test", fmt.Sprint(id), "--event", "task.completed"); code != 0 {
		t.Fatalf("test after rotation: %d %s", code, out)
	}
	mu.Lock()
	last := got[len(got)-1]
	mu.Unlock()
	if last.Get(signature.PreviousHeader) == "" || len(strings.Fields(last.Get(signature.StandardSignatureHeader))) != 2 ||
		last.Get(signature.StandardIDHeader) == "" || newSecret == secret {
		t.Fatalf("test event after rotation: headers %v", last)
	}

	// A real event fails (500), then is re-fired from the CLI.
	mu.Lock()
	status = 500
	mu.Unlock()
	if _, err := pool.Exec(context.Background(), `INSERT INTO tasks (company_id, title, status) VALUES (1, 'Replace belt', 'completed')`); err != nil {
		t.Fatal(err)
	}
	var deliveries struct {
		Deliveries []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
	}
	waitFor(t, "a failed delivery", 30*time.Second, func() bool {
		_, out = cli(t, env, "webhooks", "deliveries", fmt.Sprint(id), "--status", "failed", "--json")
		return json.Unmarshal([]byte(out), &deliveries) == nil && len(deliveries.Deliveries) == 1
	})
	did := deliveries.Deliveries[0].ID
	code, out = cli(t, env, "webhooks", "deliveries", fmt.Sprint(id))
	if code != 0 || !strings.Contains(out, did) || !strings.Contains(out, "HTTP 500") {
		t.Errorf("deliveries: %d %s", code, out)
	}
	mu.Lock()
	status = 200
	mu.Unlock()
	code, out = cli(t, env, "webhooks", "refire", fmt.Sprint(id), "--delivery", did)
	if code != 0 || !strings.Contains(out, "same X-SMTM-Delivery id") {
		t.Fatalf("refire: %d %s", code, out)
	}
	waitFor(t, "the re-fired delivery", 30*time.Second, func() bool {
		_, out = cli(t, env, "webhooks", "deliveries", fmt.Sprint(id), "--status", "delivered", "--json")
		return strings.Contains(out, did)
	})
	mu.Lock()
	var signed, sameID int
	for _, h := range got {
		if h.Get("X-SMTM-Delivery") == did {
			sameID++
		}
		if h.Get("Authorization") == "Bearer for-receiver" && strings.HasPrefix(h.Get(signature.Header), "sha256=") {
			signed++
		}
	}
	mu.Unlock()
	if sameID < 2 || signed < 3 {
		t.Errorf("requests with the delivery id: %d, signed with headers: %d", sameID, signed)
	}

	// A replay of the last hour sends that delivery again, under its id,
	// with X-SMTM-Replay; its progress is listed; a finished one cannot be
	// cancelled.
	code, out = cli(t, env, "webhooks", "replay", fmt.Sprint(id), "--since", "1h")
	if code != 0 || !strings.Contains(out, "replay 1: queued, 1 events") {
		t.Fatalf("replay: %d %s", code, out)
	}
	waitFor(t, "the replay done", 30*time.Second, func() bool {
		_, out = cli(t, env, "webhooks", "replays", fmt.Sprint(id))
		return strings.Contains(out, "done")
	})
	if !strings.Contains(out, "EVENTS") || !strings.Contains(out, "100%") {
		t.Errorf("replays: %s", out)
	}
	mu.Lock()
	replayed := 0
	for _, h := range got {
		if h.Get("X-SMTM-Delivery") == did && h.Get("X-SMTM-Replay") == "1" {
			replayed++
		}
	}
	mu.Unlock()
	if replayed != 1 {
		t.Errorf("the replay sent delivery %s %d times with X-SMTM-Replay: 1, want once", did, replayed)
	}
	if code, out = cli(t, env, "webhooks", "replay-cancel", fmt.Sprint(id), "1"); code != 1 || !strings.Contains(out, "over already") {
		t.Errorf("cancel a finished replay: %d %s", code, out)
	}
	if code, out = cli(t, env, "webhooks", "replay", fmt.Sprint(id), "--since", "10000h"); code != 1 || !strings.Contains(out, "outside retention") {
		t.Errorf("replay beyond retention: %d %s", code, out)
	}

	code, out = cli(t, env, "events")
	if code != 0 || !strings.Contains(out, "task.completed\n") {
		t.Errorf("events over the API: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "disable", fmt.Sprint(id))
	if code != 0 || !strings.Contains(out, ", off") {
		t.Errorf("disable: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "update", fmt.Sprint(list.Webhooks[0].ID), "--name", "x")
	if code != 1 || !strings.Contains(out, "config file") {
		t.Errorf("update of a file webhook: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "create", "--name", "critical", "--endpoint", recv.URL+"/critical",
		"--events", "repair_request.created", "--filter", `data.priority == "critical"`)
	if code != 0 || !strings.Contains(out, `filter: data.priority == "critical"`) {
		t.Errorf("create with --filter: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "create", "--name", "bad filter", "--endpoint", recv.URL+"/bad",
		"--events", "repair_request.created", "--filter", `data.priorty == "critical"`)
	if code != 1 || !strings.Contains(out, "unknown field data.priorty") {
		t.Errorf("create with a bad --filter: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "create", "--name", "bad", "--endpoint", "http://169.254.169.254/", "--events", "task.completed")
	if code != 1 || !strings.Contains(out, "link-local") {
		t.Errorf("create to the metadata address: %d %s", code, out)
	}
	if code, out = cli(t, env, "webhooks", "delete", fmt.Sprint(id)); code != 0 {
		t.Errorf("delete: %d %s", code, out)
	}
	if code, out = cli(t, []string{"RELAY_ADMIN_URL=http://" + addr, "RELAY_ADMIN_TOKEN=wrong"}, "webhooks", "list"); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("wrong token: %d %s", code, out)
	}
	if code, _ = cli(t, nil, "webhooks", "list"); code != 2 {
		t.Errorf("no URL: exit %d, want 2", code)
	}
	if strings.Contains(p.output(), secret) || strings.Contains(p.output(), "for-receiver") {
		t.Error("the relay's log contains a secret")
	}
}

// TestCLIEscapesTenantTextAndFailsTests drives a running relay from the
// command line with text a tenant or a receiver chose: a webhook name with
// an ESC sequence and a newline that would forge a row of the list (stored
// directly, as the API refuses such names), a receiver that answers 500
// with ANSI escapes in its body, an attempt error carrying them. Each is
// printed escaped. A test event the receiver answers 500, or lets time out,
// exits 4.
func TestCLIEscapesTenantTextAndFailsTests(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const body = "\x1b[2J\x1b[31mall good\n1\t2\tFORGED"
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/evil":
			w.WriteHeader(500)
			io.WriteString(w, body)
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
	}))
	defer recv.Close()
	addr := freeAddr(t)
	const token = "cli-escape-token-of-company-one"
	cfgPath := writeConfig(t, url, recv.URL+"/file", fmt.Sprintf(`
admin:
  listen: %q
  tokens:
    - {name: cli, company_id: 1, token_sha256: %s}
`, addr, admin.TokenHash(token)))
	startRelay(t, "run", "--config", cfgPath)
	waitStreaming(t, pool)
	env := []string{"RELAY_ADMIN_URL=http://" + addr, "RELAY_ADMIN_TOKEN=" + token}
	create := func(name, path string) int64 {
		code, out := cli(t, env, "webhooks", "create", "--name", name, "--endpoint", recv.URL+path, "--events", "task.completed", "--json")
		var v struct{ Webhook struct{ ID int64 } }
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
			t.Fatalf("create %s: %d %s", name, code, out)
		}
		return v.Webhook.ID
	}
	evil, hang := create("evil", "/evil"), create("hang", "/hang")

	// A receiver that times out fails the test: exit 4.
	code, out := cli(t, env, "webhooks", "test", fmt.Sprint(hang), "--event", "task.completed")
	if code != exitTestFailed || !strings.HasPrefix(out, "FAILED: timeout") || !strings.Contains(out, "the test event failed: timeout") {
		t.Errorf("test of a hanging receiver: exit %d, want 4:\n%s", code, out)
	}
	code, out = cli(t, env, "webhooks", "test", fmt.Sprint(hang), "--event", "task.completed", "--json")
	if code != exitTestFailed || !strings.Contains(out, `"ok": false`) {
		t.Errorf("test --json of a hanging receiver: exit %d, want 4:\n%s", code, out)
	}

	// A name that would forge a row and recolour the terminal.
	const name = "evil\x1b[31m\n99    1        forged-row    https://forged.example.com"
	if _, err := pool.Exec(context.Background(), `UPDATE relay.webhooks SET name = $1 WHERE id = $2`, name, evil); err != nil {
		t.Fatal(err)
	}
	code, out = cli(t, env, "webhooks", "list")
	if code != 0 || strings.Contains(out, "\x1b") || !strings.Contains(out, `evil\x1b[31m\n99    1        forged-row`) ||
		strings.Count(out, "\n") != 4 {
		t.Errorf("list: exit %d, want 4 lines with the name escaped:\n%s", code, out)
	}

	// The receiver's body, escaped; its 500 fails the test: exit 4.
	code, out = cli(t, env, "webhooks", "test", fmt.Sprint(evil), "--event", "task.completed")
	if code != exitTestFailed || strings.Contains(out, "\x1b") || !strings.Contains(out, `response: \x1b[2J\x1b[31mall good\n1\t2\tFORGED`) ||
		!strings.HasPrefix(out, "FAILED: HTTP 500") {
		t.Errorf("test of a receiver answering 500: exit %d, want 4 and the body escaped:\n%q", code, out)
	}

	// An attempt's error names what the receiver sent (a certificate's
	// name, a DNS answer): escaped in the deliveries' table.
	if _, err := pool.Exec(context.Background(), `INSERT INTO tasks (company_id, title, status) VALUES (1, 'Replace belt', 'completed')`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an attempt", 30*time.Second, func() bool {
		var n int
		pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.attempts WHERE webhook_id = $1`, evil).Scan(&n)
		return n > 0
	})
	if _, err := pool.Exec(context.Background(), `UPDATE relay.attempt_rows SET error = $1 WHERE webhook_id = $2`,
		"tls: certificate is valid for \x1b[32mtrusted.example.com\x1b[0m\nFORGED", evil); err != nil {
		t.Fatal(err)
	}
	code, out = cli(t, env, "webhooks", "deliveries", fmt.Sprint(evil))
	if code != 0 || strings.Contains(out, "\x1b") || !strings.Contains(out, `valid for \x1b[32mtrusted.example.com\x1b[0m\nFORGED`) {
		t.Errorf("deliveries: exit %d, the error not escaped:\n%q", code, out)
	}
}

// TestWhenNamesTheZone: a time in the CLI's tables names the zone it is
// shown in, so that nobody takes the terminal's zone for a company's.
func TestWhenNamesTheZone(t *testing.T) {
	ts := time.Date(2026, 4, 24, 2, 15, 30, 0, time.UTC)
	if got, want := when(&ts), ts.Local().Format("2006-01-02 15:04:05")+" "+ts.Local().Format("-07:00"); got != want {
		t.Errorf("when = %q, want %q", got, want)
	}
	if got := when(nil); got != "never" {
		t.Errorf("when(nil) = %q", got)
	}
}

// TestJSONOutputEscapesC1AndBidi: --json prints the admin API's answer,
// whose JSON encoder escapes C0 controls but leaves a C1 control (U+009B, a
// terminal's CSI) and bidirectional overrides raw. A receiver's body and a
// webhook's name and URL carrying them are printed as \u escapes, and the
// output is still JSON of the same values.
func TestJSONOutputEscapesC1AndBidi(t *testing.T) {
	answers := map[string]any{
		"POST /v1/webhooks/7/test": map[string]any{"delivery_id": "d-1", "ok": true, "status_code": 200,
			"response_snippet": "csi\u009b31mred\u009b0m \x1b[2J invoice\u202egnp.exe \u2066x\u2069"},
		"GET /v1/webhooks": map[string]any{"webhooks": []any{map[string]any{"id": 7, "company_id": 1,
			"name": "Invoices \u200f\u061c", "url": "https://example.com/\u202egnp.exe", "events": []any{"task.completed"}, "active": true}}},
		"GET /v1/events": map[string]any{"events": []any{"task.completed\u202e"}},
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := answers[r.Method+" "+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v) // as the admin API writes it: C1 and bidi raw
	}))
	defer api.Close()
	for _, tc := range []struct {
		answer string
		args   []string
		want   []string // escapes the output must hold
	}{
		{"POST /v1/webhooks/7/test", []string{"webhooks", "test", "7", "--event", "task.completed"},
			[]string{`"csi\u009b31mred\u009b0m \u001b[2J invoice\u202egnp.exe \u2066x\u2069"`}},
		{"GET /v1/webhooks", []string{"webhooks", "list"}, []string{`"https://example.com/\u202egnp.exe"`, `"Invoices \u200f\u061c"`}},
		{"GET /v1/events", []string{"events"}, []string{`"task.completed\u202e"`}},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append(tc.args, "--url", api.URL, "--token", "t", "--json"), &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr.String())
		}
		out := stdout.String()
		if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && r != ' ' && !unicode.IsPrint(r) }); i >= 0 {
			t.Errorf("%v: a raw control or bidi character at byte %d:\n%q", tc.args, i, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: want %s in:\n%s", tc.args, w, out)
			}
		}
		var got any
		if err := json.Unmarshal([]byte(out), &got); err != nil || !reflect.DeepEqual(got, roundTrip(t, answers[tc.answer])) {
			t.Errorf("%v: not JSON of the API's values (%v):\n%s", tc.args, err, out)
		}
	}
}

// roundTrip is v as JSON decodes it (numbers as float64).
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
