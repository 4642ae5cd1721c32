package console_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/admin"
)

var (
	sentRE     = regexp.MustCompile(`<summary>Message sent \(the exact bytes signed\)</summary><pre class="body" id="test-sent">([^<]*)</pre>`)
	inputRE    = regexp.MustCompile(`<input\b[^>]*>`)
	selectRE   = regexp.MustCompile(`(?s)<select\b[^>]*\bname="([^"]*)"[^>]*>(.*?)</select>`)
	optionRE   = regexp.MustCompile(`<option\b[^>]*\bvalue="([^"]*)"[^>]*>`)
	textareaRE = regexp.MustCompile(`(?s)<textarea\b[^>]*\bname="([^"]*)"[^>]*>(.*?)</textarea>`)
	attrRE     = regexp.MustCompile(`\b(name|value|type)="([^"]*)"`)
)

// formValues are the values a browser submits for the webhook form of body
// as it is shown: text and hidden inputs, checked checkboxes, each select's
// selected option (or its first), textareas.
func formValues(t *testing.T, body string) url.Values {
	t.Helper()
	start := strings.Index(body, `class="card form"`)
	if start < 0 {
		t.Fatalf("no webhook form in:\n%s", body)
	}
	start = strings.LastIndex(body[:start], "<form")
	end := start + strings.Index(body[start:], "</form>")
	if start < 0 || end < start {
		t.Fatalf("no webhook form in:\n%s", body)
	}
	form := body[start:end]
	v := url.Values{}
	for _, in := range inputRE.FindAllString(form, -1) {
		attrs := map[string]string{}
		for _, m := range attrRE.FindAllStringSubmatch(in, -1) {
			attrs[m[1]] = html.UnescapeString(m[2])
		}
		if attrs["name"] == "" {
			continue
		}
		if (attrs["type"] == "checkbox" || attrs["type"] == "radio") && !strings.Contains(in, " checked") {
			continue
		}
		v.Add(attrs["name"], attrs["value"])
	}
	for _, m := range selectRE.FindAllStringSubmatch(form, -1) {
		options := optionRE.FindAllStringSubmatch(m[2], -1)
		if len(options) == 0 {
			continue
		}
		chosen := options[0][1]
		for _, o := range options {
			if strings.Contains(o[0], " selected") {
				chosen = o[1]
			}
		}
		v.Set(m[1], html.UnescapeString(chosen))
	}
	for _, m := range textareaRE.FindAllStringSubmatch(form, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

// selected is the value of the option selected in the select named name.
func selected(t *testing.T, body, name string) string {
	t.Helper()
	return formValues(t, body).Get(name)
}

// TestFormatSelect: the form's Message format select offers raw, slack and
// teams (raw preselected on a new webhook); a webhook saved as slack shows
// it on its detail page and in its edit form; a format no option offers,
// posted by hand, is the form's error next to the select, not a 500, and
// changes nothing.
func TestFormatSelect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	p := b.get("/ui/webhooks/new")
	for _, f := range []string{"raw", "slack", "teams"} {
		if !strings.Contains(p.body, `<option value="`+f+`"`) {
			t.Errorf("the format select lacks %s", f)
		}
	}
	if got := selected(t, p.body, "format"); got != "raw" {
		t.Errorf("a new webhook's format is preselected as %q, want raw", got)
	}
	form := func(format string) url.Values {
		return url.Values{"name": {"Slack #maintenance"}, "url": {e.recv.URL + "/slack"},
			"events": {"repair_request.created"}, "format": {format}}
	}

	// By hand, on create.
	p = b.post("/ui/webhooks/new", form("markdown"))
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="format-error"`) ||
		!strings.Contains(p.body, `&#34;markdown&#34; is not a payload format`) {
		t.Fatalf("an unknown format: %d, no error next to the select:\n%s", p.status, p.body)
	}
	if hooks, _ := e.st.ListWebhooks(ctx, 1); len(hooks) != 0 {
		t.Fatalf("an unknown format saved a webhook: %+v", hooks)
	}

	if p = b.post("/ui/webhooks/new", form("slack")); p.status != http.StatusOK {
		t.Fatalf("save: %d\n%s", p.status, p.body)
	}
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	if len(hooks) != 1 || hooks[0].Format != "slack" {
		t.Fatalf("saved: %+v", hooks)
	}
	id := hooks[0].ID
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", id)); !strings.Contains(d.body, `<dt>Message format</dt><dd>Slack message</dd>`) {
		t.Errorf("the detail page does not show the Slack format:\n%s", d.body)
	}
	ed := b.get(fmt.Sprintf("/ui/webhooks/%d/edit", id))
	if got := selected(t, ed.body, "format"); got != "slack" {
		t.Errorf("the edit form has %q selected, want slack", got)
	}

	// By hand, on edit: the form's error; the webhook keeps its format.
	edit := formValues(t, ed.body)
	for _, bad := range []string{"markdown", "SLACK", ""} {
		edit.Set("format", bad)
		p = b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), edit)
		if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="format-error"`) {
			t.Errorf("edit with format %q: %d, no error next to the select:\n%s", bad, p.status, p.body)
		}
	}
	if h, _ := e.st.WebhookByID(ctx, 1, id); h.Format != "slack" {
		t.Errorf("a refused edit changed the format to %q", h.Format)
	}

	// Teams, through the form as shown.
	edit.Set("format", "teams")
	if p = b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), edit); p.status != http.StatusSeeOther {
		t.Fatalf("edit to teams: %d\n%s", p.status, p.body)
	}
	if h, _ := e.st.WebhookByID(ctx, 1, id); h.Format != "teams" {
		t.Errorf("after the edit: format %q, want teams", h.Format)
	}
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", id)); !strings.Contains(d.body, `<dd>Microsoft Teams message</dd>`) {
		t.Errorf("the detail page does not show the Teams format")
	}
}

// TestEditRoundTripKeepsSettings: the edit form of a webhook with a format,
// a filter, Standard Webhooks, a secret and headers, saved as shown, keeps
// every one of them: the format is not reset to raw, the filter not
// dropped, the secret not rotated.
func TestEditRoundTripKeepsSettings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	name, u, format, filter := "Critical to Teams", e.recv.URL+"/teams", "teams", `data.priority == "critical" && data.title != "<test>"`
	events := []string{"repair_request.created", "task.completed"}
	secret, std := "round-trip-secret-0123456789", true
	headers := map[string]string{"Authorization": "Bearer round-trip"}
	saved, err := e.api.CreateWebhook(ctx, e.actor(tokenA), admin.WebhookInput{Name: &name, URL: &u, Events: &events,
		Format: &format, Filter: &filter, Secret: &secret, StandardWebhooks: &std, Headers: &headers})
	if err != nil {
		t.Fatal(err)
	}
	id := saved.Webhook.ID
	before, _ := e.st.WebhookByID(ctx, 1, id)

	b := e.browser()
	b.signIn(tokenA)
	for range 2 {
		ed := b.get(fmt.Sprintf("/ui/webhooks/%d/edit", id))
		if ed.status != http.StatusOK {
			t.Fatalf("edit form: %d", ed.status)
		}
		p := b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), formValues(t, ed.body))
		if p.status != http.StatusSeeOther {
			t.Fatalf("saving the form unchanged: %d\n%s", p.status, p.body)
		}
	}
	// A refused save shows the form again as typed: fixed and saved from
	// there, nothing else is lost either.
	ed := b.get(fmt.Sprintf("/ui/webhooks/%d/edit", id))
	broken := formValues(t, ed.body)
	broken.Set("filter", `data.priority ==`)
	p := b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), broken)
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="filter-error"`) {
		t.Fatalf("a broken filter: %d\n%s", p.status, p.body)
	}
	fixed := formValues(t, p.body)
	if fixed.Get("format") != format {
		t.Errorf("the refused form shows format %q, want %q", fixed.Get("format"), format)
	}
	fixed.Set("filter", filter)
	if p = b.post(fmt.Sprintf("/ui/webhooks/%d/edit", id), fixed); p.status != http.StatusSeeOther {
		t.Fatalf("saving the fixed form: %d\n%s", p.status, p.body)
	}
	after, _ := e.st.WebhookByID(ctx, 1, id)
	if after.Format != format || after.Filter != filter || after.Name != name || after.URL != u ||
		!slices.Equal(slices.Sorted(slices.Values(after.Events)), slices.Sorted(slices.Values(before.Events))) || after.Secret != secret || !after.StandardWebhooks ||
		after.Headers["Authorization"] != "Bearer round-trip" || len(after.Headers) != 1 || after.PreviousSecret != "" {
		t.Fatalf("saved unchanged, the webhook changed:\nbefore %+v\nafter  %+v", before.Webhook, after.Webhook)
	}
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", id)); !strings.Contains(d.body, `<dd>Microsoft Teams message</dd>`) ||
		!strings.Contains(d.body, html.EscapeString(filter)) {
		t.Errorf("the detail page lacks the format or the filter")
	}
}

// TestRenderedBodiesNamedAsSuch: for a slack webhook the test page shows
// the message sent and signed, exactly as the receiver got it, apart from
// the payload it was rendered from, and a delivery's history names its
// stored body the event payload; a raw webhook's are the bytes sent.
func TestRenderedBodiesNamedAsSuch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	name, u, ev, slack := "Slack #maint", e.recv.URL+"/slack", []string{"task.completed"}, "slack"
	s, err := e.api.CreateWebhook(ctx, e.actor(tokenA), admin.WebhookInput{Name: &name, URL: &u, Events: &ev, Format: &slack})
	if err != nil {
		t.Fatal(err)
	}
	id := s.Webhook.ID
	raw := e.create(tokenA, "raw", "/raw")
	b := e.browser()
	b.signIn(tokenA)

	p := b.post(fmt.Sprintf("/ui/webhooks/%d/test", id), url.Values{"event_type": {"task.completed"}})
	if p.status != 200 {
		t.Fatalf("test event: %d", p.status)
	}
	sent := e.recv.lastBody()
	if !strings.HasPrefix(sent, `{"text":"[Test] `) {
		t.Fatalf("the receiver got %s", sent)
	}
	shown := sentRE.FindStringSubmatch(p.body)
	if shown == nil || html.UnescapeString(shown[1]) != sent ||
		!strings.Contains(p.body, "Event payload (the message was rendered from it)") || strings.Contains(p.body, "Payload sent") {
		t.Errorf("the test page does not show the message sent apart from the payload:\n%s", p.body)
	}
	p = b.post(fmt.Sprintf("/ui/webhooks/%d/test", raw), url.Values{"event_type": {"task.completed"}})
	if !strings.Contains(p.body, "Payload sent (the exact bytes signed)") || strings.Contains(p.body, "Message sent") {
		t.Errorf("a raw webhook's test page:\n%s", p.body)
	}

	e.delivery(id, 1, time.Now())
	e.delivery(raw, 1, time.Now())
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", id)); !strings.Contains(d.body, "Event payload (each attempt sends a Slack message rendered from it, and signs that message)") ||
		strings.Contains(d.body, "the exact bytes sent") {
		t.Errorf("a slack webhook's delivery calls its payload the bytes sent:\n%s", d.body)
	}
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", raw)); !strings.Contains(d.body, "Request body (the exact bytes sent and signed)") {
		t.Errorf("a raw webhook's delivery:\n%s", d.body)
	}
}
