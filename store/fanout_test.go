package store

import (
	"context"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
)

// DeliveryID computes in Go the id the SQL function delivery_id gives,
// for any key, place in the feed, webhook and commit time; and the ids a
// write stores are those DeliveryID gives with the key DeliveryKey returns.
func TestDeliveryID(t *testing.T) {
	s, a, b := twoWebhooks(t)
	ctx := context.Background()
	sqlID := func(key []byte, slot string, lsn event.LSN, seq int, webhook int64, at time.Time) uuid.UUID {
		t.Helper()
		var id uuid.UUID
		// As the write passes them (queueEvents).
		if err := s.pool.QueryRow(ctx, s.q(`SELECT {{schema}}.delivery_id($1, $2, $3, $4, $5, $6)`),
			key, slot, int64(lsn), int32(seq), webhook, at).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	check := func(key []byte, slot string, lsn event.LSN, seq int, webhook int64, at time.Time) {
		t.Helper()
		if got, want := DeliveryID(key, slot, lsn, seq, webhook, at), sqlID(key, slot, lsn, seq, webhook, at); got != want {
			t.Fatalf("DeliveryID(%x, %q, %v, %d, %d, %v) = %v; delivery_id gives %v", key, slot, lsn, seq, webhook,
				at.Format(time.RFC3339Nano), got, want)
		}
	}

	times := []time.Time{
		time.Unix(0, 0),
		time.Unix(0, 999_999),             // sub-millisecond
		time.Unix(1_700_000_000, 999_999), // rounds down to the millisecond
		time.Unix(1_700_000_000, 123_456_789).In(time.FixedZone("UTC+13:45", 13*3600+45*60)),
		time.Unix(-1, 999_500_000),     // before the epoch, within the last second
		time.Unix(-86_400*365*40, 500), // 1930
		time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_000, time.UTC), // milliseconds beyond 48 bits
		time.Now(),
	}
	lsns := []event.LSN{0, 1, 0x16_B374D848, 1<<63 - 1, 1 << 63, math.MaxUint64}
	slots := []string{"s", "smtm_relay", "", "слот_ü_日本", "a slot with spaces and 'quotes'"}
	seqs := []int{0, 1, 255, 256, math.MaxInt32}
	hooks := []int64{1, 255, 1 << 40, math.MaxInt64}

	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		key := make([]byte, 32)
		if i%50 == 7 {
			key = make([]byte, r.IntN(40)) // any length, also none
		}
		for j := range key {
			key[j] = byte(r.Uint32())
		}
		at := times[i%len(times)]
		if i >= 2*len(times) {
			at = time.Unix(r.Int64N(4_000_000_000)-1_000_000_000, r.Int64N(1e9))
		}
		check(key, slots[i%len(slots)], lsns[i%len(lsns)]^event.LSN(r.Uint64()>>uint(r.IntN(64))),
			seqs[i%len(seqs)]+r.IntN(2), hooks[i%len(hooks)]-r.Int64N(2), at)
	}

	// The ids a write stores.
	key, err := s.DeliveryKey(ctx)
	if err != nil || len(key) != 32 {
		t.Fatalf("DeliveryKey = %x, %v", key, err)
	}
	key[0] ^= 0xff // a copy: the store's key is not changed through it
	if again, _ := s.DeliveryKey(ctx); again[0] == key[0] {
		t.Fatal("DeliveryKey returned the store's own slice")
	}
	key[0] ^= 0xff
	evs := events(0x16_B374D848, 3)
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: evs}, s.at(t), 0x16_B374D849); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, s.q(`SELECT d.id, d.webhook_id, e.seq FROM {{schema}}.deliveries d
		JOIN {{schema}}.events e ON e.id = d.event_id`))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var id uuid.UUID
		var webhook int64
		var seq int32
		if err := rows.Scan(&id, &webhook, &seq); err != nil {
			t.Fatal(err)
		}
		if want := DeliveryID(key, "s", evs[seq].CommitLSN, int(seq), webhook, evs[seq].CommitTime); id != want {
			t.Errorf("delivery of event %d to webhook %d stored as %v; DeliveryID gives %v", seq, webhook, id, want)
		}
		n++
	}
	if rows.Err() != nil || n != 6 {
		t.Fatalf("%d deliveries of webhooks %d and %d, want 6: %v", n, a, b, rows.Err())
	}
}

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

// LoadFanOut returns the active, undeleted webhooks by company, ordered by
// id, with their subscriptions, creation times, whether they are filtered
// and pauses that last beyond now, and the version of the same snapshot;
// Fill gives what a claim of a delivery of the webhook gets, the same
// endpoint claims share.
func TestLoadFanOut(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	s.UseSecrets(box(t, 1))

	empty, err := s.LoadFanOut(ctx)
	if err != nil || empty.Version != 1 || len(empty.ByCompany) != 0 {
		t.Fatalf("LoadFanOut with no webhook = %+v, %v; want version 1 and none", empty, err)
	}

	create := func(w Webhook) Webhook {
		t.Helper()
		w.Active = w.Active || w.Name != "inactive"
		h, err := s.CreateWebhook(ctx, "admin", w)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	full := create(Webhook{CompanyID: 1, Name: "full", URL: "http://full.example/hook", Events: []string{"task.completed", "task.assigned"},
		Secret: "full-secret-0123456789", Headers: map[string]string{"Authorization": "Bearer t0ken", "X-Team": "ops"},
		Format: FormatSlack, StandardWebhooks: true, Filter: "data.n == 1"})
	plain := create(Webhook{CompanyID: 1, Name: "plain", URL: "http://plain.example/hook", Events: []string{"task.completed"}})
	rotated := create(Webhook{CompanyID: 2, Name: "rotated", URL: "http://rotated.example/hook", Events: []string{"asset.updated"},
		Secret: "old-secret-0123456789", Format: FormatTeams})
	ended := create(Webhook{CompanyID: 2, Name: "ended", URL: "http://ended.example/hook", Events: []string{"asset.updated"},
		Secret: "old-secret-9876543210"})
	for _, id := range []int64{rotated.ID, ended.ID} {
		if _, err := s.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", AllCompanies, id, func(w *Webhook) error {
			w.Secret = "new-secret-0123456789"
			return nil
		}, SecretOverlap(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET previous_secret_until = now() - interval '1 second' WHERE id = $1`, ended.ID)
	paused := create(Webhook{CompanyID: 1, Name: "paused", URL: "http://paused.example/hook", Events: []string{"task.completed"}})
	resumed := create(Webhook{CompanyID: 3, Name: "resumed", URL: "http://resumed.example/hook", Events: []string{"task.completed"}})
	inactive := create(Webhook{CompanyID: 1, Name: "inactive", URL: "http://inactive.example/hook", Events: []string{"task.completed"}})
	deleted := create(Webhook{CompanyID: 1, Name: "deleted", URL: "http://deleted.example/hook", Events: []string{"task.completed"}})
	if err := s.DeleteWebhook(ctx, "admin", AllCompanies, deleted.ID); err != nil {
		t.Fatal(err)
	}

	// What claims of their deliveries get, before the pauses.
	claims := map[int64]Claimed{}
	for _, h := range []Webhook{full, plain, rotated, ended, paused, resumed} {
		claims[h.ID] = s.claimOne(t, h.ID)
	}
	if c := claims[full.ID]; c.URL != "http://full.example/hook" || c.Secret != "full-secret-0123456789" || c.Format != FormatSlack ||
		!c.StandardWebhooks || c.Headers["Authorization"] != "Bearer t0ken" || c.Headers["X-Team"] != "ops" {
		t.Fatalf("claim of the full webhook: %+v", c)
	}
	if c := claims[rotated.ID]; c.Secret != "new-secret-0123456789" || c.PreviousSecret != "old-secret-0123456789" || c.Format != FormatTeams {
		t.Fatalf("claim of the rotated webhook: %+v", c)
	}
	if c := claims[ended.ID]; c.Secret != "new-secret-0123456789" || c.PreviousSecret != "" {
		t.Fatalf("claim of the webhook whose rotation ended: %+v", c)
	}

	pausedUntil := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	s.mustExec(t, `INSERT INTO {{schema}}.webhook_pauses (webhook_id, until) VALUES ($1, $2), ($3, now() - interval '1 second')`,
		paused.ID, pausedUntil, resumed.ID)

	f, err := s.LoadFanOut(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.WebhooksVersion(ctx); f.Version != v || v <= 1 {
		t.Fatalf("LoadFanOut version %d, current %d", f.Version, v)
	}
	ids := map[int64][]int64{}
	for company, hooks := range f.ByCompany {
		for _, h := range hooks {
			if h.CompanyID != company {
				t.Errorf("webhook %d of company %d listed under %d", h.ID, h.CompanyID, company)
			}
			ids[company] = append(ids[company], h.ID)
		}
	}
	want := map[int64][]int64{1: {full.ID, plain.ID, paused.ID}, 2: {rotated.ID, ended.ID}, 3: {resumed.ID}}
	if !maps.EqualFunc(ids, want, slices.Equal) {
		t.Fatalf("webhooks by company %v; want %v (active, undeleted, by id)", ids, want)
	}
	byID := map[int64]FanOutWebhook{}
	for _, hooks := range f.ByCompany {
		for _, h := range hooks {
			byID[h.ID] = h
		}
	}
	for _, h := range []Webhook{full, plain, rotated, ended, paused, resumed} {
		got := byID[h.ID]
		if !slices.Equal(got.Events, h.Events) || !got.CreatedAt.Equal(h.CreatedAt) || got.CreatedAt.IsZero() ||
			got.Filtered != (h.Filter != "") {
			t.Errorf("webhook %s: %+v; want events %v, created %v, filtered %v", h.Name, got, h.Events, h.CreatedAt, h.Filter != "")
		}
		if wantPause := (h.ID == paused.ID); got.PausedUntil.IsZero() == wantPause ||
			(wantPause && !got.PausedUntil.Equal(pausedUntil)) {
			t.Errorf("webhook %s paused until %v", h.Name, got.PausedUntil)
		}

		var c Claimed
		if !f.Fill(h.ID, &c) {
			t.Fatalf("Fill(%s) = false", h.Name)
		}
		cl := claims[h.ID]
		if c.URL != cl.URL || c.Secret != cl.Secret || c.SecretError != cl.SecretError || !maps.Equal(c.Headers, cl.Headers) ||
			c.Format != cl.Format || c.PreviousSecret != cl.PreviousSecret || c.StandardWebhooks != cl.StandardWebhooks {
			t.Errorf("Fill(%s) = %+v; a claim gets %+v", h.Name, c, cl)
		}
		if c.URL != h.URL {
			t.Errorf("Fill(%s) URL %q", h.Name, c.URL)
		}
		// Read as claims read it: the endpoint claims made is the one
		// in use, not made again from other bytes.
		if f.endpoints[h.ID] != s.endpoints.m[h.ID] {
			t.Errorf("webhook %s: LoadFanOut made an endpoint of its own", h.Name)
		}
	}
	c := Claimed{URL: "untouched"}
	if f.Fill(inactive.ID, &c) || f.Fill(deleted.ID, &c) || f.Fill(-1, &c) || c.URL != "untouched" {
		t.Fatalf("Fill of a webhook not loaded: %+v", c)
	}
}
