package console_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/store"
)

// TestFormErrorsKeepInput: server-side validation errors stand next to
// their fields and the form keeps what was typed; production mode refuses
// a non-HTTPS URL.
func TestFormErrorsKeepInput(t *testing.T) {
	for _, production := range []bool{false, true} {
		t.Run(fmt.Sprint("production=", production), func(t *testing.T) {
			e := newEnvProduction(t, production)
			b := e.browser()
			b.signIn(tokenA)
			b.get("/ui/webhooks/new")
			p := b.post("/ui/webhooks/new", url.Values{"name": {""}, "url": {e.recv.URL + "/typed"},
				"description": {"typed <description>"}, "header_name": {"X-Team"}, "header_value": {"maintenance"}})
			if p.status != http.StatusUnprocessableEntity {
				t.Fatalf("invalid form: %d", p.status)
			}
			for _, want := range []string{`id="name-error"`, `id="events-error"`, `value="` + e.recv.URL + `/typed"`,
				"typed &lt;description&gt;", `value="X-Team"`} {
				if !strings.Contains(p.body, want) {
					t.Errorf("the form lacks %q", want)
				}
			}
			if production != strings.Contains(p.body, `id="url-error"`) {
				t.Errorf("production=%v: URL error shown: %v", production, !production)
			}
			if !strings.Contains(p.body, `data-http-warning>`) {
				t.Error("the HTTPS warning is not shown for a typed http URL")
			}
			hooks, _ := e.st.ListWebhooks(context.Background(), 1)
			if len(hooks) != 0 {
				t.Fatalf("an invalid form saved a webhook")
			}
		})
	}
}

var secretRE = regexp.MustCompile(`id="generated-secret" value="([^"]+)"`)

// TestSaveAndEdit: a generated secret is shown once; header values are
// masked after saving and kept when left empty; a rotated secret is shown
// once; the audit log names the token.
func TestSaveAndEdit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	b.get("/ui/webhooks/new")
	p := b.post("/ui/webhooks/new", url.Values{"name": {"Slack #maintenance"}, "url": {e.recv.URL + "/slack"},
		"events": {"task.completed", "shutdown.reported"}, "header_name": {"Authorization", ""},
		"header_value": {"Bearer very-secret-header", ""}, "description": {"Alerts"}})
	m := secretRE.FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		t.Fatalf("save: %d, no generated secret shown:\n%s", p.status, p.body)
	}
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	if len(hooks) != 1 || hooks[0].Secret != m[1] || hooks[0].Headers["Authorization"] != "Bearer very-secret-header" {
		t.Fatalf("saved: %+v", hooks)
	}
	id := hooks[0].ID
	for _, path := range []string{"/ui/webhooks", fmt.Sprintf("/ui/webhooks/%d", id), fmt.Sprintf("/ui/webhooks/%d/edit", id)} {
		pg := b.get(path)
		if strings.Contains(pg.body, m[1]) || strings.Contains(pg.body, "very-secret-header") {
			t.Fatalf("%s shows the secret or a header value", path)
		}
	}
	// Edit: the empty header value keeps the saved one; a second header
	// is added.
	b.get(fmt.Sprintf("/ui/webhooks/%d/edit", id))
	p = b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), url.Values{"name": {"Slack #maint"}, "url": {e.recv.URL + "/slack"},
		"events": {"task.completed"}, "header_name": {"Authorization", "X-Team"}, "header_value": {"", "ops"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("edit: %d\n%s", p.status, p.body)
	}
	h, _ := e.st.WebhookByID(ctx, 1, id)
	if h.Name != "Slack #maint" || h.Headers["Authorization"] != "Bearer very-secret-header" || h.Headers["X-Team"] != "ops" ||
		h.Secret != m[1] || len(h.Events) != 1 {
		t.Fatalf("after edit: %+v", h.Webhook)
	}
	// Rotate: the new secret is shown once.
	p = b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), url.Values{"name": {"Slack #maint"}, "url": {e.recv.URL + "/slack"},
		"events": {"task.completed"}, "header_name": {"Authorization"}, "rotate_secret": {"1"}})
	m2 := secretRE.FindStringSubmatch(p.body)
	if m2 == nil || m2[1] == m[1] {
		t.Fatalf("rotate: %d\n%s", p.status, p.body)
	}
	h, _ = e.st.WebhookByID(ctx, 1, id)
	if h.Secret != m2[1] || len(h.Headers) != 1 {
		t.Fatalf("after rotate: %+v", h.Webhook)
	}
	entries, _ := e.st.AuditLog(ctx, 1, id, 10)
	if len(entries) != 3 {
		t.Fatalf("audit: %d entries", len(entries))
	}
	for _, en := range entries {
		if en.Actor != "alice@one" {
			t.Fatalf("audit actor %q, want the token's name", en.Actor)
		}
	}
	audit := b.get(fmt.Sprintf("/ui/webhooks/%d/audit", id))
	for _, want := range []string{"Registered", "Changed", "Slack #maintenance", "Slack #maint", "alice@one", "secret_changed"} {
		if !strings.Contains(audit.body, want) {
			t.Errorf("audit page lacks %q", want)
		}
	}
}

// TestOperatorPicksCompany: an operator picks a company and then acts
// within it only, under the operator token's name.
func TestOperatorPicksCompany(t *testing.T) {
	e := newEnv(t)
	e.create(tokenA, "Kahatex hook", "/a")
	e.create(tokenB, "Nordwerk hook", "/b")
	b := e.browser()
	b.get("/ui/signin")
	if p := b.post("/ui/signin", url.Values{"token": {tokenOp}}); p.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d", p.status)
	}
	if p := b.get("/ui/webhooks"); p.status != http.StatusSeeOther || p.location != "/ui/company" {
		t.Fatalf("operator without a company: %d %s", p.status, p.location)
	}
	p := b.get("/ui/company")
	if !strings.Contains(p.body, "PT Kahatex") || !strings.Contains(p.body, "Nordwerk GmbH") {
		t.Fatalf("picker:\n%s", p.body)
	}
	b.post("/ui/company", url.Values{"company": {"2"}})
	p = b.get("/ui/webhooks")
	if !strings.Contains(p.body, "Nordwerk hook") || strings.Contains(p.body, "Kahatex hook") {
		t.Fatalf("company 2's list:\n%s", p.body)
	}
	b.get("/ui/webhooks/new")
	b.post("/ui/webhooks/new", url.Values{"name": {"By ops"}, "url": {e.recv.URL + "/ops"}, "events": {"user.created"}})
	hooks, _ := e.st.ListWebhooks(context.Background(), 2)
	if len(hooks) != 2 {
		t.Fatalf("company 2 has %d webhooks", len(hooks))
	}
	entries, _ := e.st.CompanyAuditLog(context.Background(), 2, 0, 10)
	if entries[0].Actor != "ops" || entries[0].Action != "webhook.create" {
		t.Fatalf("audit: %+v", entries[0])
	}
}

// TestToggleAndFileManaged: the toggle answers JSON to the page's script
// and redirects plain forms; a webhook from the config file is shown
// read-only with the reason, and its forms are refused.
func TestToggleAndFileManaged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create(tokenA, "Table hook", "/a")
	if _, _, _, err := e.st.SyncFileWebhooks(ctx, []store.Webhook{{CompanyID: 1, Name: "From the file", URL: e.recv.URL + "/f",
		Events: []string{"task.completed"}, Active: true}}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn(tokenA)
	p := b.do("POST", fmt.Sprintf("/ui/webhooks/%d/active", id), url.Values{"csrf": {b.csrf}, "active": {"false"}},
		map[string]string{"Accept": "application/json"})
	if p.status != 200 || !strings.Contains(p.body, `"active":false`) {
		t.Fatalf("toggle: %d %s", p.status, p.body)
	}
	list := b.get("/ui/webhooks")
	if !strings.Contains(list.body, "Config file") || !strings.Contains(list.body, "Read-only: managed in the config file") {
		t.Fatalf("file webhook not read-only:\n%s", list.body)
	}
	var fileID int64
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	for _, h := range hooks {
		if h.ManagedBy == "file" {
			fileID = h.ID
		}
	}
	if strings.Contains(list.body, fmt.Sprintf(`action="/ui/webhooks/%d/active"`, fileID)) {
		t.Fatal("the file webhook has a toggle")
	}
	if p := b.get(fmt.Sprintf("/ui/webhooks/%d/edit", fileID)); p.status != http.StatusConflict || !strings.Contains(p.body, "config file") {
		t.Fatalf("edit of a file webhook: %d", p.status)
	}
	if p := b.post(fmt.Sprintf("/ui/webhooks/%d/active", fileID), url.Values{"active": {"false"}}); p.status != http.StatusConflict {
		t.Fatalf("toggle of a file webhook: %d", p.status)
	}
}

// TestStaticAssets: assets are served under hashed names for a year, with
// an ETag; unknown names are not found.
func TestStaticAssets(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	p := b.get("/ui/signin")
	css := regexp.MustCompile(`href="(/ui/static/app\.[0-9a-f]{12}\.css)"`).FindStringSubmatch(p.body)
	if css == nil {
		t.Fatalf("no hashed stylesheet:\n%s", p.body)
	}
	res, err := http.Get(e.srv.URL + css[1])
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Cache-Control"), "max-age=31536000") || res.Header.Get("ETag") == "" {
		t.Fatalf("asset: %d %v", res.StatusCode, res.Header)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+css[1], nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	res2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d", res2.StatusCode)
	}
	if p := b.get("/ui/static/app.css"); p.status != http.StatusNotFound {
		t.Fatalf("unhashed name: %d", p.status)
	}
}

// TestHeaderRenameNeedsValue: on the edit form an empty value keeps the
// saved value only for a row named as a saved header, case aside (a
// case-only rename keeps it under the new spelling); a renamed or new
// header with an empty value is refused next to its row, nothing saved,
// and the form keeps what was typed.
func TestHeaderRenameNeedsValue(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	b.get("/ui/webhooks/new")
	p := b.post("/ui/webhooks/new", url.Values{"name": {"CMMS"}, "url": {e.recv.URL + "/cmms"}, "events": {"task.completed"},
		"header_name": {"authorization"}, "header_value": {"Bearer kept-credential"}})
	if p.status != 200 {
		t.Fatalf("save: %d\n%s", p.status, p.body)
	}
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	id := hooks[0].ID
	edit := fmt.Sprintf("/ui/webhooks/%d/edit", id)
	form := func(names, values []string) url.Values {
		return url.Values{"name": {"CMMS renamed"}, "url": {e.recv.URL + "/cmms"}, "events": {"task.completed"},
			"description": {"typed description"}, "secret": {"typed-secret-0123456789abcdef"},
			"header_name": names, "header_value": values}
	}
	// Renamed with the value left empty: refused, nothing changed.
	for _, tc := range []struct{ names, values []string }{
		{[]string{"X-Api-Key"}, []string{""}},
		{[]string{"authorization", "X-Api-Key"}, []string{"", ""}}, // kept, plus a new one without a value
	} {
		p = b.post(edit, form(tc.names, tc.values))
		msg := html.EscapeString(`header "X-Api-Key": enter its value (a new or renamed header has no saved value to keep)`)
		if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, msg) ||
			!strings.Contains(p.body, `aria-invalid="true" aria-describedby="hv`+fmt.Sprint(len(tc.names)-1)+`-error"`) {
			t.Fatalf("%v with empty values: %d, want 422 with the row's message:\n%s", tc.names, p.status, p.body)
		}
		for _, want := range []string{`value="CMMS renamed"`, `value="typed description"`, `value="X-Api-Key"`, "Not saved"} {
			if !strings.Contains(p.body, want) {
				t.Errorf("%v: the refused form lacks %q", tc.names, want)
			}
		}
		h, _ := e.st.WebhookByID(ctx, 1, id)
		if h.Name != "CMMS" || len(h.Headers) != 1 || h.Headers["authorization"] != "Bearer kept-credential" {
			t.Fatalf("%v: a refused form changed the webhook: %+v", tc.names, h.Webhook)
		}
	}
	// A case-only rename keeps the value under the new spelling.
	if p = b.post(edit, form([]string{"Authorization"}, []string{""})); p.status != http.StatusSeeOther {
		t.Fatalf("case-only rename: %d\n%s", p.status, p.body)
	}
	h, _ := e.st.WebhookByID(ctx, 1, id)
	if len(h.Headers) != 1 || h.Headers["Authorization"] != "Bearer kept-credential" {
		t.Fatalf("after a case-only rename: %v", h.Headers)
	}
	// Renamed with a value: saved.
	if p = b.post(edit, form([]string{"X-Api-Key"}, []string{"key-1"})); p.status != http.StatusSeeOther {
		t.Fatalf("rename with a value: %d\n%s", p.status, p.body)
	}
	if h, _ := e.st.WebhookByID(ctx, 1, id); len(h.Headers) != 1 || h.Headers["X-Api-Key"] != "key-1" {
		t.Fatalf("after a rename with a value: %v", h.Headers)
	}
	// The new form: a header without a value is refused too.
	b.get("/ui/webhooks/new")
	p = b.post("/ui/webhooks/new", url.Values{"name": {"Empty header"}, "url": {e.recv.URL + "/e"}, "events": {"task.completed"},
		"header_name": {"X-Team"}, "header_value": {""}})
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, html.EscapeString(`header "X-Team": enter its value`)) {
		t.Fatalf("new webhook with an empty header value: %d\n%s", p.status, p.body)
	}
	if hooks, _ := e.st.ListWebhooks(ctx, 1); len(hooks) != 1 {
		t.Fatalf("a refused new form saved a webhook")
	}
}

// TestRefusedFormKeepsSecret: a form refused for another field shows the
// Secret the admin typed again (still a password input), on the new and
// the edit form, so that saving the corrected form keeps it.
func TestRefusedFormKeepsSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	const typed = "my-own-secret-0123456789-<&>"
	b.get("/ui/webhooks/new")
	p := b.post("/ui/webhooks/new", url.Values{"name": {""}, "url": {e.recv.URL + "/s"}, "events": {"task.completed"}, "secret": {typed}})
	want := `id="secret" name="secret" type="password" value="` + html.EscapeString(typed) + `"`
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="name-error"`) || !strings.Contains(p.body, want) {
		t.Fatalf("new form refused: %d, the typed secret is not shown again:\n%s", p.status, p.body)
	}
	fixed := formValues(t, p.body)
	fixed.Set("name", "Own secret")
	if p = b.post("/ui/webhooks/new", fixed); p.status != http.StatusSeeOther {
		t.Fatalf("the corrected form: %d\n%s", p.status, p.body)
	}
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	if len(hooks) != 1 || hooks[0].Secret != typed {
		t.Fatalf("saved: %+v, want the secret typed", hooks)
	}
	edit := fmt.Sprintf("/ui/webhooks/%d/edit", hooks[0].ID)
	const next = "the-next-secret-0123456789"
	p = b.post(edit, url.Values{"name": {"Own secret"}, "url": {e.recv.URL + "/s"}, "events": {}, "secret": {next}})
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="events-error"`) ||
		!strings.Contains(p.body, `id="secret" name="secret" type="password" value="`+next+`"`) {
		t.Fatalf("edit form refused: %d, the typed secret is not shown again:\n%s", p.status, p.body)
	}
	if h, _ := e.st.WebhookByID(ctx, 1, hooks[0].ID); h.Secret != typed {
		t.Fatal("a refused edit changed the secret")
	}
}

// TestDescriptionIsOneLine: the Description is a single-line text input
// (a browser cannot send a line break, which the relay refuses) as long as
// validation allows.
func TestDescriptionIsOneLine(t *testing.T) {
	e := newEnv(t)
	id := e.create(tokenA, "One line", "/o")
	b := e.browser()
	b.signIn(tokenA)
	for _, path := range []string{"/ui/webhooks/new", fmt.Sprintf("/ui/webhooks/%d/edit", id)} {
		p := b.get(path)
		want := fmt.Sprintf(`<input id="description" name="description" type="text" value="" maxlength="%d"`, config.MaxDescriptionChars)
		if !strings.Contains(p.body, want) || strings.Contains(p.body, "<textarea") {
			t.Errorf("%s: the description is not a one-line input of at most %d characters:\n%s", path, config.MaxDescriptionChars, p.body)
		}
	}
}

// TestNewWebhookActiveCheckbox: the new form's Active checkbox is checked
// by default and saves an active webhook; unticked, the webhook is created
// disabled and the page says so; a form without the field keeps the API's
// default (active).
func TestNewWebhookActiveCheckbox(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	p := b.get("/ui/webhooks/new")
	if !strings.Contains(p.body, `<input type="hidden" name="active" value="false">`) ||
		!strings.Contains(p.body, `<input type="checkbox" id="active" name="active" value="true" checked`) {
		t.Fatalf("the new form has no Active checkbox checked by default:\n%s", p.body)
	}
	for _, tc := range []struct {
		name   string
		active []string
		want   bool
		flash  string
	}{
		{"Ticked", []string{"false", "true"}, true, "It is active for new events."},
		{"Unticked", []string{"false"}, false, "registered, disabled: no event fires it until you enable it"},
		{"Without the field", nil, true, "It is active for new events."},
	} {
		form := url.Values{"name": {tc.name}, "url": {e.recv.URL + "/a"}, "events": {"task.completed"}, "secret": {"a-secret-of-the-admin-0123"}}
		if tc.active != nil {
			form["active"] = tc.active
		}
		p := b.post("/ui/webhooks/new", form)
		if p.status != http.StatusSeeOther {
			t.Fatalf("%s: %d\n%s", tc.name, p.status, p.body)
		}
		var got *store.WebhookStats
		hooks, _ := e.st.ListWebhooks(ctx, 1)
		for i := range hooks {
			if hooks[i].Name == tc.name {
				got = &hooks[i]
			}
		}
		if got == nil || got.Active != tc.want {
			t.Fatalf("%s: saved %+v, want active %v", tc.name, got, tc.want)
		}
		if d := b.get(p.location); !strings.Contains(d.body, tc.flash) {
			t.Errorf("%s: the page does not say %q:\n%s", tc.name, tc.flash, d.body)
		}
	}
	// Refused, the form keeps the box unticked.
	p = b.post("/ui/webhooks/new", url.Values{"name": {""}, "url": {e.recv.URL + "/a"}, "events": {"task.completed"}, "active": {"false"}})
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="active" name="active" value="true" aria-describedby`) {
		t.Fatalf("refused: %d, the Active box is not kept unticked:\n%s", p.status, p.body)
	}
}

// TestDisabledWebhookDeliveriesWait: a pending delivery of an active
// webhook shows its next attempt; of a disabled one, that it waits for the
// webhook to be enabled, not a next attempt in the past.
func TestDisabledWebhookDeliveriesWait(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create(tokenA, "Waiting", "/w")
	e.delivery(id, 1, time.Now().Add(-10*time.Minute))
	b := e.browser()
	b.signIn(tokenA)
	e.clock.add(2 * time.Minute) // the next attempt is due, in the past
	detail := fmt.Sprintf("/ui/webhooks/%d?status=retrying", id)
	if p := b.get(detail); !strings.Contains(p.body, "Next attempt") || strings.Contains(p.body, "Waits:") {
		t.Fatalf("an active webhook's pending delivery:\n%s", p.body)
	}
	if _, err := e.api.SetActive(ctx, e.actor(tokenA), id, false); err != nil {
		t.Fatal(err)
	}
	p := b.get(detail)
	if strings.Contains(p.body, "Next attempt") || !strings.Contains(p.body, "Waits: the webhook is disabled, so nothing is attempted until you enable it again.") {
		t.Fatalf("a disabled webhook's pending delivery:\n%s", p.body)
	}
}
