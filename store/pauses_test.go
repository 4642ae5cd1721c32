package store

import (
	"context"
	"testing"
	"time"
)

// A receiver's Retry-After pauses its webhook for every sender: claims
// skip it, a write leases none of its new deliveries and makes them due at
// the end of the pause, held ones are not loaded; other webhooks go on. A
// later, shorter answer does not shorten the pause.
func TestWebhookPause(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	_, leased, err := s.WriteCommit(ctx, "s", Batch{Events: events(10, 1), Lease: WriteLease{Owner: "me", Lease: time.Minute, Limit: 10, Room: 10}}, s.at(t), 11)
	if err != nil || len(leased.Ready) != 2 {
		t.Fatalf("write: %d leased, %v", len(leased.Ready), err)
	}
	var ofA Claimed
	for _, c := range leased.Ready {
		if c.WebhookID == a {
			ofA = c
		}
	}
	res := []AttemptResult{{DeliveryID: ofA.ID, Attempt: 1, StartedAt: time.Now(), StatusCode: 503, Error: "HTTP 503",
		Status: StatusRetrying, RetryIn: time.Hour, PauseWebhook: time.Hour}}
	if lost, err := s.RecordAttempts(ctx, "me", res); err != nil || len(lost) > 0 {
		t.Fatalf("record: %v %v", lost, err)
	}
	res[0].DeliveryID, res[0].Attempt, res[0].PauseWebhook = ofA.ID, 2, time.Second // not held any more: only the pause counts
	_ = s.pauseWebhooks(ctx, res)
	until, err := s.PausedUntil(ctx, a)
	if err != nil || time.Until(until) < 59*time.Minute {
		t.Fatalf("paused until %v (%v); want an hour from now, not shortened", until, err)
	}
	if other, _ := s.PausedUntil(ctx, b); !other.IsZero() {
		t.Fatalf("webhook b paused until %v", other)
	}
	_, leased, err = s.WriteCommit(ctx, "s", Batch{Events: events(20, 2), Lease: WriteLease{Owner: "me", Lease: time.Minute, Limit: 10, Room: 10, HeldLimit: 10, Hold: 10}}, s.at(t), 21)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range leased.Ready {
		if c.WebhookID == a {
			t.Errorf("a delivery of the paused webhook was leased")
		}
	}
	for _, h := range leased.Held {
		if h.WebhookID == a {
			t.Errorf("a delivery of the paused webhook was held")
		}
	}
	var due int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE webhook_id = $1 AND next_attempt_at > now() + interval '59 minutes'`), a).Scan(&due)
	if due != 3 {
		t.Errorf("%d of the paused webhook's deliveries are due after the pause; want 3", due)
	}
	// Made due now by hand: still not claimed while the pause lasts.
	s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.deliveries SET next_attempt_at = now() WHERE webhook_id = $1`), a)
	claimed, err := s.ClaimDue(ctx, "other", 100, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claimed {
		if c.WebhookID == a {
			t.Fatalf("a delivery of the paused webhook was claimed")
		}
	}
	s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhook_pauses SET until = now() - interval '1 second'`))
	if claimed, _ = s.ClaimDue(ctx, "other", 100, time.Minute, nil); len(claimed) != 3 {
		t.Fatalf("after the pause %d claimed; want the paused webhook's 3", len(claimed))
	}
}
