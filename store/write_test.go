package store

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	neturl "net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgtest"
)

// The deliveries a write leases are held by their owner from the moment
// the store transaction commits, within the limits asked for, oldest
// first; the rest are left for claims. A rolled-back write leases nothing.
func TestWriteLeasing(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	// Four events, two webhooks: eight deliveries. At most 3 leased, at
	// most 2 per webhook, and webhook a already has one in flight (room
	// for one).
	req := WriteLease{Owner: "me", Limit: 3, Lease: time.Minute, Room: 2, Webhooks: map[int64]WebhookLease{a: {Room: 1}}}

	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, leased, err := w.Write(ctx, Batch{Events: events(10, 4), Lease: req}); err != nil || len(leased.Ready) == 0 {
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
	created, leased, err := w.Write(ctx, Batch{Events: events(10, 4), Lease: req})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, s.at(t), 11); err != nil {
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
	created, leased, err = w.Write(ctx, Batch{Events: events(10, 4), Lease: req})
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

// at returns slot "s"'s position, what a writer expects it to be.
func (s *Store) at(t testing.TB) event.LSN {
	t.Helper()
	lsn, _, err := s.Position(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	return lsn
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
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: ev, States: st}, 0, 11); err == nil || !strings.Contains(err.Error(), "not ready") {
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
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: ev, States: bad}, 1, 11); err == nil {
		t.Fatal("a failing write succeeded")
	}
	if lsn, _, err := s.Position(ctx, "s"); err != nil || lsn != 1 {
		t.Fatalf("position after a failed write: %v %v, want 1", lsn, err)
	}
	if count("events") != 0 {
		t.Fatal("a failed write stored events")
	}

	created, leased, err := s.WriteCommit(ctx, "s", Batch{Events: ev, States: st, Lease: WriteLease{Owner: "me", Limit: 10, Room: 10, Lease: time.Minute}}, 1, 11)
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

// Delivery ids are derived from the event's place in the feed and the
// webhook, keyed with the installation's own key: the same on a replay,
// different per webhook and per installation, and time-ordered by the
// source commit (the layout of UUID version 7, marked version 8).
func TestDeliveryIDsAreStableAndTimeOrdered(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	base := time.Now().Add(time.Minute).Truncate(time.Millisecond) // after every webhook here is made
	write := func(s *Store, i int) map[int64]uuid.UUID {
		t.Helper()
		ev := []event.Event{{Type: "task.completed", CompanyID: 1, CommitLSN: event.LSN(10 + i), CommitTime: base.Add(time.Duration(i) * time.Millisecond),
			Table: "tasks", Op: event.Update, Body: []byte(`{}`)}}
		_, leased, err := s.WriteCommit(ctx, "s", Batch{Events: ev, Lease: WriteLease{Owner: "me", Limit: 10, Room: 10, Lease: time.Minute}}, s.at(t), event.LSN(11+i))
		if err != nil || len(leased.Ready) != 2 {
			t.Fatalf("write %d: %v %v", i, leased, err)
		}
		out := map[int64]uuid.UUID{}
		for _, c := range leased.Ready {
			out[c.WebhookID] = c.ID
		}
		return out
	}
	var ids []uuid.UUID
	var first map[int64]uuid.UUID
	for i := range 3 {
		got := write(s, i)
		if i == 0 {
			first = got
		}
		for _, wh := range []int64{a, b} {
			id := got[wh]
			if id.Version() != 8 || id.Variant() != uuid.RFC4122 {
				t.Fatalf("delivery id %s: version %d, variant %v; want 8, RFC 4122", id, id.Version(), id.Variant())
			}
			ms := int64(binary.BigEndian.Uint64(append([]byte{0, 0}, id[:6]...)))
			if want := base.Add(time.Duration(i) * time.Millisecond).UnixMilli(); ms != want {
				t.Fatalf("delivery id %s carries %d ms, want the source commit's %d", id, ms, want)
			}
		}
		if got[a] == got[b] {
			t.Fatalf("two webhooks got the same delivery id %s", got[a])
		}
		ids = append(ids, got[a])
	}
	for i := 1; i < len(ids); i++ {
		if ids[i].String() <= ids[i-1].String() {
			t.Fatalf("ids not increasing: %s then %s", ids[i-1], ids[i])
		}
	}
	// A replay of the first write, as after a crash forgot it, gives it the
	// same ids.
	s.mustExec(t, `DELETE FROM {{schema}}.deliveries`)
	s.mustExec(t, `DELETE FROM {{schema}}.events`)
	s.mustExec(t, `UPDATE {{schema}}.checkpoints SET lsn = 1`)
	if again := write(s, 0); again[a] != first[a] || again[b] != first[b] {
		t.Fatalf("replayed write got ids %v, first %v", again, first)
	}
	// Another installation (its own key) gives the same event other ids.
	o, oa, _ := twoWebhooks(t)
	if oa != a {
		t.Skipf("webhook ids differ between databases (%d, %d)", oa, a)
	}
	if other := write(o, 0); other[a] == first[a] {
		t.Fatalf("two installations gave one event the same id %s", first[a])
	}
}

// The change feed's writes commit without waiting for the disk, so that
// their deliveries are sent one flush sooner; Sync makes them durable. A
// PostgreSQL crash before a Sync forgets a write, and its replay stores the
// same deliveries again under the same ids.
func TestForgottenWriteComesBackUnderTheSameIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server of its own")
	}
	ctx := context.Background()
	// A durable server whose WAL writer flushes asynchronous commits only
	// after 10 s, and no full-page images to fill a WAL page sooner: a
	// write that did not wait for the disk is still in PostgreSQL's own
	// buffers when it crashes.
	srv, err := pgtest.Start(ctx, pgtest.Options{Durable: true, Settings: []string{
		"wal_writer_delay = 10s", "full_page_writes = off", "synchronous_commit = on"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	db, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL(db)
	s := openTestStore(t, url)
	s.addWebhook(t, "http://a.example/hook", "", "")
	s.readySlot(t)
	crash := func() {
		t.Helper()
		if err := srv.Restart(ctx, "immediate"); err != nil {
			t.Fatal(err)
		}
		s.pool.Reset()
		s.hot.Reset()
	}
	committed := time.Now()
	write := func(lsn event.LSN) uuid.UUID {
		t.Helper()
		ev := events(lsn, 1)
		ev[0].CommitTime = committed // as the feed gives it again
		_, leased, err := s.WriteCommit(ctx, "s", Batch{Events: ev, Lease: WriteLease{Owner: "me", Limit: 10, Room: 10, Lease: time.Minute}}, s.at(t), lsn+1)
		if err != nil || len(leased.Ready) != 1 {
			t.Fatalf("write at %s: %v %v", lsn, leased, err)
		}
		return leased.Ready[0].ID
	}
	position := func() event.LSN {
		t.Helper()
		var lsn event.LSN
		err := retry(func() (err error) { lsn, _, err = s.Position(ctx, "s"); return err })
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}

	// Written, then synced: it survives the crash.
	kept := write(10)
	if err := s.Sync(ctx, "s", 11); err != nil {
		t.Fatal(err)
	}
	crash()
	if lsn := position(); lsn != 11 {
		t.Fatalf("after a crash that followed Sync, the position is %s, want 11", lsn)
	}
	if _, err := s.DeliveryByID(ctx, kept); err != nil {
		t.Fatalf("synced delivery %s lost in the crash: %v", kept, err)
	}

	// Written, not synced: the crash forgets it, position and all.
	sent := write(20)
	crash()
	if lsn := position(); lsn != 11 {
		t.Fatalf("after a crash before Sync, the position is %s, want 11 (the write was durable at once)", lsn)
	}
	if _, err := s.DeliveryByID(ctx, sent); !errors.Is(err, ErrNotFound) {
		t.Fatalf("forgotten delivery %s: %v, want ErrNotFound", sent, err)
	}
	// A writer that goes on from what it stored notices, whatever it does
	// next: nothing is made durable or stored past the forgotten write.
	if err := s.Sync(ctx, "s", 21); !errors.Is(err, ErrPositionMoved) {
		t.Fatalf("sync after a forgotten write: %v, want ErrPositionMoved", err)
	}
	if err := s.SaveIdle(ctx, "s", 21, 30); !errors.Is(err, ErrPositionMoved) {
		t.Fatalf("idle position after a forgotten write: %v, want ErrPositionMoved", err)
	}
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(30, 1)}, 21, 31); !errors.Is(err, ErrPositionMoved) {
		t.Fatalf("write after a forgotten write: %v, want ErrPositionMoved", err)
	}
	if lsn := position(); lsn != 11 {
		t.Fatalf("the refused calls moved the position to %s", lsn)
	}
	// The feed streams the transaction again: same event, same id.
	if again := write(20); again != sent {
		t.Fatalf("replayed write stored delivery %s, first sent as %s", again, sent)
	}
}

// retry runs f until it succeeds or 30 s pass, for the moments after a
// restart when the pool's connections are still being replaced.
func retry(f func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
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
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(5, 1)}, s.at(t), 6); err != nil {
		t.Fatal(err)
	}

	// Six events, two webhooks: twelve deliveries. One of each webhook
	// leased with its payload; a may hold 2 more, b the default 4 (5 in
	// all less its room); 5 held at most in all.
	req := WriteLease{Owner: "me", Limit: 10, Lease: time.Minute, Room: 1,
		HeldLimit: 5, Hold: 4, Webhooks: map[int64]WebhookLease{a: {Room: 1, Hold: 2}}}
	before := time.Now()
	created, leased, err := s.WriteCommit(ctx, "s", Batch{Events: events(10, 6), Lease: req}, s.at(t), 11)
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

// An event that no webhook takes is not stored: not one of a type nobody
// subscribes to, not one of a company without webhooks, not one committed
// before the only subscriber existed; the others in the same write are
// stored and fanned out as usual.
func TestEventsWithoutSubscribersAreNotStored(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	hook := s.addWebhook(t, "http://a.example/hook", "", "")
	s.readySlot(t)
	now := time.Now()
	ev := func(seq int, typ string, company int64, at time.Time) event.Event {
		return event.Event{Type: typ, CompanyID: company, CommitLSN: 10, Seq: seq, CommitTime: at,
			Table: "tasks", Op: event.Update, Body: []byte(`{}`)}
	}
	created, _, err := s.WriteCommit(ctx, "s", Batch{Events: []event.Event{
		ev(0, "task.created", 1, now),                    // nobody takes the type
		ev(1, "task.completed", 1, now),                  // the webhook takes it
		ev(2, "task.completed", 2, now),                  // a company without webhooks
		ev(3, "task.completed", 1, now.Add(-time.Hour)),  // committed before the webhook existed
		ev(4, "task.completed", 1, now.Add(time.Second)), // taken
	}}, 1, 11)
	if err != nil || created != 2 {
		t.Fatalf("write: %d deliveries, %v; want 2", created, err)
	}
	stored := func() []int {
		t.Helper()
		rows, err := s.pool.Query(ctx, s.q(`SELECT seq FROM {{schema}}.events ORDER BY commit_lsn, seq`))
		if err != nil {
			t.Fatal(err)
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	if got := stored(); !slices.Equal(got, []int{1, 4}) {
		t.Fatalf("stored events %v, want seq 1 and 4", got)
	}

	// Once the webhook takes the type, the next such event is stored.
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET events = '{task.completed,task.created}' WHERE id = $1`), hook); err != nil {
		t.Fatal(err)
	}
	next := ev(0, "task.created", 1, time.Now())
	next.CommitLSN = 20
	if created, _, err := s.WriteCommit(ctx, "s", Batch{Events: []event.Event{next}}, 11, 21); err != nil || created != 1 {
		t.Fatalf("write after subscribing: %d deliveries, %v; want 1", created, err)
	}
	if got := stored(); !slices.Equal(got, []int{1, 4, 0}) {
		t.Fatalf("stored events %v, want seq 1, 4 and then 0", got)
	}
}

// A stop (a cancelled context) that comes while a write's commit is on its
// way must not leave the writer not knowing the outcome: deliveries the
// commit leased to it would stay claimed, by a sender that never heard of
// them, until their leases expire (a graceful stop left deliveries claimed
// this way). Either the write reports success with its leases, or nothing
// was stored. A proxy that holds the server's answers back opens the
// window: the server has committed, the stop comes before the client reads
// that it did.
func TestStopDuringCommit(t *testing.T) {
	// How long the proxy holds each answer back.
	const delay = 400 * time.Millisecond
	for _, tc := range []struct {
		name string
		// stopAt is when the stop comes after the proxy starts holding
		// answers back: while the commit's answer is held, after the
		// server committed.
		stopAt time.Duration
		write  func(ctx, stopCtx context.Context, s *Store, slow func(), req WriteLease, from event.LSN) (Leased, error)
	}{
		{"WriteCommit", delay / 2, func(ctx, stopCtx context.Context, s *Store, slow func(), req WriteLease, from event.LSN) (Leased, error) {
			slow()
			_, leased, err := s.WriteCommit(stopCtx, "s", Batch{Events: events(from+9, 2), Lease: req}, from, from+10)
			return leased, err
		}},
		// The checkpoint's update, then the commit.
		{"Writer.Commit", delay * 3 / 2, func(ctx, stopCtx context.Context, s *Store, slow func(), req WriteLease, from event.LSN) (Leased, error) {
			w, err := s.BeginWrite(ctx, "s")
			if err != nil {
				return Leased{}, err
			}
			_, leased, err := w.Write(ctx, Batch{Events: events(from+9, 2), Lease: req})
			if err != nil {
				w.Rollback(ctx)
				return Leased{}, err
			}
			slow()
			return leased, w.Commit(stopCtx, from, from+10)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := pgtest.NewDatabase(t)
			p := newSlowProxy(t, url)
			s := openTestStore(t, p.url)
			s.addWebhook(t, "http://a.example/hook", "", "")
			s.addWebhook(t, "http://b.example/hook", "", "")
			s.readySlot(t)
			bg := context.Background()
			stopCtx, stop := context.WithCancel(bg)
			defer stop()
			slow := func() {
				p.delay.Store(int64(delay))
				time.AfterFunc(tc.stopAt, stop)
			}
			// Once at full speed, so that the statements are prepared and
			// the installation's key is read: the slow write is then the
			// round trips counted in stopAt.
			if _, err := tc.write(bg, bg, s, func() {}, WriteLease{}, 1); err != nil {
				t.Fatal(err)
			}
			leased, err := tc.write(bg, stopCtx, s, slow, WriteLease{Owner: "me", Limit: 10, Room: 10, Lease: time.Minute}, 11)
			p.delay.Store(0)
			if stopCtx.Err() == nil {
				t.Fatal("the write ended before the stop came: the test missed its window")
			}
			// Look on a connection of its own, once the server has
			// finished what it was sent.
			check := openTestStore(t, url)
			var held int
			for deadline := time.Now().Add(10 * time.Second); ; {
				var busy int
				if err := check.pool.QueryRow(bg, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'`).Scan(&busy); err != nil {
					t.Fatal(err)
				}
				if busy == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the write's session is still busy after 10s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := check.pool.QueryRow(bg, check.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE lease_owner = 'me'`)).Scan(&held); err != nil {
				t.Fatal(err)
			}
			switch {
			case err != nil && held > 0:
				t.Fatalf("the write reported %q, yet %d deliveries are stored leased to its sender, which will never send them", err, held)
			case err == nil && held != leased.Len():
				t.Fatalf("the write reported %d leased deliveries; the store holds %d", leased.Len(), held)
			case err == nil && held == 0:
				t.Fatal("the write leased nothing")
			}
		})
	}
}

// slowProxy forwards TCP connections to a PostgreSQL server, holding the
// server's answers back by delay.
type slowProxy struct {
	url   string
	delay atomic.Int64 // nanoseconds
}

func newSlowProxy(t *testing.T, dbURL string) *slowProxy {
	t.Helper()
	u, err := neturl.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u.Host = ln.Addr().String()
	p := &slowProxy{url: u.String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *slowProxy) serve(c net.Conn, target string) {
	defer c.Close()
	srv, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer srv.Close()
	go func() {
		io.Copy(srv, c)
		srv.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := srv.Read(buf)
		if n > 0 {
			time.Sleep(time.Duration(p.delay.Load()))
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
