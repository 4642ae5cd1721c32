package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The webhooks' version moves on every change to a webhook or a pause,
// whoever makes it, and on nothing else: not on writes of events, claims
// or statements that change no webhook.
func TestWebhooksVersion(t *testing.T) {
	s := newTestStore(t)
	s.readySlot(t)
	ctx := context.Background()
	v, err := s.WebhooksVersion(ctx)
	if err != nil || v != 1 {
		t.Fatalf("version of a new store = %d, %v; want 1", v, err)
	}
	moves := func(what string, change func()) {
		t.Helper()
		change()
		now, err := s.WebhooksVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if now <= v {
			t.Errorf("%s: version %d, was %d; want it moved", what, now, v)
		}
		v = now
	}
	stays := func(what string, change func()) {
		t.Helper()
		change()
		if now, err := s.WebhooksVersion(ctx); err != nil || now != v {
			t.Errorf("%s: version %d (%v), was %d; want it unchanged", what, now, err, v)
			v = now
		}
	}

	var h Webhook
	moves("CreateWebhook", func() {
		h, err = s.CreateWebhook(ctx, "admin", Webhook{CompanyID: 1, Name: "a", URL: "http://a.example/hook",
			Events: []string{"task.completed"}, Active: true})
		if err != nil {
			t.Fatal(err)
		}
	})
	other := s.addWebhook(t, "http://b.example/hook", "", "")
	moves("an INSERT of a webhook", func() {})
	moves("UpdateWebhook disabling it", func() {
		if _, err := s.UpdateWebhook(ctx, "admin", "webhook.update", AllCompanies, h.ID, func(w *Webhook) error {
			w.Active = false
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	moves("an UPDATE of a webhook's URL", func() {
		s.mustExec(t, `UPDATE {{schema}}.webhooks SET url = 'http://c.example/hook' WHERE id = $1`, other)
	})
	stays("an UPDATE that matches no webhook", func() {
		s.mustExec(t, `UPDATE {{schema}}.webhooks SET active = false WHERE id = -1`)
	})
	stays("ForgetExpiredSecrets with none to forget", func() {
		if n, err := s.ForgetExpiredSecrets(ctx); err != nil || n != 0 {
			t.Fatalf("ForgetExpiredSecrets = %d, %v", n, err)
		}
	})
	stays("a write of events and deliveries", func() {
		if created, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(10, 2)}, s.at(t), 11); err != nil || created != 2 {
			t.Fatalf("WriteCommit: %d created, %v", created, err)
		}
	})
	stays("a claim", func() {
		if got, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil || len(got) != 2 {
			t.Fatalf("ClaimDue: %d, %v", len(got), err)
		}
	})
	moves("a pause recorded from a Retry-After", func() {
		var d uuid.UUID
		if err := s.pool.QueryRow(ctx, s.q(`SELECT id FROM {{schema}}.deliveries LIMIT 1`)).Scan(&d); err != nil {
			t.Fatal(err)
		}
		if err := s.pauseWebhooks(ctx, []AttemptResult{{DeliveryID: d, PauseWebhook: time.Hour}}); err != nil {
			t.Fatal(err)
		}
		if until, _ := s.PausedUntil(ctx, other); until.IsZero() {
			t.Fatal("no pause recorded")
		}
	})
	moves("an UPDATE of a pause", func() {
		s.mustExec(t, `UPDATE {{schema}}.webhook_pauses SET until = now() - interval '1 second'`)
	})
	moves("a DELETE of a pause", func() {
		s.mustExec(t, `DELETE FROM {{schema}}.webhook_pauses`)
	})
	stays("a DELETE of no pause", func() {
		s.mustExec(t, `DELETE FROM {{schema}}.webhook_pauses`)
	})
	moves("an INSERT of a pause", func() {
		s.mustExec(t, `INSERT INTO {{schema}}.webhook_pauses (webhook_id, until) VALUES ($1, now())`, h.ID)
	})
	moves("a TRUNCATE of the pauses", func() {
		s.mustExec(t, `TRUNCATE {{schema}}.webhook_pauses`)
	})
	moves("DeleteWebhook", func() {
		if err := s.DeleteWebhook(ctx, "admin", AllCompanies, h.ID); err != nil {
			t.Fatal(err)
		}
	})
	moves("a DELETE of a webhook's row", func() {
		s.mustExec(t, `DELETE FROM {{schema}}.deliveries`)
		s.mustExec(t, `DELETE FROM {{schema}}.webhooks WHERE id = $1`, other)
	})
	// A change rolled back leaves the version as it was.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET active = true`)); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	stays("a rolled-back change", func() {})
}
