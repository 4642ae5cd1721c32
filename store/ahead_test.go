package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/smartmaintenance/relay/event"
)

// TestWriteStoresAhead: deliveries taken ahead are stored leased to their
// sender and due at once, under DeliveryID's ids, whatever the webhooks are
// by the time of the write, or as their first attempt left them when it
// is over, with the attempt; they count in neither the lease's limits nor
// its ready deliveries; the other webhooks' deliveries are decided as
// before.
func TestWriteStoresAhead(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	key, err := s.DeliveryKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs := events(10, 50)
	var ahead []Ahead
	for _, e := range evs {
		ahead = append(ahead, Ahead{CommitLSN: e.CommitLSN, Seq: e.Seq, WebhookID: a})
	}
	// The first three were attempted before the write: stored as their
	// attempts left them.
	started := time.Now().Add(-time.Second).Truncate(time.Microsecond)
	results := []AttemptResult{
		{Attempt: 1, StartedAt: started, Duration: 3 * time.Millisecond, StatusCode: 204, Status: StatusDelivered},
		{Attempt: 1, StartedAt: started, Duration: time.Millisecond, StatusCode: 500, Error: "HTTP 500", Snippet: "oops", Status: StatusRetrying, RetryIn: time.Hour},
		{Attempt: 1, StartedAt: started, Duration: time.Millisecond, StatusCode: 410, Error: "HTTP 410", Status: StatusFailed},
	}
	for i := range results {
		results[i].DeliveryID = DeliveryID(key, "s", evs[i].CommitLSN, evs[i].Seq, a, evs[i].CommitTime)
		ahead[i].Result = &results[i]
	}
	// a is disabled after the sender decided: its deliveries taken ahead
	// are stored all the same (they may have been sent); b's are not taken.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`), a); err != nil {
		t.Fatal(err)
	}
	lease := WriteLease{Owner: "me", Lease: time.Minute, Limit: 10, Room: 10}
	t0 := time.Now()
	created, leased, err := s.WriteCommit(ctx, "s", Batch{Events: evs, Lease: lease, Ahead: ahead}, s.at(t), 11)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 500*time.Millisecond {
		t.Errorf("the write took %v", took)
	}
	if created != 100 || leased.Ahead != 50 || len(leased.Ready) != 10 {
		t.Fatalf("created %d, ahead %d, ready %d; want 100, 50, 10", created, leased.Ahead, len(leased.Ready))
	}
	for _, c := range leased.Ready {
		if c.WebhookID != b {
			t.Fatalf("a delivery to webhook %d returned as leased; only b's (%d) may be", c.WebhookID, b)
		}
	}
	v, err := s.WebhooksVersion(ctx)
	if err != nil || leased.WebhooksVersion != v {
		t.Fatalf("write saw version %d, current %d (%v)", leased.WebhooksVersion, v, err)
	}
	for i, r := range results {
		var status, owner, errText string
		var attempts, code, rows, own int
		var dueLater, finished bool
		err := s.pool.QueryRow(ctx, s.q(`SELECT d.status, coalesce(d.lease_owner, ''), d.attempts, coalesce(d.last_status_code, 0), coalesce(d.last_error, ''),
				d.next_attempt_at > now() + interval '50 minutes', d.finished_at IS NOT NULL,
				(SELECT count(*) FROM {{schema}}.attempts t WHERE t.delivery_id = d.id AND t.attempt = 1 AND t.started_at = $2
				   AND t.sent_by = 'me' AND coalesce(t.status_code, 0) = $3),
				(SELECT count(*) FROM {{schema}}.attempt_rows t WHERE t.delivery_id = d.id)
			FROM {{schema}}.deliveries d WHERE d.id = $1`), r.DeliveryID, r.StartedAt, r.StatusCode).
			Scan(&status, &owner, &attempts, &code, &errText, &dueLater, &finished, &rows, &own)
		if err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if status != string(r.Status) || owner != "" || attempts != 1 || code != r.StatusCode || errText != r.Error ||
			dueLater != (r.Status == StatusRetrying) || finished != (r.Status != StatusRetrying) || rows != 1 {
			t.Fatalf("delivery %d stored as %s, owner %q, %d attempts, code %d, error %q, due later %v, finished %v, %d attempt rows; want it as its attempt left it",
				i, status, owner, attempts, code, errText, dueLater, finished, rows)
		}
		// A first attempt answered 2xx is kept in the delivery's row.
		if want := map[bool]int{true: 0, false: 1}[r.Status == StatusDelivered]; own != want {
			t.Fatalf("delivery %d (%s) has %d rows in attempt_rows, want %d", i, r.Status, own, want)
		}
	}
	for _, e := range evs[len(results):] {
		id := DeliveryID(key, "s", e.CommitLSN, e.Seq, a, e.CommitTime)
		var owner string
		var due bool
		err := s.pool.QueryRow(ctx, s.q(`SELECT lease_owner, next_attempt_at <= now() AND lease_until > now() + interval '50 seconds'
			FROM {{schema}}.deliveries WHERE id = $1 AND webhook_id = $2 AND status = 'pending'`), id, a).Scan(&owner, &due)
		if err != nil || owner != "me" || !due {
			t.Fatalf("delivery %s taken ahead: owner %q, due and leased %v, %v", id, owner, due, err)
		}
	}

	// An event only a delivery taken ahead takes (no webhook subscribes
	// any more) is stored with it.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`), b); err != nil {
		t.Fatal(err)
	}
	last := events(12, 1)
	created, _, err = s.WriteCommit(ctx, "s", Batch{Events: last, Lease: WriteLease{Owner: "me", Lease: time.Minute},
		Ahead: []Ahead{{CommitLSN: 12, Seq: 0, WebhookID: a}}}, s.at(t), 13)
	if err != nil || created != 1 {
		t.Fatalf("created %d, %v; want the one taken ahead", created, err)
	}

	// A result that must be recorded on its own (a pause asked for) is refused.
	bad := AttemptResult{Attempt: 1, Status: StatusRetrying, PauseWebhook: time.Minute}
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(14, 1), Lease: WriteLease{Owner: "me", Lease: time.Minute},
		Ahead: []Ahead{{CommitLSN: 14, WebhookID: a, Result: &bad}}}, s.at(t), 15); err == nil {
		t.Fatal("a result asking for a pause was stored with its delivery")
	}
	// Without an owner to lease them to, deliveries taken ahead are refused.
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(14, 1), Ahead: []Ahead{{CommitLSN: 14, WebhookID: a}}}, s.at(t), 15); err == nil {
		t.Fatal("deliveries taken ahead stored without a lease owner")
	}
	_ = event.LSN(0)
}

// TestWriteStoresAheadUnderItsSendersID: a delivery taken ahead is stored
// under the id its sender gave it (Ahead.ID, the one it was sent under),
// and under DeliveryID's when it has none.
func TestWriteStoresAheadUnderItsSendersID(t *testing.T) {
	s, a, _ := twoWebhooks(t)
	ctx := context.Background()
	key, err := s.DeliveryKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs := events(10, 2)
	given := uuid.New()
	ahead := []Ahead{
		{CommitLSN: evs[0].CommitLSN, Seq: evs[0].Seq, WebhookID: a, ID: given},
		{CommitLSN: evs[1].CommitLSN, Seq: evs[1].Seq, WebhookID: a},
	}
	lease := WriteLease{Owner: "me", Lease: time.Minute}
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: evs, Lease: lease, Ahead: ahead}, s.at(t), 11); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{given, DeliveryID(key, "s", evs[1].CommitLSN, evs[1].Seq, a, evs[1].CommitTime)} {
		var n int
		if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE id = $1 AND webhook_id = $2`), id, a).Scan(&n); err != nil || n != 1 {
			t.Errorf("delivery %s: %d stored, %v; want 1", id, n, err)
		}
	}
}
