package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/message"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// goldenPayload is the mapper's payload of a repair_request.created event.
func goldenPayload(t testing.TB, event string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mapper", "testdata", "golden", event+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSlackAndTeamsFormatsEndToEnd: a relay delivers a stored event to a
// slack-format and a teams-format webhook. Each receiver gets the message
// rendered with the installation's templates, signed over the bytes it
// received, with the delivery's id; the retry after a 503 sends the same
// bytes; a raw webhook beside them still gets the payload itself.
func TestSlackAndTeamsFormatsEndToEnd(t *testing.T) {
	e := newEnv(t)
	const secret = "whsec_formats_0123456789"
	first503 := func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
	slackRc, teamsRc, rawRc := newReceiver(t, first503), newReceiver(t, first503), newReceiver(t, nil)
	slackHook, teamsHook, rawHook := e.webhook(slackRc.URL, secret, nil), e.webhook(teamsRc.URL, secret, nil), e.webhook(rawRc.URL, secret, nil)
	e.exec(`UPDATE {{schema}}.webhooks SET format = 'slack' WHERE id = $1`, slackHook)
	e.exec(`UPDATE {{schema}}.webhooks SET format = 'teams' WHERE id = $1`, teamsHook)
	payload := goldenPayload(t, "repair_request.created")
	msgs, err := message.New(message.Options{PlatformURL: "https://smartmaintenance.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]uuid.UUID{}
	for _, h := range []int64{slackHook, teamsHook, rawHook} {
		ids[h] = e.delivery(h, payload)
	}
	e.start(fast(Options{Schedule: Schedule{20 * time.Millisecond}, Messages: msgs}))
	for _, tc := range []struct {
		hook     int64
		rc       *receiver
		format   string
		attempts int
		want     string
	}{
		{slackHook, slackRc, "slack", 2, `{"text":"Critical repair request #3021 filed: Loom 12 vibrates above 300 rpm (PT Kahatex)","blocks":[`},
		{teamsHook, teamsRc, "teams", 2, `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive"`},
		{rawHook, rawRc, "raw", 1, string(payload)},
	} {
		id := ids[tc.hook]
		e.waitStatus(id, store.StatusDelivered, 10*time.Second)
		got := tc.rc.receipts(id)
		if len(got) != tc.attempts {
			t.Fatalf("%s: %d requests, want %d", tc.format, len(got), tc.attempts)
		}
		want, _ := msgs.Render(tc.format, payload)
		for i, r := range got {
			if !bytes.Equal(r.body, want) || !strings.HasPrefix(string(r.body), tc.want) {
				t.Errorf("%s request %d: body %s, want %s", tc.format, i+1, r.body, want)
			}
			if err := signature.Verify([]byte(secret), r.body, r.header.Get("X-SMTM-Signature")); err != nil {
				t.Errorf("%s request %d: %v", tc.format, i+1, err)
			}
			if r.header.Get("X-SMTM-Delivery") != id.String() || r.header.Get("X-SMTM-Event") != "task.completed" ||
				r.header.Get("Content-Type") != "application/json" {
				t.Errorf("%s request %d: headers %v", tc.format, i+1, r.header)
			}
			if !json.Valid(r.body) {
				t.Errorf("%s request %d: not JSON", tc.format, i+1)
			}
		}
		if tc.attempts == 2 && !bytes.Equal(got[0].body, got[1].body) {
			t.Errorf("%s: the retry sent other bytes", tc.format)
		}
	}
}

// TestFormatFollowsAnEdit: the endpoint kept per webhook is made anew when
// its format changes, as when its URL or secret does.
func TestFormatFollowsAnEdit(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	e.start(fast(Options{}))
	payload := goldenPayload(t, "task.completed")
	for _, format := range []string{"raw", "teams", "slack", "raw"} {
		e.exec("UPDATE {{schema}}.webhooks SET format = $1", format)
		id := e.delivery(wh, payload)
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		got := rc.receipts(id)[0].body
		want, _ := message.Default().Render(format, payload)
		if !bytes.Equal(got, want) {
			t.Fatalf("format %s: got %s", format, got)
		}
	}
}

// TestFailingTemplateStillDelivers: a template that fails on a payload
// sends the plain summary, delivers, and says so in the log once.
func TestFailingTemplateStillDelivers(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	e.exec("UPDATE {{schema}}.webhooks SET format = 'slack'")
	msgs, err := message.New(message.Options{Templates: []message.Template{{Event: "task.completed", Summary: "{{.data.missing}}"}}})
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	e.start(fast(Options{Messages: msgs, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	payload := goldenPayload(t, "task.completed")
	for range 2 {
		id := e.delivery(wh, payload)
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		if got := rc.receipts(id)[0].body; !bytes.HasPrefix(got, []byte(`{"text":"Task completed (PT Kahatex)"`)) {
			t.Fatalf("body %s", got)
		}
	}
	if n := strings.Count(logs.String(), "message template failed"); n != 1 {
		t.Errorf("%d log lines about the template, want 1:\n%s", n, logs.String())
	}
}

// BenchmarkNewRequest measures the relay's CPU for building one attempt's
// request (headers, body, signature) for a raw webhook and for a slack and
// a teams one, whose body is rendered from the payload first.
func BenchmarkNewRequest(b *testing.B) {
	payload := goldenPayload(b, "repair_request.created")
	msgs, err := message.New(message.Options{PlatformURL: "https://smartmaintenance.example.com"})
	if err != nil {
		b.Fatal(err)
	}
	s := &sender{userAgent: DefaultUserAgent, messages: msgs}
	for _, format := range message.Formats {
		b.Run(format, func(b *testing.B) {
			c := store.Claimed{ID: uuid.New(), WebhookID: 1, EventType: "repair_request.created", Body: payload,
				URL: "https://hooks.example.com/services/T0/B0/x", Secret: "whsec_bench_0123456789", Format: format}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.newRequest(ctx, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSlackFormatSignsTheMessageEveryWay: a slack-format webhook with
// Standard Webhooks on, in a rotation's overlap window, sends the rendered
// message, and each of its signatures (X-SMTM-Signature with the new secret,
// X-SMTM-Signature-Previous with the old, both webhook-signature values) is
// over the bytes received, not over the stored payload.
func TestSlackFormatSignsTheMessageEveryWay(t *testing.T) {
	e := newEnv(t)
	const oldSecret, newSecret = "old-secret-0123456789", "new-secret-0123456789"
	rc := newReceiver(t, nil)
	hook := e.webhook(rc.URL, oldSecret, nil)
	e.exec(`UPDATE {{schema}}.webhooks SET format = 'slack', standard_webhooks = true WHERE id = $1`, hook)
	if _, err := e.st.UpdateWebhook(context.Background(), "admin", "webhook.rotate_secret", store.AllCompanies, hook, func(w *store.Webhook) error {
		w.Secret = newSecret
		return nil
	}, store.SecretOverlap(time.Hour)); err != nil {
		t.Fatal(err)
	}
	payload := goldenPayload(t, "repair_request.created")
	id := e.delivery(hook, payload)
	msgs, err := message.New(message.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.start(fast(Options{Messages: msgs}))
	e.waitStatus(id, store.StatusDelivered, 10*time.Second)
	got := rc.receipts(id)
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	if want, _ := msgs.Render("slack", payload); !bytes.Equal(r.body, want) {
		t.Fatalf("body %s, want the Slack message %s", r.body, want)
	}
	if err := signature.Verify([]byte(newSecret), r.body, r.header.Get(signature.Header)); err != nil {
		t.Errorf("X-SMTM-Signature: %v", err)
	}
	if err := signature.Verify([]byte(oldSecret), r.body, r.header.Get(signature.PreviousHeader)); err != nil {
		t.Errorf("X-SMTM-Signature-Previous: %v", err)
	}
	for _, secret := range []string{newSecret, oldSecret} {
		key, err := signature.ParseStandardKey(signature.StandardKey([]byte(secret)))
		if err != nil {
			t.Fatal(err)
		}
		if err := signature.StandardVerify(key, r.body, r.header, time.Minute); err != nil {
			t.Errorf("webhook-signature with the %s secret: %v", secret[:3], err)
		}
	}
}
