package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/secrets"
)

func box(t *testing.T, keys ...byte) *secrets.Box {
	var prev [][]byte
	for _, k := range keys[1:] {
		prev = append(prev, bytes.Repeat([]byte{k}, secrets.KeyBytes))
	}
	b, err := secrets.New(bytes.Repeat([]byte{keys[0]}, secrets.KeyBytes), prev...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *Store) rawSecret(t *testing.T, id int64) string {
	var v string
	if err := s.pool.QueryRow(context.Background(), s.q(`SELECT secret FROM {{schema}}.webhooks WHERE id = $1`), id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestResealSecrets: turning on a key seals plain-text secrets; rotating
// the key reseals values of the previous key; a value no key opens is
// reported per webhook and left alone; claims decrypt.
func TestResealSecrets(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	plain := s.addWebhook(t, "http://a", "plain-secret-0123456789", "")
	lost := s.addWebhook(t, "http://b", "", "")
	other := box(t, 9)
	foreign, _ := other.Seal("sealed-with-a-lost-key")
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET secret = $1 WHERE id = $2`, foreign, lost)

	s.UseSecrets(box(t, 1))
	n, problems, err := s.ResealSecrets(ctx)
	if err != nil || n != 1 || len(problems) != 1 || !strings.Contains(problems[0], "webhook 2") {
		t.Fatalf("first reseal: %d %v %v", n, problems, err)
	}
	v1 := s.rawSecret(t, plain)
	if !strings.HasPrefix(v1, "enc:v1:"+secrets.KeyID(bytes.Repeat([]byte{1}, secrets.KeyBytes))) {
		t.Fatalf("plain secret not sealed: %q", v1)
	}
	if s.rawSecret(t, lost) != foreign {
		t.Error("an unopenable value was changed")
	}

	// Rotate: key 2 current, key 1 previous.
	s.UseSecrets(box(t, 2, 1))
	if n, _, _ := s.ResealSecrets(ctx); n != 1 {
		t.Fatalf("rotation resealed %d, want 1", n)
	}
	if v2 := s.rawSecret(t, plain); v2 == v1 || !strings.HasPrefix(v2, "enc:v1:"+secrets.KeyID(bytes.Repeat([]byte{2}, secrets.KeyBytes))) {
		t.Fatalf("not resealed under the new key: %q", v2)
	}
	s.UseSecrets(box(t, 2)) // the old key can go now
	hooks, err := s.Webhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		switch h.ID {
		case plain:
			if h.Secret != "plain-secret-0123456789" || h.SecretError != "" {
				t.Errorf("webhook %d: %q %q", h.ID, h.Secret, h.SecretError)
			}
		case lost:
			if h.Secret != "" || !strings.Contains(h.SecretError, "cannot decrypt") {
				t.Errorf("webhook %d: %q %q", h.ID, h.Secret, h.SecretError)
			}
		}
	}
	// Without a key, nothing is written back, and every webhook with a
	// value stored encrypted is reported, with what is: none can be opened.
	token, _ := other.SealHeader("t")
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET headers = jsonb_build_object('X-Token', $1::text, 'X-Plain', 'p') WHERE id = $2`, token, plain)
	clear := s.addWebhook(t, "http://c", "clear-secret-0123456789", `{"X-Plain": "p"}`)
	s.UseSecrets(nil)
	n, problems, err = s.ResealSecrets(ctx)
	if n != 0 || err != nil || !strings.HasPrefix(s.rawSecret(t, plain), "enc:v1:") {
		t.Errorf("a reseal without a key: %d %v, or it changed a sealed value", n, err)
	}
	const fix = " stored encrypted, and secrets.key is not set (set RELAY_SECRETS__KEY to the key that sealed it)"
	want := []struct {
		id   int64
		what string
	}{{plain, "its secret and header X-Token"}, {lost, "its secret"}}
	if len(problems) != len(want) || clear == 0 {
		t.Fatalf("problems without a key: %q", problems)
	}
	for i, w := range want {
		if !strings.HasPrefix(problems[i], fmt.Sprintf(`webhook %d ("hook-`, w.id)) || !strings.HasSuffix(problems[i], `" of company 1): `+w.what+fix) {
			t.Errorf("problem %d: %q, want webhook %d with %s", i, problems[i], w.id, w.what)
		}
	}
}

// keyPrefix is how a value sealed with the key of bytes c starts.
func keyPrefix(c byte) string {
	return "enc:v1:" + secrets.KeyID(bytes.Repeat([]byte{c}, secrets.KeyBytes)) + ":"
}

// rawHeaders reads a webhook's headers as stored.
func (s *Store) rawHeaders(t *testing.T, id int64) map[string]string {
	t.Helper()
	var h map[string]string
	if err := s.pool.QueryRow(context.Background(), s.q(`SELECT headers FROM {{schema}}.webhooks WHERE id = $1`), id).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// assertNotInClear fails if any of values appears anywhere in the relay's
// webhooks table or audit log, as stored.
func (s *Store) assertNotInClear(t *testing.T, values ...string) {
	t.Helper()
	var dump string
	err := s.pool.QueryRow(context.Background(), s.q(`SELECT coalesce(string_agg(w::text, E'\n'), '')
		|| coalesce((SELECT string_agg(a::text, E'\n') FROM {{schema}}.audit_log a), '') FROM {{schema}}.webhooks w`)).Scan(&dump)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if strings.Contains(dump, v) {
			t.Errorf("%q is stored in clear:\n%s", v, dump)
		}
	}
}

// assertSealed fails unless every header value of webhook id is sealed with
// the key of bytes c, its names in clear.
func (s *Store) assertSealed(t *testing.T, id int64, c byte, names ...string) map[string]string {
	t.Helper()
	raw := s.rawHeaders(t, id)
	if len(raw) != len(names) {
		t.Fatalf("webhook %d: stored headers %v, want %v", id, raw, names)
	}
	for _, n := range names {
		if !strings.HasPrefix(raw[n], keyPrefix(c)) {
			t.Fatalf("webhook %d: header %s stored as %q, want sealed with %s", id, n, raw[n], keyPrefix(c))
		}
	}
	return raw
}

func (s *Store) claimOne(t *testing.T, webhook int64) Claimed {
	t.Helper()
	id := s.addDelivery(t, webhook, `{}`)
	got, err := s.ClaimDue(context.Background(), "t", 100, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("delivery of webhook %d not claimed", webhook)
	return Claimed{}
}

// TestResealHeaderValues: header values stored in plain text before a key
// was configured are sealed at start (ResealSecrets), names in clear;
// rotating the key reseals them under the new one; claims and reads get
// the plain values; a value no key opens is reported, left alone, and
// stops its webhook's deliveries instead of being sent without it.
func TestResealHeaderValues(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	const bearer, team = "Bearer plain-token-0123456789", "maintenance-ops-77"
	plain := s.addWebhook(t, "http://a", "", `{"Authorization": "`+bearer+`", "X-Team": "`+team+`"}`)
	both := s.addWebhook(t, "http://b", "secret-of-both-0123456789", `{"X-Key": "both-header-value-42"}`)
	lost := s.addWebhook(t, "http://c", "", "")
	foreign, _ := box(t, 9).SealHeader("sealed-with-a-lost-key")
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET headers = jsonb_build_object('X-Lost', $1::text, 'X-Fine', 'fine-value-1') WHERE id = $2`, foreign, lost)

	s.UseSecrets(box(t, 1))
	n, problems, err := s.ResealSecrets(ctx)
	if err != nil || n != 3 || len(problems) != 1 || !strings.Contains(problems[0], "webhook 3") || !strings.Contains(problems[0], "X-Lost") {
		t.Fatalf("first reseal: %d %v %v", n, problems, err)
	}
	v1 := s.assertSealed(t, plain, 1, "Authorization", "X-Team")
	s.assertSealed(t, both, 1, "X-Key")
	if raw := s.rawHeaders(t, lost); raw["X-Lost"] != foreign || !strings.HasPrefix(raw["X-Fine"], keyPrefix(1)) {
		t.Errorf("webhook with a lost key: stored %v", raw)
	}
	if !strings.HasPrefix(s.rawSecret(t, both), keyPrefix(1)) {
		t.Error("the secret of a webhook with headers was not sealed")
	}
	s.assertNotInClear(t, bearer, team, "both-header-value-42", "fine-value-1", "secret-of-both-0123456789")

	// Rotate: key 2 current, key 1 previous.
	s.UseSecrets(box(t, 2, 1))
	if n, _, err := s.ResealSecrets(ctx); n != 3 || err != nil {
		t.Fatalf("rotation resealed %d (%v), want 3", n, err)
	}
	if v2 := s.assertSealed(t, plain, 2, "Authorization", "X-Team"); v2["Authorization"] == v1["Authorization"] {
		t.Fatal("not resealed")
	}
	if n, _, _ := s.ResealSecrets(ctx); n != 0 {
		t.Errorf("a second reseal under the same key wrote %d webhooks", n)
	}

	s.UseSecrets(box(t, 2)) // the old key can go now
	hooks, err := s.Webhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		switch h.ID {
		case plain:
			if h.Headers["Authorization"] != bearer || h.Headers["X-Team"] != team || h.HeaderError != "" {
				t.Errorf("webhook %d: %v %q", h.ID, h.Headers, h.HeaderError)
			}
		case lost:
			if _, has := h.Headers["X-Lost"]; has || h.Headers["X-Fine"] != "fine-value-1" || !strings.Contains(h.HeaderError, "cannot decrypt the header value") {
				t.Errorf("webhook %d: %v %q", h.ID, h.Headers, h.HeaderError)
			}
		}
	}
	if c := s.claimOne(t, plain); c.Headers["Authorization"] != bearer || c.Headers["X-Team"] != team || c.SecretError != "" {
		t.Errorf("claim: headers %v, error %q", c.Headers, c.SecretError)
	}
	if c := s.claimOne(t, lost); !strings.Contains(c.SecretError, "X-Lost") || !strings.Contains(c.SecretError, "cannot decrypt the header value") {
		t.Errorf("claim of a webhook whose header does not open: error %q", c.SecretError)
	}
	if w, err := s.WebhookByID(ctx, AllCompanies, both); err != nil || w.Headers["X-Key"] != "both-header-value-42" || w.Secret != "secret-of-both-0123456789" {
		t.Errorf("WebhookByID: %+v %v", w, err)
	}

	// Without a key, nothing is written back in clear.
	s.UseSecrets(nil)
	if n, _, _ := s.ResealSecrets(ctx); n != 0 {
		t.Error("a reseal without a key wrote")
	}
	s.assertSealed(t, plain, 2, "Authorization", "X-Team")
}

// TestSavedHeaderValuesAreSealed: header values saved through the admin
// operations and the config file sync are stored sealed; an edit that does
// not touch the headers keeps their stored form (even one no key opens),
// and a sync of an unchanged file changes nothing.
func TestSavedHeaderValuesAreSealed(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.UseSecrets(box(t, 1))
	const bearer = "Bearer api-token-0123456789"
	w, err := s.CreateWebhook(ctx, "admin", Webhook{CompanyID: 1, Name: "api", URL: "http://a", Events: []string{"task.completed"},
		Secret: "api-secret-0123456789", Headers: map[string]string{"Authorization": bearer}, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.Headers["Authorization"] != bearer {
		t.Errorf("created webhook: %v", w.Headers)
	}
	before := s.assertSealed(t, w.ID, 1, "Authorization")

	// Rename only: the stored value stays as it is.
	if _, err := s.UpdateWebhook(ctx, "admin", "webhook.update", 1, w.ID, func(w *Webhook) error { w.Name = "api2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if after := s.assertSealed(t, w.ID, 1, "Authorization"); after["Authorization"] != before["Authorization"] {
		t.Error("an edit without header changes resealed the headers")
	}
	const bearer2 = "Bearer second-token-987654321"
	u, err := s.UpdateWebhook(ctx, "admin", "webhook.update", 1, w.ID, func(w *Webhook) error {
		w.Headers = map[string]string{"Authorization": bearer2, "X-Extra": "extra-value-55"}
		return nil
	})
	if err != nil || u.Headers["Authorization"] != bearer2 {
		t.Fatalf("update: %v %v", u.Headers, err)
	}
	s.assertSealed(t, w.ID, 1, "Authorization", "X-Extra")
	if got, _ := s.WebhookByID(ctx, 1, w.ID); got.Headers["Authorization"] != bearer2 || got.Headers["X-Extra"] != "extra-value-55" {
		t.Errorf("read back: %v", got.Headers)
	}

	file := []Webhook{{CompanyID: 2, Name: "file", URL: "http://f", Events: []string{"task.completed"},
		Headers: map[string]string{"Authorization": "Bearer file-token-24680"}, Active: true}}
	if added, _, _, err := s.SyncFileWebhooks(ctx, file); err != nil || added != 1 {
		t.Fatalf("sync: %d %v", added, err)
	}
	hooks, _ := s.Webhooks(ctx)
	var fileID int64
	for _, h := range hooks {
		if h.Name == "file" {
			fileID = h.ID
			if h.Headers["Authorization"] != "Bearer file-token-24680" {
				t.Errorf("file webhook read back: %v", h.Headers)
			}
		}
	}
	synced := s.assertSealed(t, fileID, 1, "Authorization")
	if _, updated, _, err := s.SyncFileWebhooks(ctx, file); err != nil || updated != 0 {
		t.Errorf("a sync of the same file updated %d webhooks (%v)", updated, err)
	}
	if again := s.rawHeaders(t, fileID); again["Authorization"] != synced["Authorization"] {
		t.Error("a sync of the same file resealed the header")
	}
	// After a rotation the sync reseals under the new key.
	s.UseSecrets(box(t, 2, 1))
	if _, updated, _, err := s.SyncFileWebhooks(ctx, file); err != nil || updated != 1 {
		t.Errorf("sync after a rotation updated %d (%v), want 1", updated, err)
	}
	s.assertSealed(t, fileID, 2, "Authorization")
	s.assertNotInClear(t, bearer, bearer2, "extra-value-55", "Bearer file-token-24680", "api-secret-0123456789")
}

// TestMigrationMakesHeaderValuesText: values the relay could not seal (a
// number, a null, a column that is not an object, written in SQL before
// migration 0015) become text, and the table refuses them afterwards.
func TestMigrationMakesHeaderValuesText(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	// Back to the table as it was before 0015.
	s.mustExec(t, `ALTER TABLE {{schema}}.webhooks DROP CONSTRAINT webhooks_headers_are_text`)
	s.mustExec(t, `DELETE FROM {{schema}}.schema_migrations WHERE version = 15`)
	num := s.addWebhook(t, "http://a", "", `{"X-Retries": 3, "X-Gone": null, "Authorization": "Bearer x"}`)
	list := s.addWebhook(t, "http://b", "", `[1, 2]`)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if h := s.rawHeaders(t, num); len(h) != 2 || h["X-Retries"] != "3" || h["Authorization"] != "Bearer x" {
		t.Errorf("after the migration: %v", h)
	}
	if h := s.rawHeaders(t, list); len(h) != 0 {
		t.Errorf("a list became %v", h)
	}
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET headers = '{"X-N": 5}' WHERE id = $1`), num); err == nil {
		t.Error("the table took a header value that is not text")
	}
	// The relay seals them at its next start.
	s.UseSecrets(box(t, 1))
	if _, _, err := s.ResealSecrets(ctx); err != nil {
		t.Fatal(err)
	}
	s.assertSealed(t, num, 1, "Authorization", "X-Retries")
}
