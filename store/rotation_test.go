package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func (s *Store) rawPrevious(t *testing.T, id int64) (secret, until *string) {
	t.Helper()
	if err := s.pool.QueryRow(context.Background(), s.q(`SELECT previous_secret, previous_secret_until::text
		FROM {{schema}}.webhooks WHERE id = $1`), id).Scan(&secret, &until); err != nil {
		t.Fatal(err)
	}
	return secret, until
}

// TestSecretRotationOverlap: a secret changed with an overlap keeps the
// old one, sealed, for the window: reads and claims have both; the audit
// entry has the window and no secret; once the window has ended claims
// sign with the new one only and ForgetExpiredSecrets erases the old one
// from the table; a key rotation reseals the previous secret too.
func TestSecretRotationOverlap(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.UseSecrets(box(t, 1))
	const oldSecret, newSecret, third = "old-secret-0123456789", "new-secret-0123456789", "third-secret-0123456789"
	h, err := s.CreateWebhook(ctx, "admin", Webhook{CompanyID: 1, Name: "rot", URL: "http://a", Events: []string{"task.completed"},
		Secret: oldSecret, Active: true, StandardWebhooks: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.claimOne(t, h.ID); !c.StandardWebhooks || c.PreviousSecret != "" || c.Secret != oldSecret {
		t.Fatalf("before rotation: claim standard=%v previous=%q secret=%q", c.StandardWebhooks, c.PreviousSecret, c.Secret)
	}
	before := time.Now()
	after, err := s.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", AllCompanies, h.ID, func(w *Webhook) error {
		w.Secret = newSecret
		return nil
	}, SecretOverlap(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if after.PreviousSecret != oldSecret || after.PreviousSecretUntil.Before(before.Add(59*time.Minute)) ||
		after.PreviousSecretUntil.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("after rotation: previous %q until %v", after.PreviousSecret, after.PreviousSecretUntil)
	}
	read, err := s.WebhookByID(ctx, AllCompanies, h.ID)
	if err != nil || read.PreviousSecret != oldSecret || !read.PreviousSecretUntil.Equal(after.PreviousSecretUntil) || !read.StandardWebhooks {
		t.Fatalf("read back: %q %v %v %v", read.PreviousSecret, read.PreviousSecretUntil, read.StandardWebhooks, err)
	}
	if c := s.claimOne(t, h.ID); c.Secret != newSecret || c.PreviousSecret != oldSecret || c.SecretError != "" ||
		!c.PreviousSecretUntil.Equal(after.PreviousSecretUntil) {
		t.Fatalf("in the window: claim secret=%q previous=%q until %v (want %v) err=%q", c.Secret, c.PreviousSecret,
			c.PreviousSecretUntil, after.PreviousSecretUntil, c.SecretError)
	}
	raw, _ := s.rawPrevious(t, h.ID)
	if raw == nil || !strings.HasPrefix(*raw, keyPrefix(1)) {
		t.Fatalf("previous secret stored as %v, want sealed with key 1", raw)
	}
	s.assertNotInClear(t, oldSecret, newSecret)

	entries, err := s.AuditLog(ctx, AllCompanies, h.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range entries {
		if e.Action != "webhook.rotate_secret" {
			continue
		}
		found = true
		d, _ := json.Marshal(e.Details)
		if !strings.Contains(string(d), `"secret_overlap":"1h0m0s"`) || !strings.Contains(string(d), `"previous_secret_until"`) {
			t.Errorf("rotation audit details %s lack the window", d)
		}
	}
	if !found {
		t.Fatalf("no webhook.rotate_secret audit entry in %+v", entries)
	}

	// A key rotation reseals the previous secret as well.
	s.UseSecrets(box(t, 2, 1))
	if _, problems, err := s.ResealSecrets(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("reseal: %v %v", problems, err)
	}
	if raw, _ := s.rawPrevious(t, h.ID); raw == nil || !strings.HasPrefix(*raw, keyPrefix(2)) {
		t.Fatalf("previous secret after key rotation stored as %v, want sealed with key 2", raw)
	}
	s.UseSecrets(box(t, 2))
	if c := s.claimOne(t, h.ID); c.PreviousSecret != oldSecret || c.SecretError != "" {
		t.Fatalf("after key rotation: previous=%q err=%q", c.PreviousSecret, c.SecretError)
	}

	// The window ends: nothing signs with the old secret any more, even
	// before it is erased; then it is erased.
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET previous_secret_until = now() - interval '1 second' WHERE id = $1`, h.ID)
	if c := s.claimOne(t, h.ID); c.Secret != newSecret || c.PreviousSecret != "" {
		t.Fatalf("after the window: claim secret=%q previous=%q", c.Secret, c.PreviousSecret)
	}
	if read, _ := s.WebhookByID(ctx, AllCompanies, h.ID); read.PreviousSecret != "" || !read.PreviousSecretUntil.IsZero() {
		t.Fatalf("after the window: read previous %q until %v", read.PreviousSecret, read.PreviousSecretUntil)
	}
	if n, err := s.ForgetExpiredSecrets(ctx); err != nil || n != 1 {
		t.Fatalf("ForgetExpiredSecrets = %d, %v; want 1", n, err)
	}
	if raw, until := s.rawPrevious(t, h.ID); raw != nil || until != nil {
		t.Fatalf("previous secret still stored after the window: %v until %v", raw, until)
	}

	// Rotating with no overlap keeps nothing, and drops a kept one.
	if _, err := s.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", AllCompanies, h.ID, func(w *Webhook) error {
		w.Secret = third
		return nil
	}, SecretOverlap(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if raw, _ := s.rawPrevious(t, h.ID); raw == nil {
		t.Fatal("second rotation kept no previous secret")
	}
	got, err := s.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", AllCompanies, h.ID, func(w *Webhook) error {
		w.Secret = oldSecret
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if raw, until := s.rawPrevious(t, h.ID); raw != nil || until != nil || got.PreviousSecret != "" {
		t.Fatalf("rotation without overlap kept %v until %v (%q)", raw, until, got.PreviousSecret)
	}
	// An update that leaves the secret alone keeps the window.
	if _, err := s.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", AllCompanies, h.ID, func(w *Webhook) error {
		w.Secret = newSecret
		return nil
	}, SecretOverlap(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateWebhook(ctx, "admin", "webhook.update", AllCompanies, h.ID, func(w *Webhook) error {
		w.Description = "edited"
		return nil
	}, SecretOverlap(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c := s.claimOne(t, h.ID); c.Secret != newSecret || c.PreviousSecret != oldSecret {
		t.Fatalf("after an unrelated edit: secret=%q previous=%q", c.Secret, c.PreviousSecret)
	}
}

// TestFileWebhookStandardWebhooks: the config file's standard_webhooks is
// synced like the other fields.
func TestFileWebhookStandardWebhooks(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	hook := Webhook{CompanyID: 1, Name: "file", URL: "http://a", Events: []string{"task.completed"},
		Secret: "file-secret-0123456789", Active: true, StandardWebhooks: true}
	for _, want := range []bool{true, false, true} {
		hook.StandardWebhooks = want
		if _, _, _, err := s.SyncFileWebhooks(ctx, []Webhook{hook}); err != nil {
			t.Fatal(err)
		}
		hooks, err := s.Webhooks(ctx)
		if err != nil || len(hooks) != 1 || hooks[0].StandardWebhooks != want {
			t.Fatalf("after syncing standard_webhooks %v: %+v %v", want, hooks, err)
		}
		if c := s.claimOne(t, hooks[0].ID); c.StandardWebhooks != want {
			t.Fatalf("claim after syncing standard_webhooks %v: %v", want, c.StandardWebhooks)
		}
	}
}

// TestAuditNamesHeaderValuesChanged: the audit log masks header values, so
// an entry names the headers whose value changed (never the values): a
// rotated credential is told apart from a save that changed nothing.
func TestAuditNamesHeaderValuesChanged(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.UseSecrets(box(t, 1))
	h, err := s.CreateWebhook(ctx, "admin", Webhook{CompanyID: 1, Name: "cmms", URL: "http://a", Events: []string{"task.completed"},
		Active: true, Headers: map[string]string{"Authorization": "Bearer one-0123456789", "X-Tenant": "kahatex"}})
	if err != nil {
		t.Fatal(err)
	}
	update := func(headers map[string]string) map[string]any {
		t.Helper()
		if _, err := s.UpdateWebhook(ctx, "admin", "webhook.update", AllCompanies, h.ID, func(w *Webhook) error {
			w.Headers = headers
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		entries, err := s.AuditLog(ctx, AllCompanies, h.ID, 1)
		if err != nil || len(entries) != 1 {
			t.Fatalf("audit log: %v, %v", entries, err)
		}
		d, _ := json.Marshal(entries[0])
		for _, v := range []string{"Bearer one", "Bearer two"} {
			if strings.Contains(string(d), v) {
				t.Fatalf("a header value is in the audit log: %s", d)
			}
		}
		return entries[0].Details
	}
	d := update(map[string]string{"Authorization": "Bearer two-0123456789", "X-Tenant": "kahatex"})
	if got, _ := json.Marshal(d["header_values_changed"]); string(got) != `["Authorization"]` {
		t.Errorf("a changed credential: header_values_changed %s, want [\"Authorization\"]", got)
	}
	d = update(map[string]string{"Authorization": "Bearer two-0123456789", "X-Tenant": "kahatex"})
	if v, ok := d["header_values_changed"]; ok {
		t.Errorf("a save that changed nothing: header_values_changed %v", v)
	}
}
