package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
)

// The deliveries a write leases are held by their owner from the moment
// the store transaction commits, within the limits asked for, oldest
// first; the rest are left for claims. A rolled-back write leases nothing.
func TestWriteLeasing(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	// Four events, two webhooks: eight deliveries. At most 3 leased, at
	// most 2 per webhook, and webhook a already has one in flight.
	req := ClaimRequest{Owner: "me", Limit: 3, Lease: time.Minute, PerWebhook: 2, Busy: map[int64]int{a: 1}}

	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, leased, err := w.WriteLeasing(ctx, events(10, 4), nil, req); err != nil || len(leased.Ready) == 0 {
		t.Fatalf("write: %v %v", leased, err)
	}
	w.Rollback(ctx)
	var n int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries`)).Scan(&n)
	if n != 0 {
		t.Fatalf("%d deliveries after a rollback", n)
	}

	w, err = s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	created, leased, err := w.WriteLeasing(ctx, events(10, 4), nil, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if created != 8 || len(leased.Ready) != 3 || len(leased.Held) != 0 {
		t.Fatalf("created %d, leased %d, held %d; want 8, 3 and none", created, len(leased.Ready), len(leased.Held))
	}
	per := map[int64]int{}
	for _, c := range leased.Ready {
		per[c.WebhookID]++
		if c.Attempts != 0 || c.EventType != "task.completed" || c.CompanyID != 1 || len(c.Body) == 0 ||
			c.TraceParent == "" || c.CommittedAt.IsZero() || c.LeaseUntil.Before(time.Now().Add(50*time.Second)) {
			t.Errorf("leased delivery: %+v", c)
		}
		switch c.WebhookID {
		case a:
			if c.URL != "http://a.example/hook" || c.Secret != "a-secret-0123456789" || c.Headers["X-Team"] != "maintenance" {
				t.Errorf("webhook a's delivery: %+v", c)
			}
		case b:
			if c.URL != "http://b.example/hook" || c.Secret != "" {
				t.Errorf("webhook b's delivery: %+v", c)
			}
		}
	}
	if per[a] != 1 || per[b] != 2 {
		t.Fatalf("leased per webhook %v; want 1 for a (one busy of 2) and 2 for b", per)
	}
	// The oldest of each webhook's deliveries are the leased ones.
	var first int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries d JOIN {{schema}}.events e ON e.id = d.event_id
		WHERE d.lease_owner = 'me' AND e.seq < 2`)).Scan(&first)
	if first != 3 {
		t.Errorf("%d of the leased deliveries are of the first two events; want 3", first)
	}
	// Another sender claims only the five that were not leased.
	others, err := s.ClaimDue(ctx, "other", 100, time.Minute, nil)
	if err != nil || len(others) != 5 {
		t.Fatalf("another sender claimed %d: %v", len(others), err)
	}
	for _, c := range leased.Ready {
		if err := s.RecordAttempt(ctx, "me", AttemptResult{DeliveryID: c.ID, Attempt: 1, StartedAt: time.Now(), Status: StatusDelivered, StatusCode: 200}); err != nil {
			t.Fatalf("record an attempt of a leased delivery: %v", err)
		}
	}

	// Replayed events create nothing and lease nothing.
	w, err = s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	created, leased, err = w.WriteLeasing(ctx, events(10, 4), nil, req)
	w.Rollback(ctx)
	if err != nil || created != 0 || leased.Len() != 0 {
		t.Fatalf("replay: created %d, leased %d, %v", created, leased.Len(), err)
	}
}

// twoWebhooks returns a store whose slot "s" is ready, with two webhooks
// of company 1 on task.completed: a (with a secret and a header) and b.
func twoWebhooks(t *testing.T) (s *Store, a, b int64) {
	t.Helper()
	s = newTestStore(t)
	a = s.addWebhook(t, "http://a.example/hook", "a-secret-0123456789", `{"X-Team": "maintenance"}`)
	b = s.addWebhook(t, "http://b.example/hook", "", "")
	s.readySlot(t)
	return s, a, b
}

// readySlot makes slot "s" ready at position 1, with no row state.
func (s *Store) readySlot(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := s.MarkSeeding(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, "s", 1, func(func(StateRow) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// events returns n traced task.completed events of one source transaction,
// each with a payload of its own.
func events(lsn event.LSN, n int) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		out[i] = event.Event{Type: "task.completed", CompanyID: 1, CommitLSN: lsn, Seq: i, CommitTime: time.Now(),
			Table: "tasks", Op: event.Update, Body: []byte(`{"n":` + string(rune('0'+i)) + `}`), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	}
	return out
}

// WriteCommit stores a group and its position in one round trip, all or
// nothing.
func TestWriteCommit(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.addWebhook(t, "http://a.example/hook", "", "")
	ev := []event.Event{{Type: "task.completed", CompanyID: 1, CommitLSN: 10, Seq: 0, CommitTime: time.Now(),
		Table: "tasks", Op: event.Update, Body: []byte(`{}`)}}
	st := []StateRow{{Table: "tasks", Key: "1", Vals: event.Row{"status": "completed"}}}
	count := func(table string) int {
		var n int
		if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.`+table)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The slot is not ready: nothing is stored.
	if _, _, err := s.WriteCommit(ctx, "s", ev, st, ClaimRequest{}, 11); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("write to a slot that is not ready: %v", err)
	}
	if count("events") != 0 || count("row_state") != 0 {
		t.Fatal("a refused write stored something")
	}
	if err := s.MarkSeeding(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, "s", 1, func(func(StateRow) error) error { return nil }); err != nil {
		t.Fatal(err)
	}

	// A statement after the position fails: the position is not moved.
	bad := []StateRow{{Table: "tasks\x00", Key: "1", Vals: event.Row{"status": "x"}}}
	if _, _, err := s.WriteCommit(ctx, "s", ev, bad, ClaimRequest{}, 11); err == nil {
		t.Fatal("a failing write succeeded")
	}
	if lsn, _, err := s.Position(ctx, "s"); err != nil || lsn != 1 {
		t.Fatalf("position after a failed write: %v %v, want 1", lsn, err)
	}
	if count("events") != 0 {
		t.Fatal("a failed write stored events")
	}

	created, leased, err := s.WriteCommit(ctx, "s", ev, st, ClaimRequest{Owner: "me", Limit: 10, Lease: time.Minute}, 11)
	if err != nil || created != 1 || len(leased.Ready) != 1 {
		t.Fatalf("write: %d %v %v", created, leased, err)
	}
	if lsn, _, err := s.Position(ctx, "s"); err != nil || lsn != 11 {
		t.Fatalf("position %v %v, want 11", lsn, err)
	}
	if count("events") != 1 || count("deliveries") != 1 || count("row_state") != 1 {
		t.Fatal("the write did not store everything")
	}
}

// Deliveries get time-ordered ids (UUID version 7): the primary keys of
// deliveries and attempts grow at their right edge.
func TestDeliveryIDsAreTimeOrdered(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.addWebhook(t, "http://a.example/hook", "", "")
	if err := s.MarkSeeding(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, "s", 1, func(func(StateRow) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for i := range 3 {
		before := time.Now().Truncate(time.Millisecond)
		ev := []event.Event{{Type: "task.completed", CompanyID: 1, CommitLSN: event.LSN(10 + i), CommitTime: time.Now(),
			Table: "tasks", Op: event.Update, Body: []byte(`{}`)}}
		_, leased, err := s.WriteCommit(ctx, "s", ev, nil, ClaimRequest{Owner: "me", Limit: 10, Lease: time.Minute}, event.LSN(11+i))
		if err != nil || len(leased.Ready) != 1 {
			t.Fatalf("write %d: %v %v", i, leased, err)
		}
		id := leased.Ready[0].ID
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("delivery id %s: version %d, variant %v; want 7, RFC 4122", id, id.Version(), id.Variant())
		}
		sec, nsec := id.Time().UnixTime()
		if at := time.Unix(sec, nsec); at.Before(before) || at.After(time.Now()) {
			t.Fatalf("delivery id %s carries %v, not the time it was made (after %v)", id, at, before)
		}
		ids = append(ids, id)
		time.Sleep(2 * time.Millisecond)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i].String() <= ids[i-1].String() {
			t.Fatalf("ids not increasing: %s then %s", ids[i-1], ids[i])
		}
	}
}

// A write holds the deliveries beyond its room as ids, leased but without
// payloads, up to each webhook's hold room and the write's hold limit;
// LoadHeld reads them ready to send, without writing; claims bounded
// before them still find older due deliveries.
func TestWriteHolding(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	// An older due delivery of each webhook, not leased.
	if _, _, err := s.WriteCommit(ctx, "s", events(5, 1), nil, ClaimRequest{}, 6); err != nil {
		t.Fatal(err)
	}

	// Six events, two webhooks: twelve deliveries. One of each webhook
	// leased with its payload; a may hold 2 more, b the default 5 less
	// its room; 5 held at most in all.
	req := ClaimRequest{Owner: "me", Limit: 10, Lease: time.Minute, PerWebhook: 1,
		Hold: 5, HoldPerWebhook: 5, HoldRoom: map[int64]int{a: 2}}
	before := time.Now()
	created, leased, err := s.WriteCommit(ctx, "s", events(10, 6), nil, req, 11)
	if err != nil {
		t.Fatal(err)
	}
	if created != 12 || len(leased.Ready) != 2 || len(leased.Held) != 5 {
		t.Fatalf("created %d, ready %d, held %d; want 12, 2, 5", created, len(leased.Ready), len(leased.Held))
	}
	if leased.At.Before(before) || leased.At.After(time.Now()) || leased.Due.IsZero() {
		t.Fatalf("leases began at %v, due %v", leased.At, leased.Due)
	}
	per := map[int64]int{}
	var heldIDs []uuid.UUID
	for _, h := range leased.Held {
		per[h.WebhookID]++
		heldIDs = append(heldIDs, h.ID)
	}
	if per[a] != 2 || per[b] != 3 {
		t.Fatalf("held per webhook %v; want 2 of a, 3 of b (the limit of 5)", per)
	}
	var leasedRows int
	s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE lease_owner = 'me' AND lease_until > now() + interval '50 seconds'`)).Scan(&leasedRows)
	if leasedRows != 7 {
		t.Fatalf("%d deliveries leased; want 7 (2 ready, 5 held)", leasedRows)
	}

	// A claim bounded before the held deliveries finds the older ones only
	// (the others of the write are due at the same time as the held).
	claimed, err := s.Claim(ctx, ClaimRequest{Owner: "other", Limit: 100, Lease: time.Minute,
		Before: map[int64]time.Time{a: leased.Due, b: leased.Due}})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 2 || !claimed[0].NextAttemptAt.Before(leased.Due) || !claimed[1].NextAttemptAt.Before(leased.Due) {
		t.Fatalf("bounded claim returned %d deliveries; want the older one of each webhook", len(claimed))
	}
	// Bounded for one webhook only, the other's are all claimed.
	claimed, err = s.Claim(ctx, ClaimRequest{Owner: "third", Limit: 100, Lease: time.Minute,
		Before: map[int64]time.Time{a: leased.Due}})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 2 || claimed[0].WebhookID != b || claimed[1].WebhookID != b {
		t.Fatalf("claim bounded for webhook a only returned %d deliveries; want b's 2 neither leased nor held", len(claimed))
	}
	// Without the bound the rest are claimed: 12 - 7 leased - 2 above.
	claimed, err = s.Claim(ctx, ClaimRequest{Owner: "other", Limit: 100, Lease: time.Minute})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claimed %d: %v; want a's 3 neither leased nor held", len(claimed), err)
	}

	// Held deliveries load with their payloads and endpoints, in order.
	got, err := s.LoadHeld(ctx, "me", heldIDs, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("loaded %d of 5", len(got))
	}
	for i, c := range got {
		if c.ID != heldIDs[i] || len(c.Body) == 0 || c.Attempts != 0 || c.EventType != "task.completed" {
			t.Errorf("loaded %d: %+v", i, c)
		}
		if c.WebhookID == a && (c.Secret != "a-secret-0123456789" || c.Headers["X-Team"] != "maintenance") {
			t.Errorf("webhook a's endpoint: %+v", c)
		}
	}
	// Another owner, a lease shorter than asked for, a disabled webhook:
	// none load.
	if got, err := s.LoadHeld(ctx, "other", heldIDs, 0); err != nil || len(got) != 0 {
		t.Fatalf("another owner loaded %d: %v", len(got), err)
	}
	if got, err := s.LoadHeld(ctx, "me", heldIDs, 2*time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("loaded %d with less lease left than asked: %v", len(got), err)
	}
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`), b); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadHeld(ctx, "me", heldIDs, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("loaded %d with webhook b disabled: %v; want a's 2", len(got), err)
	}
	// Given back, they are due for anyone.
	if err := s.ReleaseClaims(ctx, "me", heldIDs); err != nil {
		t.Fatal(err)
	}
	claimed, err = s.Claim(ctx, ClaimRequest{Owner: "other", Limit: 100, Lease: time.Minute})
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %d after the give-back: %v; want a's 2", len(claimed), err)
	}
}

// Senders see each other through their heartbeats, until one leaves or
// stops beating.
func TestHeartbeat(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	if n, err := s.Heartbeat(ctx, "a", time.Minute); err != nil || n != 0 {
		t.Fatalf("alone: %d peers, %v", n, err)
	}
	if n, err := s.Heartbeat(ctx, "b", time.Minute); err != nil || n != 1 {
		t.Fatalf("b sees %d peers, %v; want a", n, err)
	}
	if n, err := s.Heartbeat(ctx, "a", time.Minute); err != nil || n != 1 {
		t.Fatalf("a sees %d peers, %v; want b", n, err)
	}
	// b stops beating: after the window it is no peer.
	time.Sleep(20 * time.Millisecond)
	if n, err := s.Heartbeat(ctx, "a", 10*time.Millisecond); err != nil || n != 0 {
		t.Fatalf("a sees %d peers after b went quiet, %v", n, err)
	}
	if err := s.Leave(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Heartbeat(ctx, "a", time.Minute); err != nil || n != 0 {
		t.Fatalf("a sees %d peers after b left, %v", n, err)
	}
}
