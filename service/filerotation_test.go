package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// TestFileSecretRotationOverlap: editing a file webhook's secret while the
// relay runs rotates it without downtime: the deliveries after the edit
// carry X-SMTM-Signature with the new secret and X-SMTM-Signature-Previous
// with the old one (for secret_overlap, 24 hours unless the file says),
// and the audit log records the rotation with its window, never a secret.
// An edit with secret_overlap "0" stops the replaced secret at once.
func TestFileSecretRotationOverlap(t *testing.T) {
	const oldSecret, newSecret, third = "file-rotation-old-0123456789", "file-rotation-new-0123456789", "file-rotation-3rd-0123456789"
	hook := fileHook{company: 1, name: "erp", path: "/erp", secret: oldSecret}
	f := newFileRelay(t, tokenYAML("ops-laptop", 1, tokenA), hook)

	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'before the edit')`)
	f.waitEvents("/erp", "shutdown.reported", 1)
	first := f.recv.requests("/erp")[0]
	if err := signature.Verify([]byte(oldSecret), first.Body, first.Header.Get(signature.Header)); err != nil {
		t.Fatalf("before the edit: %v", err)
	}
	if p := first.Header.Get(signature.PreviousHeader); p != "" {
		t.Fatalf("before the edit: %s: %q", signature.PreviousHeader, p)
	}

	hook.secret = newSecret
	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hook))
	f.waitWebhook("the previous secret kept", `name = 'erp' AND previous_secret IS NOT NULL AND previous_secret_until > now() + interval '23 hours 59 minutes'`)
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'after the edit')`)
	f.waitEvents("/erp", "shutdown.reported", 2)
	second := f.recv.requests("/erp")[1]
	if err := signature.Verify([]byte(newSecret), second.Body, second.Header.Get(signature.Header)); err != nil {
		t.Errorf("after the edit, %s: %v", signature.Header, err)
	}
	if err := signature.Verify([]byte(oldSecret), second.Body, second.Header.Get(signature.PreviousHeader)); err != nil {
		t.Errorf("after the edit, %s: %v", signature.PreviousHeader, err)
	}

	var actor, details string
	if err := f.pool.QueryRow(context.Background(), `SELECT actor, details::text FROM relay.audit_log
		WHERE action = 'webhook.rotate_secret' ORDER BY id DESC LIMIT 1`).Scan(&actor, &details); err != nil {
		t.Fatalf("no rotation in the audit log: %v", err)
	}
	if actor != "config file" || !strings.Contains(details, `"secret_overlap": "24h0m0s"`) || !strings.Contains(details, `"previous_secret_until"`) {
		t.Errorf("rotation audit: actor %q details %s", actor, details)
	}
	var dump string
	f.pool.QueryRow(context.Background(), `SELECT string_agg(a::text, E'\n') FROM relay.audit_log a`).Scan(&dump)
	for _, v := range []string{oldSecret, newSecret} {
		if strings.Contains(dump, v) || strings.Contains(f.logs.String(), v) {
			t.Errorf("a secret is in the audit log or the relay's log")
		}
	}

	// secret_overlap "0": the new secret alone, at once.
	hook.secret, hook.overlap = third, "0"
	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hook))
	f.waitWebhook("the previous secret dropped", `name = 'erp' AND previous_secret IS NULL`)
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'no overlap')`)
	f.waitEvents("/erp", "shutdown.reported", 3)
	last := f.recv.requests("/erp")[2]
	if err := signature.Verify([]byte(third), last.Body, last.Header.Get(signature.Header)); err != nil {
		t.Errorf("with no overlap, %s: %v", signature.Header, err)
	}
	if p := last.Header.Get(signature.PreviousHeader); p != "" {
		t.Errorf("with no overlap, %s: %q", signature.PreviousHeader, p)
	}

	// A window that ends while the relay runs: the deliveries after its
	// end are signed with the new secret alone, at once, though the
	// relay's copy of the webhooks was read while it lasted.
	const fourth = "file-rotation-4th-0123456789"
	hook.secret, hook.overlap = fourth, "3s"
	f.replace(f.configYAML(tokenYAML("ops-laptop", 1, tokenA), hook))
	f.waitWebhook("the short window", `name = 'erp' AND previous_secret IS NOT NULL`)
	var until time.Time
	if err := f.pool.QueryRow(context.Background(), `SELECT previous_secret_until FROM relay.webhooks WHERE name = 'erp'`).Scan(&until); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'in the short window')`)
	f.waitEvents("/erp", "shutdown.reported", 4)
	if r := f.recv.requests("/erp")[3]; signature.Verify([]byte(third), r.Body, r.Header.Get(signature.PreviousHeader)) != nil {
		t.Errorf("in the short window, %s does not verify with the replaced secret", signature.PreviousHeader)
	}
	time.Sleep(time.Until(until) + 100*time.Millisecond)
	for i := range 5 {
		f.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'after the short window')`)
		f.waitEvents("/erp", "shutdown.reported", 5+i)
		r := f.recv.requests("/erp")[4+i]
		if p := r.Header.Get(signature.PreviousHeader); p != "" {
			t.Fatalf("%v after the window ended: %s: %q", time.Since(until).Round(time.Millisecond), signature.PreviousHeader, p)
		}
		if err := signature.Verify([]byte(fourth), r.Body, r.Header.Get(signature.Header)); err != nil {
			t.Fatalf("after the short window, %s: %v", signature.Header, err)
		}
	}
}

// TestSecretOverlapBoundsAgree: the config file's secret_overlap has the
// default and the bound of a rotation through the admin API.
func TestSecretOverlapBoundsAgree(t *testing.T) {
	if config.MaxSecretOverlap != store.MaxSecretOverlap || config.DefaultSecretOverlap != admin.DefaultSecretOverlap {
		t.Errorf("config: default %v, max %v; admin default %v, store max %v", config.DefaultSecretOverlap,
			config.MaxSecretOverlap, admin.DefaultSecretOverlap, store.MaxSecretOverlap)
	}
}
