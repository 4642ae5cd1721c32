package relay

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// aheadClaim is a delivery to webhook at url as the ingester offers it
// ahead of its store write.
func aheadClaim(webhook int64, url string) *store.Claimed {
	now := time.Now()
	return &store.Claimed{ID: uuid.New(), WebhookID: webhook, EventType: "task.completed", CompanyID: 1, Body: body,
		NextAttemptAt: now, LeaseUntil: now.Add(time.Minute), CreatedAt: now, CommittedAt: now, URL: url, Secret: "s3cret",
		Format: store.FormatRaw}
}

// TestAheadSendsOnceAndRecordsWhenStored: a delivery offered ahead is sent
// at once, signed; offered again (its source transaction read again after
// a failed write) it is not sent a second time; its result waits until the
// write has stored it, and is then recorded.
func TestAheadSendsOnceAndRecordsWhenStored(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	hook := e.webhook(rc.URL, "s3cret", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-test"}))
	c := aheadClaim(hook, rc.URL)
	again := *c
	if !d.Ahead(c, 100) {
		t.Fatal("a delivery to an idle webhook was not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 1 }, func() string { return "the delivery was not sent ahead" })
	if !d.Ahead(&again, 100) {
		t.Fatal("a delivery taken ahead already was refused when offered again")
	}
	release()
	time.Sleep(100 * time.Millisecond)
	if n := rc.count(); n != 1 {
		t.Fatalf("receiver got %d requests, want 1: a delivery offered twice was sent twice", n)
	}
	got := rc.receipts(c.ID)
	if err := signature.Verify([]byte("s3cret"), got[0].body, got[0].header.Get("X-SMTM-Signature")); err != nil {
		t.Fatalf("signature: %v", err)
	}

	// The write stores it, leased to this dispatcher, as store.Batch.Ahead does.
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', 100, 0, 'task.completed', 1, 'tasks', 'update', now(), $3::bytea) RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
		SELECT $1, ev.id, $2, 1, 'task.completed', 'ahead-test', now() + interval '1 minute' FROM ev`, c.ID, hook, body)
	time.Sleep(100 * time.Millisecond)
	if s := e.get(c.ID).Status; s != store.StatusPending {
		t.Fatalf("status %s before the dispatcher learnt that the delivery is stored, want pending", s)
	}
	d.Stored(event.LSN(101))
	dl := e.waitStatus(c.ID, store.StatusDelivered, 5*time.Second)
	if dl.Attempts != 1 || len(e.attempts(c.ID)) != 1 {
		t.Fatalf("%d attempts, %d attempt rows; want 1 and 1", dl.Attempts, len(e.attempts(c.ID)))
	}
}

// TestAheadLeavesBusyWebhooksToTheStore: a webhook whose slots are all
// taken is not sent a delivery ahead; the store write leases it as before.
func TestAheadLeavesBusyWebhooksToTheStore(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	defer release()
	hook := e.webhook(rc.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-busy", PerWebhook: 1}))
	if !d.Ahead(aheadClaim(hook, rc.URL), 100) {
		t.Fatal("first delivery not taken ahead")
	}
	if d.Ahead(aheadClaim(hook, rc.URL), 101) {
		t.Fatal("a delivery was taken ahead for a webhook with no free slot")
	}
}
