package console_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/signature"
)

// TestStandardWebhooksAndRotationOnPage: the form's Standard Webhooks
// checkbox is saved and shown; the generated secret is shown in its whsec_
// form too; a rotation keeps the old secret for the window picked, and the
// detail page says until when; a window out of range is an error next to
// the secret.
func TestStandardWebhooksAndRotationOnPage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.browser()
	b.signIn(tokenA)
	b.get("/ui/webhooks/new")
	form := url.Values{"name": {"Std"}, "url": {e.recv.URL + "/std"}, "events": {"task.completed"}, "standard_webhooks": {"1"}}
	p := b.post("/ui/webhooks/new", form)
	m := secretRE.FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		t.Fatalf("save: %d\n%s", p.status, p.body)
	}
	if !strings.Contains(p.body, html.EscapeString(signature.StandardKey([]byte(m[1])))) {
		t.Fatalf("the saved page does not show the whsec_ form of the secret:\n%s", p.body)
	}
	hooks, _ := e.st.ListWebhooks(ctx, 1)
	if len(hooks) != 1 || !hooks[0].StandardWebhooks {
		t.Fatalf("saved: %+v", hooks)
	}
	id := hooks[0].ID
	edit := fmt.Sprintf("/ui/webhooks/%d/edit", id)
	if pg := b.get(edit); !strings.Contains(pg.body, `name="standard_webhooks" value="1" checked`) {
		t.Fatalf("the edit form does not show Standard Webhooks on:\n%s", pg.body)
	}

	rotate := url.Values{"name": {"Std"}, "url": {e.recv.URL + "/std"}, "events": {"task.completed"},
		"standard_webhooks": {"1"}, "rotate_secret": {"1"}}
	rotate.Set("secret_overlap", "9d")
	if p := b.post(edit, rotate); p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "not a duration") {
		t.Fatalf("a bad window: %d\n%s", p.status, p.body)
	}
	rotate.Set("secret_overlap", "72h")
	before := time.Now()
	p = b.post(edit, rotate)
	if m2 := secretRE.FindStringSubmatch(p.body); m2 == nil || m2[1] == m[1] {
		t.Fatalf("rotate: %d\n%s", p.status, p.body)
	}
	h, _ := e.st.WebhookByID(ctx, 1, id)
	if h.PreviousSecret != m[1] || h.PreviousSecretUntil.Before(before.Add(72*time.Hour-time.Minute)) {
		t.Fatalf("after rotate: previous %q until %v", h.PreviousSecret, h.PreviousSecretUntil)
	}
	detail := b.get(fmt.Sprintf("/ui/webhooks/%d", id))
	for _, want := range []string{"Standard Webhooks", "webhook-signature", "Previous secret", "X-SMTM-Signature-Previous",
		h.PreviousSecretUntil.UTC().Format(time.RFC3339)} {
		if !strings.Contains(detail.body, want) {
			t.Errorf("the detail page lacks %q", want)
		}
	}
	if strings.Contains(detail.body, m[1]) {
		t.Error("the detail page shows the previous secret")
	}
	// Unticked: off.
	off := url.Values{"name": {"Std"}, "url": {e.recv.URL + "/std"}, "events": {"task.completed"}}
	if p := b.post(edit, off); p.status != http.StatusSeeOther {
		t.Fatalf("edit: %d\n%s", p.status, p.body)
	}
	if h, _ := e.st.WebhookByID(ctx, 1, id); h.StandardWebhooks || h.PreviousSecret != m[1] {
		t.Fatalf("after unticking: standard %v, previous kept %v", h.StandardWebhooks, h.PreviousSecret == m[1])
	}
	if audit := b.get(fmt.Sprintf("/ui/webhooks/%d/audit", id)); !strings.Contains(audit.body, "Rotated the secret") {
		t.Error("the audit page lacks the rotation")
	}
}

// TestRotateWarnsWhilePreviousSecretSigns: while a rotation's window
// lasts, the edit form warns, next to the secret and the rotate control,
// that a new secret now ends the previous one's signing at once; with no
// window (never rotated, rotated without one, or the window over) it does
// not.
func TestRotateWarnsWhilePreviousSecretSigns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create(tokenA, "Rotating", "/r")
	b := e.browser()
	b.signIn(tokenA)
	edit := fmt.Sprintf("/ui/webhooks/%d/edit", id)
	const warning = "If you rotate or set a new secret now, that secret stops signing at once, and receivers that still use it will reject the requests."
	warned := func(what string, want bool) {
		t.Helper()
		p := b.get(edit)
		got := strings.Contains(p.body, warning) && strings.Contains(p.body, `id="secret-previous-warning"`) &&
			strings.Contains(p.body, `name="rotate_secret" value="1" aria-describedby="secret-previous-warning"`) &&
			strings.Contains(p.body, `aria-describedby="secret-hint secret-previous-warning"`)
		if got != want || strings.Contains(p.body, "secret-previous-warning") != want {
			t.Fatalf("%s: warning shown %v, want %v:\n%s", what, got, want, p.body)
		}
	}
	warned("never rotated", false)
	rotate := func(overlap string) {
		t.Helper()
		o := overlap
		if _, err := e.api.UpdateWebhook(ctx, e.actor(tokenA), id, admin.WebhookInput{RotateSecret: true, SecretOverlap: &o}); err != nil {
			t.Fatal(err)
		}
	}
	rotate("0")
	warned("rotated without a window", false)
	rotate("24h")
	warned("rotated, the window lasting", true)
	h, _ := e.st.WebhookByID(ctx, 1, id)
	if p := b.get(edit); !strings.Contains(p.body, `<time datetime="`+h.PreviousSecretUntil.UTC().Format(time.RFC3339)+`">`) {
		t.Errorf("the warning does not say until when:\n%s", p.body)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE `+e.st.Schema()+`.webhooks SET previous_secret_until = now() - interval '1 minute' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	warned("the window over", false)
}
