package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/signature"
)

// TestWebhookFormat: the API takes, shows, changes and audits a webhook's
// payload format, and refuses an unknown one with a 422 that names the
// field and the formats it takes.
func TestWebhookFormat(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, created := e.create(tokenA, map[string]any{"name": "default", "url": e.recv.URL + "/d", "events": []string{"task.completed"}})
	if f := created["webhook"].(map[string]any)["format"]; f != "raw" {
		t.Errorf("format of a webhook created without one: %v", f)
	}
	sid, created := e.create(tokenA, map[string]any{"name": "slack", "url": e.recv.URL + "/s", "events": []string{"task.completed"},
		"format": "slack"})
	if f := created["webhook"].(map[string]any)["format"]; f != "slack" {
		t.Errorf("created as slack: %v", f)
	}
	up := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"format": "teams"})
	if up.status != 200 || up.json(t)["webhook"].(map[string]any)["format"] != "teams" {
		t.Fatalf("update to teams: %d %s", up.status, up.body)
	}
	get := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d", id), nil)
	if get.json(t)["webhook"].(map[string]any)["format"] != "teams" {
		t.Errorf("get: %s", get.body)
	}
	// A change of anything else keeps the format.
	e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), map[string]any{"description": "x"})
	hs, _ := e.st.Webhooks(context.Background())
	for _, h := range hs {
		if want := map[int64]string{id: "teams", sid: "slack"}[h.ID]; h.Format != want {
			t.Errorf("stored webhook %d: format %q, want %q", h.ID, h.Format, want)
		}
	}
	for _, bad := range []string{`{"format": "markdown"}`, `{"format": ""}`, `{"format": "Slack"}`, `{"format": 7}`} {
		r := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), bad)
		if r.status/100 != 4 || r.status == 404 {
			t.Fatalf("PATCH %s: %d %s", bad, r.status, r.body)
		}
		er := r.errorOf(t)
		if er["field"] != "format" {
			t.Errorf("PATCH %s: %s, want the field format named", bad, r.body)
		}
		if r.status == 422 && !strings.Contains(fmt.Sprint(er["message"]), "raw, slack, teams") {
			t.Errorf("PATCH %s: %s, want the formats listed", bad, r.body)
		}
	}
	r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "bad", "url": e.recv.URL + "/b",
		"events": []string{"task.completed"}, "format": "discord"})
	if r.status != 422 || r.errorOf(t)["field"] != "format" {
		t.Errorf("create with an unknown format: %d %s", r.status, r.body)
	}
	au := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil)
	if !strings.Contains(string(au.body), `"format": "teams"`) {
		t.Errorf("audit does not record the format: %s", au.body)
	}
}

// TestTestFireInFormat: a test event to a slack webhook is sent as a Slack
// message, signed over the bytes sent.
func TestTestFireInFormat(t *testing.T) {
	e := newEnv(t, envOptions{})
	const secret = "test-fire-secret-0123456789"
	id, _ := e.create(tokenA, map[string]any{"name": "s", "url": e.recv.URL + "/s", "events": []string{"repair_request.created"},
		"secret": secret, "format": "slack"})
	r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "repair_request.created"})
	if r.status != 200 {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	got := e.recv.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	if !bytes.HasPrefix(got[0].body, []byte(`{"text":"`)) || !bytes.Contains(got[0].body, []byte(`"blocks":[`)) ||
		!bytes.Contains(got[0].body, []byte(`(PT Kahatex)`)) {
		t.Errorf("body: %s", got[0].body)
	}
	if err := signature.Verify([]byte(secret), got[0].body, got[0].header.Get("X-SMTM-Signature")); err != nil {
		t.Errorf("signature: %v", err)
	}
	// The message is marked a test, and the answer names the bytes sent
	// and signed beside the payload they were rendered from.
	if !bytes.HasPrefix(got[0].body, []byte(`{"text":"[Test] `)) {
		t.Errorf("the message does not say it is a test: %s", got[0].body)
	}
	var ans struct {
		BodySent string          `json:"body_sent"`
		Payload  json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(r.body, &ans); err != nil {
		t.Fatal(err)
	}
	var payload struct{ Test bool }
	if err := json.Unmarshal(ans.Payload, &payload); err != nil {
		t.Fatal(err)
	}
	if ans.BodySent != string(got[0].body) || !payload.Test {
		t.Errorf("body_sent %q and payload %s; the receiver got %s", ans.BodySent, ans.Payload, got[0].body)
	}
	// A raw webhook's answer has no body_sent: the payload is what was sent.
	raw, _ := e.create(tokenA, map[string]any{"name": "r", "url": e.recv.URL + "/r", "events": []string{"repair_request.created"}})
	r = e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", raw), map[string]any{"event_type": "repair_request.created"})
	if r.status != 200 || bytes.Contains(r.body, []byte(`"body_sent"`)) {
		t.Errorf("raw test: %d %s", r.status, r.body)
	}
}
