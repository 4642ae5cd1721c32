package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// TestStandardWebhooksAndRotationAPI: standard_webhooks is saved and shown;
// a generated secret comes back in the whsec_ form too; a rotation keeps
// the old secret signing for the window asked for (24h by default), shows
// its end, audits it with the window, and a real delivery carries both
// signatures; bad windows are 422s naming secret_overlap.
func TestStandardWebhooksAndRotationAPI(t *testing.T) {
	e := newEnv(t, envOptions{key: true})
	id, created := e.create(tokenA, map[string]any{"name": "std", "url": e.recv.URL + "/in",
		"events": []string{"task.completed"}, "standard_webhooks": true})
	secret := created["secret"].(string)
	w := created["webhook"].(map[string]any)
	if w["standard_webhooks"] != true || w["previous_secret_valid_until"] != nil {
		t.Fatalf("created: %v", w)
	}
	if got := created["standard_webhooks_secret"]; got != signature.StandardKey([]byte(secret)) {
		t.Fatalf("standard_webhooks_secret = %v, want the whsec_ form of %q", got, secret)
	}
	path := fmt.Sprintf("/v1/webhooks/%d", id)

	for _, tc := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"rotate_secret": true, "secret_overlap": "200h"}, "out of range"},
		{map[string]any{"rotate_secret": true, "secret_overlap": "-1h"}, "out of range"},
		{map[string]any{"rotate_secret": true, "secret_overlap": "a day"}, "not a duration"},
		{map[string]any{"secret_overlap": "1h"}, "only with rotate_secret"},
	} {
		r := e.call(tokenA, "PATCH", path, tc.body)
		if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "secret_overlap") ||
			!strings.Contains(string(r.body), tc.want) {
			t.Errorf("PATCH %v: %d %s; want 422 naming secret_overlap (%s)", tc.body, r.status, r.body, tc.want)
		}
	}
	if r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"},
		"secret_overlap": "1h"}); r.status != http.StatusUnprocessableEntity {
		t.Errorf("create with secret_overlap: %d %s", r.status, r.body)
	}

	before := time.Now()
	rot := e.call(tokenA, "PATCH", path, map[string]any{"rotate_secret": true, "secret_overlap": "2h"})
	if rot.status != 200 {
		t.Fatalf("rotate: %d %s", rot.status, rot.body)
	}
	m := rot.json(t)
	newSecret := m["secret"].(string)
	if m["standard_webhooks_secret"] != signature.StandardKey([]byte(newSecret)) {
		t.Errorf("rotate: standard_webhooks_secret %v", m["standard_webhooks_secret"])
	}
	until, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["webhook"].(map[string]any)["previous_secret_valid_until"]))
	if err != nil || until.Before(before.Add(2*time.Hour-time.Minute)) || until.After(time.Now().Add(2*time.Hour+time.Minute)) {
		t.Fatalf("rotate: previous_secret_valid_until %v (%v)", m["webhook"].(map[string]any)["previous_secret_valid_until"], err)
	}
	if g := e.call(tokenA, "GET", path, nil).json(t)["webhook"].(map[string]any); g["previous_secret_valid_until"] == nil || g["standard_webhooks"] != true {
		t.Errorf("GET after rotate: %v", g)
	}

	// A real delivery carries both signatures.
	e.dispatch()
	d := e.delivery(id, 1, time.Now())
	e.waitStatus(d, store.StatusDelivered)
	reqs := e.recv.requests()
	r := reqs[len(reqs)-1]
	if err := signature.Verify([]byte(newSecret), r.body, r.header.Get(signature.Header)); err != nil {
		t.Errorf("X-SMTM-Signature with the new secret: %v", err)
	}
	if err := signature.Verify([]byte(secret), r.body, r.header.Get(signature.PreviousHeader)); err != nil {
		t.Errorf("X-SMTM-Signature-Previous with the old secret: %v", err)
	}
	for _, s := range []string{secret, newSecret} {
		key, _ := signature.ParseStandardKey(signature.StandardKey([]byte(s)))
		if err := signature.StandardVerify(key, r.body, r.header, 0); err != nil {
			t.Errorf("webhook-signature with %q: %v", s, err)
		}
	}

	// An explicit secret on update keeps the replaced one for the default
	// window; secret_overlap "0" keeps none.
	up := e.call(tokenA, "PATCH", path, map[string]any{"secret": "an-explicit-secret-0123456789"})
	u, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(up.json(t)["webhook"].(map[string]any)["previous_secret_valid_until"]))
	if up.status != 200 || u.Before(time.Now().Add(23*time.Hour)) || u.After(time.Now().Add(25*time.Hour)) {
		t.Errorf("explicit secret: %d %s; want a 24h window", up.status, up.body)
	}
	none := e.call(tokenA, "PATCH", path, map[string]any{"rotate_secret": true, "secret_overlap": "0"})
	if none.status != 200 || none.json(t)["webhook"].(map[string]any)["previous_secret_valid_until"] != nil {
		t.Errorf("rotation without overlap: %d %s", none.status, none.body)
	}

	// The audit log has the rotation with its window, never a secret.
	au := e.call(tokenA, "GET", path+"/audit", nil)
	var found bool
	for _, en := range au.json(t)["audit"].([]any) {
		en := en.(map[string]any)
		if en["action"] != "webhook.rotate_secret" {
			continue
		}
		det, _ := json.Marshal(en["details"])
		if strings.Contains(string(det), `"secret_overlap":"2h0m0s"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no webhook.rotate_secret audit entry with the 2h window: %s", au.body)
	}
	assertNoSecrets(t, e, []string{"an-explicit-secret-0123456789"})
	var raw string
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT coalesce(previous_secret, '') FROM relay.webhooks WHERE id = $1`, id).Scan(&raw); err != nil || raw != "" {
		t.Errorf("after a rotation without overlap the previous secret is %q (%v)", raw, err)
	}

	// Turning Standard Webhooks off.
	off := e.call(tokenA, "PATCH", path, map[string]any{"standard_webhooks": false})
	if off.status != 200 || off.json(t)["webhook"].(map[string]any)["standard_webhooks"] != false {
		t.Errorf("standard_webhooks off: %d %s", off.status, off.body)
	}
}
