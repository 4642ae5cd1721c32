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
	"os"
	"os/exec"
	"reflect"
	"slices"
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
	const operatorToken = "cli-test-token-of-the-operator"
	cfgPath := writeConfig(t, url, recv.URL+"/file", fmt.Sprintf(`
admin:
  listen: %q
  tokens:
    - name: cli
      company_id: 1
      token_sha256: %s
    - name: ops
      operator: true
      token_sha256: %s
`, addr, admin.TokenHash(token), admin.TokenHash(operatorToken)))
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
	if code != 1 || !strings.Contains(out, "--secret-overlap (secret_overlap): 200h0m0s is out of range") {
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
	if code != 0 || !strings.Contains(out, ", off") || strings.Contains(out, "not HTTPS") {
		t.Errorf("disable: %d, want no HTTPS warning again: %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "show", fmt.Sprint(id))
	if code != 0 || !strings.Contains(out, "headers:            Authorization (values not shown)\n") ||
		!strings.Contains(out, "standard webhooks:  on") || !strings.Contains(out, "active:             off\n") ||
		strings.Contains(out, "for-receiver") || strings.Contains(out, "not HTTPS") {
		t.Errorf("show: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "update", fmt.Sprint(id), "--header", "X-Tenant: kahatex")
	if code != 0 || !strings.HasSuffix(out, "\nheaders removed: Authorization\n") || strings.Contains(out, "for-receiver") {
		t.Errorf("update --header: %d, want Authorization named as removed: %s", code, out)
	}
	operator := []string{"RELAY_ADMIN_URL=http://" + addr, "RELAY_ADMIN_TOKEN=" + operatorToken}
	code, out = cli(t, operator, "webhooks", "create", "--name", "no company", "--endpoint", recv.URL+"/x", "--events", "task.completed")
	if code != 1 || !strings.Contains(out, "--company (company_id): required with an operator token") {
		t.Errorf("create with an operator token, no --company: %d %s", code, out)
	}
	if code, out = cli(t, env, "webhooks", "delete", "cli-hook"); code != 2 || !strings.Contains(out, `invalid webhook id "cli-hook": want a number`) {
		t.Errorf("delete cli-hook: %d %s", code, out)
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
	// Without a terminal (here /dev/null) delete does not ask, as a
	// script's; the audit trail outlives the webhook, its deliveries are
	// not listed.
	if code, out = cli(t, env, "webhooks", "delete", fmt.Sprint(id)); code != 0 || !strings.Contains(out, "its audit trail is kept") {
		t.Errorf("delete: %d %s", code, out)
	}
	code, out = cli(t, env, "webhooks", "audit", fmt.Sprint(id))
	if code != 0 || !strings.Contains(out, "webhook.delete") || !strings.Contains(out, "webhook.create") || !strings.Contains(out, "changed headers") {
		t.Errorf("audit of the deleted webhook: %d %s", code, out)
	}
	if code, out = cli(t, env, "webhooks", "deliveries", fmt.Sprint(id)); code != 1 || !strings.Contains(out, "no such webhook") {
		t.Errorf("deliveries of the deleted webhook: %d %s", code, out)
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

// fakeRequest is a request the fake admin API received.
type fakeRequest struct {
	method, path string
	body         map[string]any
}

// fakeStatus is a canned answer with another status than 200.
type fakeStatus struct {
	status int
	body   any
}

// fakeAdmin is an admin API answering each "METHOD /path" with its canned
// answer (a fakeStatus for another status than 200; 404 when it has none),
// as the admin API writes it. It returns its URL and the requests it got.
func fakeAdmin(t *testing.T, answers map[string]any) (string, func() []fakeRequest) {
	t.Helper()
	var mu sync.Mutex
	var got []fakeRequest
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := fakeRequest{method: r.Method, path: r.URL.Path}
		_ = json.NewDecoder(r.Body).Decode(&req.body)
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		v, ok := answers[r.Method+" "+r.URL.Path]
		status := http.StatusOK
		switch a := v.(type) {
		case nil:
			if !ok {
				status, v = http.StatusNotFound, map[string]any{"error": map[string]any{"code": "not_found", "message": "no such webhook"}}
			}
		case fakeStatus:
			status, v = a.status, a.body
		}
		if v == nil {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(api.Close)
	return api.URL, func() []fakeRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// hookAnswer is the admin API's answer with one webhook, of company 1.
func hookAnswer(id int, name, url string, warnings ...string) map[string]any {
	return map[string]any{"webhook": map[string]any{"id": id, "company_id": 1, "name": name, "url": url,
		"events": []string{"task.completed"}, "headers": map[string]string{}, "format": "raw", "active": true,
		"managed_by": "api", "has_secret": true}, "warnings": append([]string{}, warnings...)}
}

// TestWebhookIDsMustBeNumbers: an id that is not a number is a usage
// error (exit 2, one line) of every command taking one, before the API is
// asked, which would answer 404 "no such webhook" (exit 1).
func TestWebhookIDsMustBeNumbers(t *testing.T) {
	api, requests := fakeAdmin(t, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"show", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"get", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"update", "abc", "--name", "x"}, `invalid webhook id "abc": want a number`},
		{[]string{"enable", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"disable", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"delete", "abc", "--yes"}, `invalid webhook id "abc": want a number`},
		{[]string{"test", "abc", "--event", "task.completed"}, `invalid webhook id "abc": want a number`},
		{[]string{"deliveries", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"refire", "abc", "--from", "1h"}, `invalid webhook id "abc": want a number`},
		{[]string{"audit", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"replay", "abc", "--since", "1h"}, `invalid webhook id "abc": want a number`},
		{[]string{"replays", "abc"}, `invalid webhook id "abc": want a number`},
		{[]string{"replay-cancel", "abc", "1"}, `invalid webhook id "abc": want a number`},
		{[]string{"replay-cancel", "7", "x1"}, `invalid replay id "x1": want a number`},
		{[]string{"delete", "0", "--yes"}, `invalid webhook id "0": want a number from 1 up`},
	} {
		args := append([]string{"webhooks"}, tc.args...)
		code, out, errOut := runIn(append(args, "--url", api, "--token", "t")...)
		if code != exitUsage || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, ": "+tc.want+"\n") {
			t.Errorf("relay %s: exit %d, want 2 and %q; stdout %q, stderr %q", strings.Join(args, " "), code, tc.want, out, errOut)
		}
	}
	if got := requests(); len(got) > 0 {
		t.Errorf("the API was asked: %v", got)
	}
}

// pretendTerminal makes standard input a terminal on which typed is typed.
func pretendTerminal(t *testing.T, typed string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(typed); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	stdin, terminal := os.Stdin, stdinTerminal
	os.Stdin, stdinTerminal = f, func() bool { return true }
	t.Cleanup(func() { os.Stdin, stdinTerminal = stdin, terminal; f.Close() })
}

// TestWebhooksDeleteConfirms: delete asks on a terminal to type the
// webhook's name, as the Webhooks page does, and deletes only when it is
// typed exactly; --yes deletes without asking; without a terminal and
// without --yes it is a usage error. Its message and help say what is
// kept: the audit trail (relay webhooks audit), not the deliveries.
func TestWebhooksDeleteConfirms(t *testing.T) {
	deletes := func(got []fakeRequest) int {
		n := 0
		for _, r := range got {
			if r.method == "DELETE" {
				n++
			}
		}
		return n
	}
	answers := map[string]any{
		"GET /v1/webhooks/12":    hookAnswer(12, "Line 3 SAP", "https://sap.example.com/in"),
		"DELETE /v1/webhooks/12": fakeStatus{http.StatusNoContent, nil},
	}
	const prompt = `Delete webhook 12 "Line 3 SAP" of company 1? Type its name to confirm: `
	for _, tc := range []struct {
		typed   string
		deleted bool
	}{
		{"Line 3 SAP\n", true},
		{"Line 3 SAP\r\n", true},
		{"line 3 sap\n", false},
		{"Line 3 SAP \n", false},
		{"Line 3\n", false},
		{"", false},
	} {
		pretendTerminal(t, tc.typed)
		api, requests := fakeAdmin(t, answers)
		code, out, errOut := runIn("webhooks", "delete", "12", "--url", api, "--token", "t")
		if !strings.HasPrefix(errOut, prompt) {
			t.Errorf("typed %q: no prompt %q:\n%s", tc.typed, prompt, errOut)
		}
		switch {
		case tc.deleted && (code != 0 || deletes(requests()) != 1 || !strings.Contains(out, "deleted webhook 12")):
			t.Errorf("typed %q: exit %d, %d deletes, want the webhook deleted:\n%s%s", tc.typed, code, deletes(requests()), out, errOut)
		case !tc.deleted && (code != exitFailure || deletes(requests()) != 0 || !strings.Contains(errOut, "not deleted") || out != ""):
			t.Errorf("typed %q: exit %d, %d deletes, want exit 1 and nothing deleted:\n%s%s", tc.typed, code, deletes(requests()), out, errOut)
		}
	}

	// Not a terminal (a script, /dev/null): deleted without a question, as
	// with --yes.
	terminal := stdinTerminal
	stdinTerminal = func() bool { return false }
	t.Cleanup(func() { stdinTerminal = terminal })
	var code int
	var out, errOut string
	for _, yes := range [][]string{nil, {"--yes"}, {"-y"}} {
		api, requests := fakeAdmin(t, answers)
		code, out, errOut = runIn(append([]string{"webhooks", "delete", "12", "--url", api, "--token", "t"}, yes...)...)
		if got := requests(); code != 0 || errOut != "" || len(got) != 1 || got[0].method != "DELETE" {
			t.Errorf("delete %v: exit %d, requests %v:\n%s%s", yes, code, got, out, errOut)
		}
	}
	const want = "deleted webhook 12: its pending deliveries will not be sent and its deliveries are no longer listed; " +
		"its audit trail is kept (relay webhooks audit 12)\n"
	if out != want {
		t.Errorf("delete --yes printed\n%q, want\n%q", out, want)
	}
	_, help, _ := runIn("webhooks", "delete", "--help")
	if strings.Contains(help, "delivery history") || !strings.Contains(help, "audit trail is kept") || !strings.Contains(help, "--yes") {
		t.Errorf("delete --help promises what delete does not keep:\n%s", help)
	}
}

// TestWebhooksShow: show (or get) prints one webhook whole from GET
// /v1/webhooks/{id}: filter, header names (never values), description,
// format, Standard Webhooks, the overlap window of a rotation.
func TestWebhooksShow(t *testing.T) {
	until := time.Date(2026, 4, 25, 2, 15, 30, 0, time.UTC)
	answer := map[string]any{"webhook": map[string]any{"id": 7, "company_id": 1, "name": "Critical repairs",
		"url": "http://hooks.example.com/x", "events": []string{"repair_request.created", "task.completed"},
		"headers": map[string]string{"X-Tenant": "xxxxx", "Authorization": "xxxxx"}, "description": "to the on-call phone",
		"format": "slack", "filter": `data.priority == "critical"`, "active": true, "managed_by": "api", "has_secret": true,
		"standard_webhooks": true, "previous_secret_valid_until": until, "last_fired_at": nil, "success_rate_24h": 0.5, "attempts_24h": 4,
		"created_at": until.Add(-48 * time.Hour), "updated_at": until.Add(-24 * time.Hour)},
		"warnings": []string{httpsWarning + "; payloads may contain personal data", `events: "x" is not offered by this installation`}}
	api, requests := fakeAdmin(t, map[string]any{"GET /v1/webhooks/7": answer})
	for _, cmd := range []string{"show", "get"} {
		code, out, errOut := runIn("webhooks", cmd, "7", "--url", api, "--token", "t")
		if code != 0 || errOut != "" {
			t.Fatalf("%s: exit %d\n%s%s", cmd, code, out, errOut)
		}
		for _, want := range []string{
			"webhook:            7 (Critical repairs) of company 1\n",
			"url:                http://hooks.example.com/x\n",
			"events:             repair_request.created, task.completed\n",
			"active:             on\n",
			"format:             slack\n",
			"filter:             data.priority == \"critical\"\n",
			"headers:            Authorization, X-Tenant (values not shown)\n",
			"description:        to the on-call phone\n",
			"standard webhooks:  on (webhook-id, webhook-timestamp, webhook-signature)\n",
			"secret:             set; the previous one still signs too until " + when(&until) + " (X-SMTM-Signature-Previous)\n",
			"last fired:         never\n",
			"success 24h:        50% of 4\n",
			"\nwarning: events: \"x\" is not offered by this installation\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in:\n%s", cmd, want, out)
			}
		}
		if strings.Contains(out, "xxxxx") || strings.Contains(out, "not HTTPS") {
			t.Errorf("%s: a header value or the HTTPS warning again:\n%s", cmd, out)
		}
	}
	if got := requests(); len(got) != 2 || got[0].method != "GET" || got[0].path != "/v1/webhooks/7" {
		t.Errorf("requests: %v", got)
	}
	code, out, _ := runIn("webhooks", "show", "7", "--json", "--url", api, "--token", "t")
	var v any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !reflect.DeepEqual(v, roundTrip(t, answer)) {
		t.Errorf("show --json: exit %d, not the API's answer:\n%s", code, out)
	}
}

// TestWebhooksRefireToDefaultsToNow: refire --from without --to re-fires
// until now, and --to takes the word now as well as 0s.
func TestWebhooksRefireToDefaultsToNow(t *testing.T) {
	api, requests := fakeAdmin(t, map[string]any{"POST /v1/webhooks/7/refire": map[string]any{"refired": 2}})
	for _, args := range [][]string{{"--from", "1h"}, {"--from", "1h", "--to", "now"}, {"--from", "1h", "--to", "NOW"}, {"--from", "1h", "--to", "0s"}} {
		before := time.Now()
		code, out, errOut := runIn(append([]string{"webhooks", "refire", "7", "--url", api, "--token", "t"}, args...)...)
		got := requests()
		if code != 0 || !strings.Contains(out, "re-fired 2 failed deliveries") || len(got) == 0 {
			t.Fatalf("refire %v: exit %d\n%s%s", args, code, out, errOut)
		}
		body := got[len(got)-1].body
		from, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(body["from"]))
		to, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(body["to"]))
		if err1 != nil || err2 != nil || to.Before(before.Add(-time.Second)) || to.After(time.Now().Add(time.Second)) ||
			to.Sub(from).Round(time.Minute) != time.Hour {
			t.Errorf("refire %v: sent %v, want from an hour ago to now", args, body)
		}
	}
	n := len(requests())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "now"}, "--to needs --from"},
		{[]string{"--delivery", "d-1", "--to", "now"}, "not both"},
		{nil, "--delivery UUID, or --from (and --to), is required"},
		{[]string{"--from", "1h", "--to", "soon"}, `--to "soon": want an RFC 3339 time`},
	} {
		code, _, errOut := runIn(append([]string{"webhooks", "refire", "7", "--url", api, "--token", "t"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("refire %v: exit %d, want 2 and %q: %s", tc.args, code, tc.want, errOut)
		}
	}
	if len(requests()) != n {
		t.Errorf("a usage error asked the API: %v", requests()[n:])
	}
}

// TestWebhooksCLINamesFlagsNotFields: an API error about a field whose
// flag is named otherwise names the flag before the field (company_id is
// --company, url is --endpoint, headers is --header).
func TestWebhooksCLINamesFlagsNotFields(t *testing.T) {
	invalid := func(field, message string) fakeStatus {
		return fakeStatus{http.StatusUnprocessableEntity, map[string]any{"error": map[string]any{
			"code": "invalid_webhook", "message": field + ": " + message, "field": field}}}
	}
	for _, tc := range []struct {
		answer fakeStatus
		args   []string
		want   string
	}{
		{invalid("company_id", "required with an operator token"), []string{"create", "--name", "a", "--endpoint", "https://a.example.com", "--events", "task.completed"},
			"--company (company_id): required with an operator token"},
		{fakeStatus{http.StatusForbidden, map[string]any{"error": map[string]any{"code": "forbidden", "field": "company_id",
			"message": "company_id: this token manages company 1 only"}}}, []string{"create", "--company", "2"}, "--company (company_id): this token manages company 1 only"},
		{invalid("url", `"ftp://x" is not an http or https URL`), []string{"create", "--endpoint", "ftp://x"}, `--endpoint (url): "ftp://x" is not an http or https URL`},
		{invalid("headers[X-Key]", "value contains control characters (such as a line break)"), []string{"create", "--header", "X-Key: a"},
			`--header "X-Key" (headers[X-Key]): value contains control characters`},
		{invalid("secret_overlap", "only for updates that change the secret"), []string{"create"}, "--secret-overlap (secret_overlap): only for updates"},
		{invalid("name", "required"), []string{"create"}, "relay webhooks create: name: required (HTTP 422, invalid_webhook)"},
	} {
		api, _ := fakeAdmin(t, map[string]any{"POST /v1/webhooks": tc.answer})
		code, out, errOut := runIn(append(append([]string{"webhooks"}, tc.args...), "--url", api, "--token", "t")...)
		field := tc.answer.body.(map[string]any)["error"].(map[string]any)["field"].(string)
		if code != exitFailure || out != "" || !strings.Contains(errOut, tc.want) || (field != "name" && strings.Contains(errOut, "create: "+field)) {
			t.Errorf("answer about %s: exit %d, want 1 and %q:\n%s%s", field, code, tc.want, out, errOut)
		}
	}
}

// TestWebhooksHTTPSWarningOnlyWhenURLSet: the warning that a URL is not
// HTTPS is printed when a webhook is created or its URL changed, not again
// by enable, disable or an update of something else.
func TestWebhooksHTTPSWarningOnlyWhenURLSet(t *testing.T) {
	const warning = httpsWarning + "; payloads may contain personal data (user names, task details) and travel unencrypted"
	saved := hookAnswer(7, "plain", "http://hooks.example.com/x", warning, `events: "x" is not offered by this installation`)
	api, _ := fakeAdmin(t, map[string]any{"POST /v1/webhooks": saved, "PATCH /v1/webhooks/7": saved,
		"POST /v1/webhooks/7/enable": saved, "POST /v1/webhooks/7/disable": saved})
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"create", "--name", "plain", "--endpoint", "http://hooks.example.com/x", "--events", "task.completed"}, true},
		{[]string{"update", "7", "--endpoint", "http://hooks.example.com/x"}, true},
		{[]string{"update", "7", "--name", "plain"}, false},
		{[]string{"enable", "7"}, false},
		{[]string{"disable", "7"}, false},
	} {
		code, out, errOut := runIn(append(append([]string{"webhooks"}, tc.args...), "--url", api, "--token", "t")...)
		if code != 0 || strings.Contains(out, "not HTTPS") != tc.warn || !strings.Contains(out, `warning: events: "x" is not offered`) {
			t.Errorf("%v: exit %d, HTTPS warning %v, want %v (other warnings always):\n%s%s", tc.args, code, !tc.warn, tc.warn, out, errOut)
		}
	}
}

// TestWebhooksUpdateNamesDroppedHeaders: update --header replaces all
// headers; the output names those it dropped, never a value.
func TestWebhooksUpdateNamesDroppedHeaders(t *testing.T) {
	before := hookAnswer(7, "hook", "https://hooks.example.com/x")
	before["webhook"].(map[string]any)["headers"] = map[string]string{"Authorization": "xxxxx", "X-Old": "xxxxx", "x-other": "xxxxx"}
	after := hookAnswer(7, "hook", "https://hooks.example.com/x")
	after["webhook"].(map[string]any)["headers"] = map[string]string{"authorization": "xxxxx", "X-New": "xxxxx"}
	api, requests := fakeAdmin(t, map[string]any{"GET /v1/webhooks/7": before, "PATCH /v1/webhooks/7": after})
	code, out, errOut := runIn("webhooks", "update", "7", "--header", "authorization: Bearer new-token", "--header", "X-New: 1",
		"--url", api, "--token", "t")
	if code != 0 || !strings.HasSuffix(out, "\nheaders removed: X-Old, x-other\n") || strings.Contains(out, "new-token") {
		t.Errorf("update --header: exit %d, want the dropped names X-Old, x-other:\n%s%s", code, out, errOut)
	}
	if got := requests(); len(got) != 2 || got[1].method != "PATCH" || len(got[1].body["headers"].(map[string]any)) != 2 {
		t.Errorf("requests: %v", got)
	}
	// Nothing dropped, or no --header: no line, and no extra request.
	n := len(requests())
	for _, args := range [][]string{{"--header", "Authorization: x", "--header", "X-Old: y", "--header", "X-OTHER: z"}, {"--name", "hook"}} {
		code, out, errOut = runIn(append([]string{"webhooks", "update", "7", "--url", api, "--token", "t"}, args...)...)
		if code != 0 || strings.Contains(out, "headers removed") {
			t.Errorf("update %v: exit %d:\n%s%s", args, code, out, errOut)
		}
	}
	if got := requests()[n:]; len(got) != 3 {
		t.Errorf("requests: %v, want GET and PATCH, then PATCH alone", got)
	}
}

// TestWebhooksShowAndAuditEscape: show and audit print what tenants chose
// (name, URL, filter, header names, description, an audit actor and
// details) escaped, one line a row, as the other printers do.
func TestWebhooksShowAndAuditEscape(t *testing.T) {
	const evil = "evil\x1b[31m\n99\t1\tforged row\u202e\x1b]0;title\a"
	const escaped = `evil\x1b[31m\n99\t1\tforged row\u202e\x1b]0;title\x07`
	for _, tc := range []struct {
		name  string
		print func(io.Writer, json.RawMessage) error
		out   any
		lines int
	}{
		{"show", printShow, map[string]any{"webhook": map[string]any{"id": 1, "name": evil, "url": evil, "events": []string{evil},
			"headers": map[string]string{evil: "xxxxx"}, "description": evil, "format": evil, "filter": evil}, "warnings": []string{evil}}, 13},
		{"audit", printAudit, map[string]any{"audit": []any{map[string]any{"at": time.Now(), "actor": evil, "action": evil,
			"before": map[string]any{"name": "a"}, "after": map[string]any{"name": evil}, "details": map[string]any{"event_type": evil}}}}, 2},
	} {
		b, err := json.Marshal(tc.out)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := tc.print(&buf, b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s := buf.String()
		if strings.ContainsAny(s, "\x1b\a\t\u202e") || !strings.Contains(s, escaped) || strings.Count(s, "\n") != tc.lines {
			t.Errorf("%s: not escaped, or %d lines (want %d):\n%q", tc.name, strings.Count(s, "\n"), tc.lines, s)
		}
	}
}
