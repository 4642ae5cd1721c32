package store

import (
	"bytes"
	"context"
	"strings"
	"testing"

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
	// Without a key, nothing is written back.
	s.UseSecrets(nil)
	if n, _, _ := s.ResealSecrets(ctx); n != 0 || !strings.HasPrefix(s.rawSecret(t, plain), "enc:v1:") {
		t.Error("a reseal without a key changed a sealed value")
	}
}
