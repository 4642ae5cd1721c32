package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// TestOpenAPIMatchesRoutes: every route the server has is in openapi.yaml,
// and every operation the document describes is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(admin.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "post", "patch", "put", "delete":
				documented = append(documented, strings.ToUpper(m)+" "+p)
			}
		}
	}
	served := admin.Routes()
	sort.Strings(documented)
	sort.Strings(served)
	if !slices.Equal(documented, served) {
		t.Errorf("openapi.yaml and the router differ:\ndocumented %q\nserved     %q", documented, served)
	}
	e := newEnv(t, envOptions{})
	if r := e.call("", "GET", "/openapi.yaml", nil); r.status != 200 || !strings.Contains(string(r.body), "openapi: 3.1.0") {
		t.Errorf("GET /openapi.yaml: %d", r.status)
	}
}

// TestAuthRequired: every operation refuses a request without a token, or
// with an unknown one, with 401 and a JSON error.
func TestAuthRequired(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, _ := e.create(tokenA, map[string]any{"name": "a", "url": e.recv.URL, "events": []string{"task.completed"}})
	for _, r := range admin.Routes() {
		method, pattern, _ := strings.Cut(r, " ")
		if pattern == "/openapi.yaml" {
			continue
		}
		p := strings.NewReplacer("{id}", fmt.Sprint(id), "{delivery_id}", "00000000-0000-0000-0000-000000000001").Replace(pattern)
		for _, tok := range []string{"", "not-a-token", tokenA + "x"} {
			res := e.call(tok, method, p, map[string]any{})
			if res.status != http.StatusUnauthorized || res.errorOf(t)["code"] != "unauthorized" ||
				!strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with token %q: %d %s", method, p, tok, res.status, res.body)
			}
		}
	}
	// Not even the webhook's existence changed.
	hooks, _ := e.st.ListWebhooks(context.Background(), 1)
	if len(hooks) != 1 || hooks[0].Name != "a" || !hooks[0].Active {
		t.Errorf("webhooks after unauthorised calls: %+v", hooks)
	}
}

// TestRegisterListUpdate: the happy path of the Webhooks page.
func TestRegisterListUpdate(t *testing.T) {
	e := newEnv(t, envOptions{key: true})
	id, created := e.create(tokenA, map[string]any{
		"name": "SAP-PM bridge", "url": e.recv.URL + "/sap", "events": []string{"task.completed", "repair_request.created"},
		"headers": map[string]string{"Authorization": "Bearer xyz-credential"}, "description": "tasks to SAP",
	})
	generated, _ := created["secret"].(string)
	if !strings.HasPrefix(generated, "whsec_") || len(generated) < 40 {
		t.Fatalf("no generated secret in the create answer: %v", created)
	}
	warnings := fmt.Sprint(created["warnings"])
	if !strings.Contains(warnings, "not HTTPS") {
		t.Errorf("warnings %s, want the non-HTTPS warning", warnings)
	}
	w := created["webhook"].(map[string]any)
	if w["has_secret"] != true || w["active"] != true || w["managed_by"] != "table" || w["company_id"].(float64) != 1 ||
		w["last_fired_at"] != nil || w["success_rate_24h"] != nil {
		t.Errorf("created webhook: %v", w)
	}
	if h := w["headers"].(map[string]any); h["Authorization"] != "xxxxx" {
		t.Errorf("header values not masked: %v", h)
	}

	// At rest: encrypted.
	var raw string
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT secret FROM relay.webhooks WHERE id = $1`, id).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw, "enc:v1:") || strings.Contains(raw, generated) {
		t.Errorf("stored secret %q is not encrypted", raw)
	}

	list := e.call(tokenA, "GET", "/v1/webhooks", nil)
	hooks := list.json(t)["webhooks"].([]any)
	if list.status != 200 || len(hooks) != 1 || hooks[0].(map[string]any)["name"] != "SAP-PM bridge" {
		t.Fatalf("list: %d %s", list.status, list.body)
	}
	for _, col := range []string{"name", "url", "events", "last_fired_at", "success_rate_24h", "active"} {
		if _, ok := hooks[0].(map[string]any)[col]; !ok {
			t.Errorf("list lacks the guide's column %s", col)
		}
	}

	// Update: rename, change the events, set a secret; absent fields stay.
	up := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{
		"name": "SAP bridge", "events": []string{"task.approved"}, "secret": "a-new-secret-of-enough-bytes"})
	if up.status != 200 {
		t.Fatalf("update: %d %s", up.status, up.body)
	}
	uw := up.json(t)["webhook"].(map[string]any)
	if uw["name"] != "SAP bridge" || fmt.Sprint(uw["events"]) != "[task.approved]" || uw["description"] != "tasks to SAP" {
		t.Errorf("updated webhook: %v", uw)
	}
	if _, has := up.json(t)["secret"]; has {
		t.Errorf("an update echoed the secret it was given: %s", up.body)
	}
	hs, _ := e.st.Webhooks(context.Background())
	if len(hs) != 1 || hs[0].Secret != "a-new-secret-of-enough-bytes" || hs[0].Headers["Authorization"] != "Bearer xyz-credential" {
		t.Errorf("stored after update: %+v", hs)
	}
	// Rotate: a generated secret, returned once.
	rot := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"rotate_secret": true})
	if s, _ := rot.json(t)["secret"].(string); rot.status != 200 || !strings.HasPrefix(s, "whsec_") {
		t.Errorf("rotate: %d %s", rot.status, rot.body)
	}

	// Events dropdown.
	ev := e.call(tokenA, "GET", "/v1/events", nil)
	if got := fmt.Sprint(ev.json(t)["events"]); got != fmt.Sprint(allEvents) {
		t.Errorf("events: %s", got)
	}

	// The audit log has every change, secrets redacted.
	au := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil)
	entries := au.json(t)["audit"].([]any)
	var actions []string
	for _, en := range entries {
		actions = append(actions, en.(map[string]any)["action"].(string))
		if en.(map[string]any)["actor"] != "alice@one" {
			t.Errorf("audit actor: %v", en)
		}
	}
	if fmt.Sprint(actions) != "[webhook.rotate_secret webhook.update webhook.create]" {
		t.Errorf("audit actions %v", actions)
	}
	assertNoSecrets(t, e, []string{"a-new-secret-of-enough-bytes", "xyz-credential"})
	if strings.Count(e.responses(), generated) != 1 {
		t.Errorf("the generated secret appears %d times in answers; want once (the create)", strings.Count(e.responses(), generated))
	}
	if strings.Contains(e.logs.String(), generated) {
		t.Error("the generated secret is in the log")
	}
}

// assertNoSecrets fails if any of secrets appears in an answer or a log line.
func assertNoSecrets(t *testing.T, e *env, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(e.responses(), s) {
			t.Errorf("an API answer contains %q", s)
		}
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("the log contains %q", s)
		}
	}
	var audit string
	_ = e.st.Pool().QueryRow(context.Background(), `SELECT coalesce(string_agg(before::text || after::text || details::text, ' '), '') FROM relay.audit_log`).Scan(&audit)
	for _, s := range secrets {
		if strings.Contains(audit, s) {
			t.Errorf("the audit log contains %q", s)
		}
	}
}

// TestValidation: bad input is a 400 or 422 naming the field, never a 500.
func TestValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := func(change map[string]any) map[string]any {
		m := map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"}, "secret": "sixteen-bytes-ok!"}
		for k, v := range change {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	e.create(tokenA, good(map[string]any{"name": "taken"}))
	tests := []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"not JSON", `{"name": `, 400, "bad_json", ""},
		{"empty body", ``, 400, "bad_json", ""},
		{"unknown field", good(map[string]any{"secrett": "x"}), 400, "unknown_field", "secrett"},
		{"wrong type", good(map[string]any{"events": "task.completed"}), 400, "bad_type", "events"},
		{"no name", good(map[string]any{"name": nil}), 422, "invalid_webhook", "name"},
		{"no url", good(map[string]any{"url": nil}), 422, "invalid_webhook", "url"},
		{"ftp url", good(map[string]any{"url": "ftp://files.example.com/x"}), 422, "invalid_webhook", "url"},
		{"credentials in url", good(map[string]any{"url": "https://u:p@example.com/"}), 422, "invalid_webhook", "url"},
		{"no events", good(map[string]any{"events": []string{}}), 422, "invalid_webhook", "events"},
		{"unknown event", good(map[string]any{"events": []string{"task.done"}}), 422, "invalid_webhook", "events[0]"},
		{"duplicate event", good(map[string]any{"events": []string{"task.completed", "task.completed"}}), 422, "invalid_webhook", "events[1]"},
		{"short secret", good(map[string]any{"secret": "short"}), 422, "invalid_webhook", "secret"},
		{"empty secret", good(map[string]any{"secret": ""}), 422, "invalid_webhook", "secret"},
		{"reserved header", good(map[string]any{"headers": map[string]string{"x-smtm-signature": "forged"}}), 422, "invalid_webhook", "headers[x-smtm-signature]"},
		{"content-type header", good(map[string]any{"headers": map[string]string{"Content-Type": "text/plain"}}), 422, "invalid_webhook", "headers[Content-Type]"},
		{"user-agent header", good(map[string]any{"headers": map[string]string{"user-agent": "x"}}), 422, "invalid_webhook", "headers[user-agent]"},
		{"header with newline", good(map[string]any{"headers": map[string]string{"X-Team": "a\r\nX-Evil: 1"}}), 422, "invalid_webhook", "headers[X-Team]"},
		{"bad header name", good(map[string]any{"headers": map[string]string{"Bad Name": "v"}}), 422, "invalid_webhook", "headers[Bad Name]"},
		{"metadata address", good(map[string]any{"url": "http://169.254.169.254/latest/meta-data"}), 422, "invalid_webhook", "url"},
		{"private address", good(map[string]any{"url": "https://10.0.0.5/hook"}), 422, "invalid_webhook", "url"},
		{"CGNAT address", good(map[string]any{"url": "https://100.64.1.1/hook"}), 422, "invalid_webhook", "url"},
		{"mapped IPv6", good(map[string]any{"url": "https://[::ffff:192.168.0.1]/hook"}), 422, "invalid_webhook", "url"},
		{"unique-local IPv6", good(map[string]any{"url": "https://[fd00::1]/hook"}), 422, "invalid_webhook", "url"},
		{"operator without company", good(nil), 422, "invalid_webhook", "company_id"},
		{"name taken", good(map[string]any{"name": "taken"}), 409, "name_taken", "name"},
		{"other company", good(map[string]any{"company_id": 2}), 403, "forbidden", "company_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tokenA
			if tt.name == "operator without company" {
				tok = tokenOp
			}
			r := e.call(tok, "POST", "/v1/webhooks", tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			er := r.errorOf(t)
			if er["code"] != tt.code || (tt.field != "" && er["field"] != tt.field) || er["message"] == "" {
				t.Errorf("error %v, want code %s field %s", er, tt.code, tt.field)
			}
		})
	}
	// Updates are checked the same way.
	id, _ := e.create(tokenA, good(map[string]any{"name": "y"}))
	for body, field := range map[string]string{
		`{"url": "http://[::1]:1/x"}`: "", // loopback is allowed in this env: no error
		`{"secret": "tiny"}`:          "secret",
		`{"events": ["nope"]}`:        "events[0]",
		`{"company_id": 2}`:           "company_id",
		`{"name": "taken"}`:           "name",
	} {
		r := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), body)
		if field == "" {
			if r.status != 200 {
				t.Errorf("PATCH %s: %d %s", body, r.status, r.body)
			}
			continue
		}
		if r.status/100 != 4 || r.errorOf(t)["field"] != field {
			t.Errorf("PATCH %s: %d %s, want a 4xx naming %s", body, r.status, r.body, field)
		}
	}
	// Bad parameters.
	for _, q := range []string{"?status=lost", "?from=yesterday", "?limit=0", "?limit=1000", "?cursor=bm90LWEtY3Vyc29y"} {
		r := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries%s", id, q), nil)
		if r.status != 400 {
			t.Errorf("deliveries%s: %d %s", q, r.status, r.body)
		}
	}
	for _, b := range []string{`{}`, `{"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}`} {
		if r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/refire", id), b); r.status != 422 {
			t.Errorf("bulk refire %s: %d %s", b, r.status, r.body)
		}
	}
	for _, b := range []string{`{}`, `{"event_type": "task.done"}`} {
		if r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), b); r.status != 422 {
			t.Errorf("test %s: %d %s", b, r.status, r.body)
		}
	}
	if strings.Contains(e.logs.String(), "status=500") {
		t.Error("a request answered 500")
	}
}

// TestProductionRefusesHTTP: with production: true a plain HTTP URL is a
// 422; HTTPS is fine.
func TestProductionRefusesHTTP(t *testing.T) {
	e := newEnv(t, envOptions{production: true, allow: []string{"127.0.0.0/8"}})
	r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "x", "url": "http://hooks.example.com/x", "events": []string{"task.completed"}})
	if r.status != 422 || r.errorOf(t)["field"] != "url" || !strings.Contains(r.errorOf(t)["message"].(string), "HTTPS") {
		t.Errorf("http in production: %d %s", r.status, r.body)
	}
	_, m := e.create(tokenA, map[string]any{"name": "x", "url": "https://127.0.0.1:9/x", "events": []string{"task.completed"}})
	if len(m["warnings"].([]any)) != 0 {
		t.Errorf("warnings for an HTTPS webhook: %v", m["warnings"])
	}
}

// TestCrossTenant: company B's token can neither see nor change company A's
// webhook, its deliveries, stats, audit trail or test events; it gets 404
// as for a webhook that does not exist.
func TestCrossTenant(t *testing.T) {
	e := newEnv(t, envOptions{})
	idA, _ := e.create(tokenA, map[string]any{"name": "a", "url": e.recv.URL + "/a", "events": []string{"task.completed"}})
	idB, _ := e.create(tokenB, map[string]any{"name": "b", "url": e.recv.URL + "/b", "events": []string{"task.completed"}})
	d := e.delivery(idA, 1, time.Now())
	e.st.Pool().Exec(context.Background(), `UPDATE relay.deliveries SET status = 'failed', finished_at = now() WHERE id = $1`, d)

	for _, r := range admin.Routes() {
		method, pattern, _ := strings.Cut(r, " ")
		if !strings.Contains(pattern, "{id}") {
			continue
		}
		for _, target := range []int64{idA, 999999} {
			p := strings.NewReplacer("{id}", fmt.Sprint(target), "{delivery_id}", d.String()).Replace(pattern)
			body := map[string]any{}
			switch {
			case strings.HasSuffix(p, "/test"):
				body = map[string]any{"event_type": "task.completed"}
			case strings.HasSuffix(p, fmt.Sprintf("%d/refire", target)):
				body = map[string]any{"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
			case method == "PATCH":
				body = map[string]any{"name": "stolen"}
			}
			res := e.call(tokenB, method, p, body)
			if res.status != http.StatusNotFound || res.errorOf(t)["code"] != "not_found" {
				t.Errorf("company B: %s %s: %d %s", method, p, res.status, res.body)
			}
		}
	}
	// B's list shows only B's webhook, also when it asks for company 1.
	for _, q := range []string{"", "?company_id=1"} {
		var names []string
		for _, h := range e.call(tokenB, "GET", "/v1/webhooks"+q, nil).json(t)["webhooks"].([]any) {
			names = append(names, h.(map[string]any)["name"].(string))
		}
		if want := map[string]string{"": "[b]", "?company_id=1": "[]"}[q]; fmt.Sprint(names) != want {
			t.Errorf("company B lists %v%s, want %s", names, q, want)
		}
	}
	// Nothing of A's changed and A's receiver got nothing.
	h, err := e.st.WebhookByID(context.Background(), 1, idA)
	if err != nil || h.Name != "a" || !h.Active {
		t.Errorf("company A's webhook after B's calls: %+v %v", h, err)
	}
	if e.status(d) != store.StatusFailed {
		t.Errorf("company A's delivery was re-fired by B: %s", e.status(d))
	}
	for _, r := range e.recv.requests() {
		if r.path == "/a" {
			t.Errorf("company B made a request to company A's receiver")
		}
	}
	// The operator sees both; A still sees its own.
	if n := len(e.call(tokenOp, "GET", "/v1/webhooks", nil).json(t)["webhooks"].([]any)); n != 2 {
		t.Errorf("operator sees %d webhooks, want 2", n)
	}
	if r := e.call(tokenOp, "GET", fmt.Sprintf("/v1/webhooks/%d", idB), nil); r.status != 200 {
		t.Errorf("operator GET: %d", r.status)
	}
	if r := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries", idA), nil); r.status != 200 {
		t.Errorf("A's deliveries: %d", r.status)
	}
}

// TestTestFire: the receiver gets the event's shape with synthetic data
// and "test": true, signed with the webhook's secret, with the product's
// headers; the answer reports status, latency and a bounded snippet.
func TestTestFire(t *testing.T) {
	e := newEnv(t, envOptions{key: true})
	const secret = "test-fire-secret-0123456789"
	id, _ := e.create(tokenA, map[string]any{"name": "t", "url": e.recv.URL + "/t", "events": []string{"task.completed"},
		"secret": secret, "headers": map[string]string{"Authorization": "Bearer for-the-receiver"}, "active": false})
	e.recv.setStatus(202)
	r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.assigned"})
	if r.status != 200 {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	res := r.json(t)
	if res["ok"] != true || res["status_code"].(float64) != 202 || res["duration_ms"].(float64) <= 0 ||
		res["response_snippet"] != "receiver says Accepted" {
		t.Errorf("test answer: %s", r.body)
	}
	got := e.recv.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	req := got[0]
	if err := signature.Verify([]byte(secret), req.body, req.header.Get("X-SMTM-Signature")); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "User-Agent": "SmartMaintenance/1.0",
		"X-SMTM-Event": "task.assigned", "X-SMTM-Delivery": res["delivery_id"].(string), "Authorization": "Bearer for-the-receiver"} {
		if req.header.Get(k) != want {
			t.Errorf("header %s = %q, want %q", k, req.header.Get(k), want)
		}
	}
	var p map[string]any
	if err := json.Unmarshal(req.body, &p); err != nil {
		t.Fatal(err)
	}
	if p["test"] != true || p["event"] != "task.assigned" || p["company_id"].(float64) != 1 || p["company_name"] != "PT Kahatex" ||
		!strings.HasSuffix(p["timestamp"].(string), "+07:00") {
		t.Errorf("payload: %s", req.body)
	}
	// The same shape as a real event's timestamp (mapper.TimestampLayout).
	if ts, err := time.Parse(time.RFC3339, p["timestamp"].(string)); err != nil || ts.Format(mapper.TimestampLayout) != p["timestamp"] {
		t.Errorf("timestamp %q is not in the payloads' layout", p["timestamp"])
	}
	data, _ := p["data"].(map[string]any)
	for _, f := range []string{"task_id", "asset_id", "technician_id", "title", "status", "due_at"} {
		if _, ok := data[f]; !ok {
			t.Errorf("synthetic data lacks %s: %s", f, req.body)
		}
	}
	keys := []string{}
	dec := json.NewDecoder(strings.NewReader(string(req.body)))
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	if fmt.Sprint(keys) != "[event timestamp company_id company_name data test]" {
		t.Errorf("payload keys in order %v", keys)
	}
	// Not a delivery: no history, no stats; in the audit log.
	var n int
	e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries`).Scan(&n)
	w := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d", id), nil).json(t)["webhook"].(map[string]any)
	if n != 0 || w["last_fired_at"] != nil || w["attempts_24h"].(float64) != 0 {
		t.Errorf("a test event was recorded as a delivery: %d deliveries, %v", n, w)
	}
	au := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil).json(t)["audit"].([]any)
	if au[0].(map[string]any)["action"] != "webhook.test" {
		t.Errorf("audit: %v", au[0])
	}
	// A failing receiver: ok false, status and snippet reported.
	e.recv.setStatus(500)
	res = e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"}).json(t)
	if res["ok"] != false || res["status_code"].(float64) != 500 || res["error"] != "HTTP 500" {
		t.Errorf("failing test: %v", res)
	}
	assertNoSecrets(t, e, []string{secret, "for-the-receiver"})
}

// TestTestFireBlocked: a webhook saved in the table whose host resolves to
// loopback is refused when the test event connects, when no allowlist
// opens it; the registration check refuses the literal address too.
func TestTestFireBlocked(t *testing.T) {
	e := newEnv(t, envOptions{allow: []string{}})
	url := strings.Replace(e.recv.URL, "127.0.0.1", "localhost", 1)
	r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"}})
	if r.status != 422 || !strings.Contains(r.errorOf(t)["message"].(string), "loopback") {
		t.Errorf("register a loopback URL: %d %s", r.status, r.body)
	}
	var id int64
	if err := e.st.Pool().QueryRow(context.Background(), `INSERT INTO relay.webhooks (company_id, name, url, events)
		VALUES (1, 'edited in', $1, '{task.completed}') RETURNING id`, url).Scan(&id); err != nil {
		t.Fatal(err)
	}
	res := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"}).json(t)
	if res["ok"] != false || !strings.HasPrefix(res["error"].(string), "blocked: ") {
		t.Errorf("test to loopback: %v", res)
	}
	if len(e.recv.requests()) != 0 {
		t.Error("the receiver was reached")
	}
}
