package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newTestStore returns a migrated store on a fresh database.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	return openTestStore(t, pgtest.NewDatabase(t))
}

// openTestStore returns a migrated store on the database at url.
func openTestStore(t testing.TB, url string) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, url, "relay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Store) mustExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), s.q(sql), args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// addWebhook inserts an active webhook and returns its id.
func (s *Store) addWebhook(t testing.TB, url, secret string, headers string) int64 {
	t.Helper()
	var sec *string
	if secret != "" {
		sec = &secret
	}
	if headers == "" {
		headers = "{}"
	}
	var id int64
	err := s.pool.QueryRow(context.Background(), s.q(`INSERT INTO {{schema}}.webhooks
			(company_id, name, url, events, secret, headers)
		VALUES (1, 'hook-' || gen_random_uuid(), $1, '{task.completed}', $2, $3::jsonb) RETURNING id`),
		url, sec, headers).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// addDelivery inserts an event with body and a pending delivery of it to
// webhook, due now, and returns the delivery id.
func (s *Store) addDelivery(t testing.TB, webhook int64, body string) uuid.UUID {
	t.Helper()
	return s.addDeliveryAt(t, webhook, body, time.Now())
}

// idAt returns a time-ordered delivery id of time at (UUID version 7).
func idAt(at time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	ms := at.UnixMilli()
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}

// addDeliveryAt is addDelivery with an id of time at, as if the delivery
// had been stored then.
func (s *Store) addDeliveryAt(t testing.TB, webhook int64, body string, at time.Time) uuid.UUID {
	t.Helper()
	id := idAt(at)
	s.mustExec(t, `WITH e AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0,
			        'task.completed', 1, 'tasks', 'update', now(), $3::bytea)
			RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type)
		SELECT $1, e.id, $2, 1, 'task.completed' FROM e`, id, webhook, []byte(body))
	return id
}

func TestClaimDue(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://example.invalid/a", "s3cret", `{"Authorization": "Bearer x", "X-Num": "7"}`)
	id := s.addDelivery(t, wh, `{"event":"task.completed"}`)

	got, err := s.ClaimDue(ctx, "a", 10, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("claimed %d, want 1", len(got))
	}
	c := got[0]
	if c.ID != id || c.WebhookID != wh || c.Attempts != 0 || c.EventType != "task.completed" ||
		string(c.Body) != `{"event":"task.completed"}` || c.URL != "http://example.invalid/a" || c.Secret != "s3cret" ||
		c.Headers["Authorization"] != "Bearer x" || c.Headers["X-Num"] != "7" || c.CommittedAt.IsZero() || c.CreatedAt.IsZero() {
		t.Fatalf("claimed %+v", c)
	}
	if until := time.Until(c.LeaseUntil); until < 50*time.Second || until > 70*time.Second {
		t.Fatalf("lease until %v from now, want about a minute", until)
	}
	d, err := s.DeliveryByID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if d.LeaseOwner != "a" || d.Status != StatusPending {
		t.Fatalf("after claim: %+v", d)
	}
	// Held: nobody else gets it.
	if again, err := s.ClaimDue(ctx, "b", 10, time.Minute, nil); err != nil || len(again) != 0 {
		t.Fatalf("second claim: %v, %v", again, err)
	}
}

func TestClaimSkipsWhatIsNotDue(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	active := s.addWebhook(t, "http://a", "", "")
	inactive := s.addWebhook(t, "http://b", "", "")
	deleted := s.addWebhook(t, "http://c", "", "")
	excluded := s.addWebhook(t, "http://d", "", "")
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`, inactive)
	s.mustExec(t, `UPDATE {{schema}}.webhooks SET deleted_at = now() WHERE id = $1`, deleted)

	due := s.addDelivery(t, active, "{}")
	later := s.addDelivery(t, active, "{}")
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET next_attempt_at = now() + interval '1 hour' WHERE id = $1`, later)
	done := s.addDelivery(t, active, "{}")
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET status = 'delivered' WHERE id = $1`, done)
	leased := s.addDelivery(t, active, "{}")
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET lease_owner = 'x', lease_until = now() + interval '1 hour' WHERE id = $1`, leased)
	expired := s.addDelivery(t, active, "{}")
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET lease_owner = 'dead', lease_until = now() - interval '1 second',
		next_attempt_at = now() - interval '1 minute' WHERE id = $1`, expired)
	s.addDelivery(t, inactive, "{}")
	s.addDelivery(t, deleted, "{}")
	s.addDelivery(t, excluded, "{}")

	got, err := s.ClaimDue(ctx, "me", 100, time.Minute, []int64{excluded})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != expired || got[1].ID != due {
		t.Fatalf("claimed %v, want [%s %s] (oldest due first)", ids(got), expired, due)
	}
}

func ids(cs []Claimed) []uuid.UUID {
	var out []uuid.UUID
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestClaimPerWebhookCap(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	a := s.addWebhook(t, "http://a", "", "")
	b := s.addWebhook(t, "http://b", "", "")
	for range 10 {
		s.addDelivery(t, a, "{}")
	}
	for range 3 {
		s.addDelivery(t, b, "{}")
	}
	got, err := s.Claim(ctx, ClaimRequest{Owner: "me", Limit: 10, Lease: time.Minute, PerWebhook: 2, Busy: map[int64]int{a: 1}})
	if err != nil {
		t.Fatal(err)
	}
	per := map[int64]int{}
	for _, c := range got {
		per[c.WebhookID]++
	}
	if per[a] != 1 || per[b] != 2 {
		t.Fatalf("claimed per webhook %v, want a:1 b:2", per)
	}
}

func TestConcurrentClaimsDoNotOverlap(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	const n = 300
	for i := range n {
		wh := s.addWebhook(t, fmt.Sprintf("http://h%d", i%7), "", "")
		s.addDelivery(t, wh, "{}")
	}
	var mu sync.Mutex
	seen := map[uuid.UUID]string{}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			owner := fmt.Sprintf("owner-%d", w)
			for {
				got, err := s.ClaimDue(ctx, owner, 7, time.Minute, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					if prev, ok := seen[c.ID]; ok {
						t.Errorf("delivery %s claimed by %s and %s", c.ID, prev, owner)
					}
					seen[c.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d deliveries, want %d", len(seen), n)
	}
}

func TestRecordAttempts(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	ok := s.addDelivery(t, wh, "{}")
	retry := s.addDelivery(t, wh, "{}")
	fail := s.addDelivery(t, wh, "{}")
	if _, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lost, err := s.RecordAttempts(ctx, "me", []AttemptResult{
		{DeliveryID: ok, Attempt: 1, StartedAt: start, Duration: 12 * time.Millisecond, StatusCode: 200, Snippet: "ok\x00\xff", Status: StatusDelivered},
		{DeliveryID: retry, Attempt: 1, StartedAt: start, Duration: time.Millisecond, StatusCode: 503, Error: "HTTP 503", Status: StatusRetrying, RetryIn: time.Hour},
		{DeliveryID: fail, Attempt: 1, StartedAt: start, Error: "connect: connection refused", Status: StatusFailed},
	})
	if err != nil || len(lost) != 0 {
		t.Fatalf("record: lost %v, err %v", lost, err)
	}

	d, _ := s.DeliveryByID(ctx, ok)
	if d.Status != StatusDelivered || d.Attempts != 1 || d.LastStatusCode != 200 || d.LastError != "" ||
		d.LeaseOwner != "" || !d.LeaseUntil.IsZero() || d.FinishedAt.IsZero() {
		t.Fatalf("delivered: %+v", d)
	}
	d, _ = s.DeliveryByID(ctx, retry)
	if d.Status != StatusRetrying || d.Attempts != 1 || d.LastStatusCode != 503 || d.LastError != "HTTP 503" ||
		d.LeaseOwner != "" || !d.FinishedAt.IsZero() || time.Until(d.NextAttemptAt) < 59*time.Minute {
		t.Fatalf("retrying: %+v", d)
	}
	d, _ = s.DeliveryByID(ctx, fail)
	if d.Status != StatusFailed || d.LastStatusCode != 0 || d.LastError != "connect: connection refused" || d.FinishedAt.IsZero() {
		t.Fatalf("failed: %+v", d)
	}
	as, err := s.Attempts(ctx, ok)
	if err != nil || len(as) != 1 {
		t.Fatalf("attempts: %v %v", as, err)
	}
	if a := as[0]; a.Attempt != 1 || a.StatusCode != 200 || a.Snippet != "ok\uFFFD" || a.WebhookID != wh ||
		a.Duration != 12*time.Millisecond || !a.StartedAt.Equal(start.Truncate(time.Microsecond)) || a.SentBy != "me" {
		t.Fatalf("attempt: %+v", a)
	}

	// Recording the same attempt again is refused: the lease is gone.
	err = s.RecordAttempt(ctx, "me", AttemptResult{DeliveryID: ok, Attempt: 1, StartedAt: start, Status: StatusDelivered})
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second record: %v, want ErrLeaseLost", err)
	}
	if as, _ := s.Attempts(ctx, ok); len(as) != 1 {
		t.Fatalf("%d attempts after a refused record, want 1", len(as))
	}
}

// TestRecordAbortedAttempt: an attempt a shutdown cut short is recorded,
// with AbortedError, and changes nothing else: the delivery keeps its
// status, its last answer and its due time, is free for any sender, and
// the retry schedule and the success rates do not count the attempt.
func TestRecordAbortedAttempt(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	fresh := s.addDelivery(t, wh, "{}")
	again := s.addDelivery(t, wh, "{}")
	if _, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if lost, err := s.RecordAttempts(ctx, "me", []AttemptResult{
		{DeliveryID: again, Attempt: 1, StartedAt: start, StatusCode: 503, Error: "HTTP 503", Status: StatusRetrying},
	}); err != nil || len(lost) != 0 {
		t.Fatalf("record: lost %v, err %v", lost, err)
	}
	if got, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil || len(got) != 1 || got[0].ID != again {
		t.Fatalf("claim again: %v %v", got, err)
	}
	lost, err := s.RecordAttempts(ctx, "me", []AttemptResult{
		{DeliveryID: fresh, Attempt: 1, StartedAt: start, Duration: time.Second, Aborted: true},
		{DeliveryID: again, Attempt: 2, StartedAt: start, Duration: time.Second, Aborted: true, Error: "ignored"},
	})
	if err != nil || len(lost) != 0 {
		t.Fatalf("record aborted: lost %v, err %v", lost, err)
	}
	for id, want := range map[uuid.UUID]Delivery{
		fresh: {Status: StatusPending, Attempts: 1, RetryBase: 1},
		again: {Status: StatusRetrying, Attempts: 2, RetryBase: 1, LastStatusCode: 503, LastError: "HTTP 503"},
	} {
		d, _ := s.DeliveryByID(ctx, id)
		if d.Status != want.Status || d.Attempts != want.Attempts || d.RetryBase != want.RetryBase || d.LastStatusCode != want.LastStatusCode ||
			d.LastError != want.LastError || d.LeaseOwner != "" || !d.FinishedAt.IsZero() || d.NextAttemptAt.After(time.Now()) {
			t.Errorf("after an aborted attempt: %+v, want %+v, due, free", d, want)
		}
		as, _ := s.Attempts(ctx, id)
		if a := as[len(as)-1]; a.Attempt != want.Attempts || a.Error != AbortedError || a.StatusCode != 0 || a.SentBy != "me" {
			t.Errorf("aborted attempt recorded as %+v", a)
		}
	}
	if got, err := s.ClaimDue(ctx, "other", 10, time.Minute, nil); err != nil || len(got) != 2 {
		t.Fatalf("another sender claims %d deliveries (%v), want both", len(got), err)
	}
	rates, err := s.SuccessRates(ctx, time.Hour)
	if err != nil || len(rates) != 1 || rates[0].Attempts != 1 {
		t.Errorf("success rates %+v (%v): want 1 attempt counted, the aborted ones left out", rates, err)
	}
	hooks, err := s.ListWebhooks(ctx, AllCompanies)
	if err != nil || len(hooks) != 1 || hooks[0].Attempts24h != 1 || hooks[0].LastFiredAt.IsZero() {
		t.Errorf("webhook stats %+v (%v): want 1 attempt counted in 24 h", hooks, err)
	}
}

func TestRecordAfterLeaseLost(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	id := s.addDelivery(t, wh, "{}")
	kept := s.addDelivery(t, wh, "{}")
	if got, err := s.ClaimDue(ctx, "slow", 10, time.Millisecond, nil); err != nil || len(got) != 2 {
		t.Fatalf("claim: %v %v", got, err)
	}
	time.Sleep(5 * time.Millisecond)
	// The lease expired; another sender takes one delivery over.
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET lease_owner = 'fast', lease_until = now() + interval '1 minute' WHERE id = $1`, id)
	lost, err := s.RecordAttempts(ctx, "slow", []AttemptResult{
		{DeliveryID: id, Attempt: 1, StartedAt: time.Now(), Status: StatusDelivered, StatusCode: 200},
		{DeliveryID: kept, Attempt: 1, StartedAt: time.Now(), Status: StatusDelivered, StatusCode: 200},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 1 || lost[0] != id {
		t.Fatalf("lost %v, want [%s]", lost, id)
	}
	if as, _ := s.Attempts(ctx, id); len(as) != 0 {
		t.Fatalf("attempt recorded for a lost lease: %+v", as)
	}
	if d, _ := s.DeliveryByID(ctx, kept); d.Status != StatusDelivered {
		t.Fatalf("kept delivery: %+v", d)
	}
	// A wrong attempt number is refused too.
	err = s.RecordAttempt(ctx, "fast", AttemptResult{DeliveryID: id, Attempt: 2, StartedAt: time.Now(), Status: StatusDelivered})
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("wrong attempt number: %v", err)
	}
}

func TestRecordAttemptsRejectsBadInput(t *testing.T) {
	s := newTestStore(t)
	id := uuid.New()
	for _, batch := range [][]AttemptResult{
		{{DeliveryID: id, Attempt: 1, Status: StatusDelivered}, {DeliveryID: id, Attempt: 1, Status: StatusDelivered}},
		{{DeliveryID: id, Attempt: 1, Status: StatusPending}},
		{{DeliveryID: id, Attempt: 0, Status: StatusFailed}},
	} {
		if _, err := s.RecordAttempts(context.Background(), "me", batch); err == nil {
			t.Errorf("batch %+v accepted", batch)
		}
	}
}

func TestReleaseClaims(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	id := s.addDelivery(t, wh, "{}")
	if _, err := s.ClaimDue(ctx, "me", 10, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	// Another owner cannot release it.
	if err := s.ReleaseClaims(ctx, "other", []uuid.UUID{id}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimDue(ctx, "other", 10, time.Hour, nil); len(got) != 0 {
		t.Fatal("claimed a delivery released by a non-owner")
	}
	if err := s.ReleaseClaims(ctx, "me", []uuid.UUID{id}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.DeliveryByID(ctx, id)
	if d.LeaseOwner != "" || d.Attempts != 0 || d.Status != StatusPending {
		t.Fatalf("after release: %+v", d)
	}
	if got, _ := s.ClaimDue(ctx, "other", 10, time.Hour, nil); len(got) != 1 {
		t.Fatalf("released delivery not claimable: %v", got)
	}
}

func TestRefire(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	if err := s.Refire(ctx, uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refire unknown: %v", err)
	}
	wh := s.addWebhook(t, "http://a", "", "")
	id := s.addDelivery(t, wh, "{}")
	for n := 1; n <= 2; n++ {
		if got, err := s.ClaimDue(ctx, "me", 1, time.Minute, nil); err != nil || len(got) != 1 {
			t.Fatalf("claim %d: %v %v", n, got, err)
		}
		status := StatusRetrying
		if n == 2 {
			status = StatusFailed
		}
		if err := s.RecordAttempt(ctx, "me", AttemptResult{DeliveryID: id, Attempt: n, StartedAt: time.Now(), Error: "HTTP 500", StatusCode: 500, Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Refire(ctx, id); err != nil {
		t.Fatal(err)
	}
	d, _ := s.DeliveryByID(ctx, id)
	if d.Status != StatusPending || d.Attempts != 2 || d.RetryBase != 2 || !d.FinishedAt.IsZero() || time.Until(d.NextAttemptAt) > 0 {
		t.Fatalf("after refire: %+v", d)
	}
	got, err := s.ClaimDue(ctx, "me", 1, time.Minute, nil)
	if err != nil || len(got) != 1 || got[0].ID != id || got[0].Attempts != 2 || got[0].RetryBase != 2 {
		t.Fatalf("claim after refire: %+v %v", got, err)
	}
	if err := s.RecordAttempt(ctx, "me", AttemptResult{DeliveryID: id, Attempt: 3, StartedAt: time.Now(), StatusCode: 200, Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	as, _ := s.Attempts(ctx, id)
	if len(as) != 3 || as[2].Attempt != 3 || as[2].StatusCode != 200 {
		t.Fatalf("attempts after refire: %+v", as)
	}
}

func TestPrune(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	finish := func(id uuid.UUID, status Status, ago string) {
		s.mustExec(t, `UPDATE {{schema}}.deliveries SET status = $2, finished_at = now() - $3::interval WHERE id = $1`, id, string(status), ago)
		s.mustExec(t, `INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms)
			VALUES ($1, $2, 1, now(), 1)`, id, wh)
	}
	ago := func(d time.Duration) time.Time { return time.Now().Add(-d - time.Minute) } // stored a minute before it finished
	oldDelivered := s.addDeliveryAt(t, wh, "{}", ago(48*time.Hour))
	finish(oldDelivered, StatusDelivered, "2 days")
	newDelivered := s.addDeliveryAt(t, wh, "{}", ago(time.Hour))
	finish(newDelivered, StatusDelivered, "1 hour")
	midFailed := s.addDeliveryAt(t, wh, "{}", ago(48*time.Hour)) // older than the delivered age, younger than the failed age
	finish(midFailed, StatusFailed, "2 days")
	oldFailed := s.addDeliveryAt(t, wh, "{}", ago(8*24*time.Hour))
	finish(oldFailed, StatusFailed, "8 days")
	// Stored long ago, re-fired and delivered again an hour ago: kept.
	refired := s.addDeliveryAt(t, wh, "{}", ago(30*24*time.Hour))
	finish(refired, StatusDelivered, "1 hour")
	pending := s.addDeliveryAt(t, wh, "{}", ago(30*24*time.Hour))
	s.mustExec(t, `UPDATE {{schema}}.events SET created_at = now() - interval '30 days'`)

	n, err := s.Prune(ctx, 24*time.Hour, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("pruned %d deliveries, want 2", n)
	}
	for id, want := range map[uuid.UUID]bool{oldDelivered: false, newDelivered: true, midFailed: true, oldFailed: false, refired: true, pending: true} {
		_, err := s.DeliveryByID(ctx, id)
		if exists := err == nil; exists != want {
			t.Errorf("delivery %s exists=%v, want %v (%v)", id, exists, want, err)
		}
	}
	var events, attempts int
	if err := s.pool.QueryRow(ctx, s.q(`SELECT (SELECT count(*) FROM {{schema}}.events), (SELECT count(*) FROM {{schema}}.attempts)`)).Scan(&events, &attempts); err != nil {
		t.Fatal(err)
	}
	if events != 4 || attempts != 3 {
		t.Fatalf("%d events, %d attempts left; want 4 and 3", events, attempts)
	}
}

// Random ids, stored before ids were time-ordered, are pruned too, and
// once none is left prune no longer looks for them.
func TestPruneRandomIDs(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	random := func() bool {
		var r bool
		if err := s.pool.QueryRow(ctx, s.q(`SELECT random_ids FROM {{schema}}.installation`)).Scan(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if random() {
		t.Fatal("a new installation looks for random ids")
	}
	var ids []uuid.UUID
	for range 3 {
		id := uuid.New()
		ids = append(ids, id)
		s.mustExec(t, `WITH e AS (
				INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
				VALUES ('old', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0, 'task.completed', 1, 'tasks', 'update',
				        now() - interval '3 days', '{}', now() - interval '3 days')
				RETURNING id)
			INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, status, finished_at)
			SELECT $1, e.id, $2, 1, 'task.completed', 'delivered', now() - interval '3 days' FROM e`, id, wh)
	}
	// What migration 0013 finds in a table with random ids.
	s.mustExec(t, `UPDATE {{schema}}.installation SET random_ids = true`)
	n, err := s.Prune(ctx, 24*time.Hour, 24*time.Hour)
	if err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want the 3 deliveries with random ids", n, err)
	}
	if random() {
		t.Fatal("prune still looks for random ids once none is left")
	}
}

func TestPruneInBatches(t *testing.T) {
	s := newTestStore(t)
	wh := s.addWebhook(t, "http://a", "", "")
	s.addFinished(t, wh, pruneBatch*2+17, StatusDelivered, 48*time.Hour)
	n, err := s.Prune(context.Background(), time.Hour, time.Hour)
	if err != nil || n != pruneBatch*2+17 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	var events int
	s.pool.QueryRow(context.Background(), s.q(`SELECT count(*) FROM {{schema}}.events`)).Scan(&events)
	if events != 0 {
		t.Fatalf("%d events left", events)
	}
}

// BenchmarkClaimAndRecord claims batches of 500 due deliveries and records
// an attempt for each, all retrying at once, so the same rows cycle.
func BenchmarkClaimAndRecord(b *testing.B) {
	const batch = 500
	s := newTestStore(b)
	ctx := context.Background()
	hooks := make([]int64, 20)
	for i := range hooks {
		hooks[i] = s.addWebhook(b, fmt.Sprintf("http://h%d", i), "", "")
	}
	s.mustExec(b, `WITH e AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			SELECT 'bench', g, 0, 'task.completed', 1, 'tasks', 'update', now(), convert_to(repeat('x', 512), 'UTF8')
			FROM generate_series(1, $2::int) g RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type)
		SELECT gen_random_uuid(), e.id, ($1::bigint[])[1 + e.id % 20], 1, 'task.completed' FROM e`,
		hooks, batch)
	results := make([]AttemptResult, 0, batch)
	for b.Loop() {
		got, err := s.ClaimDue(ctx, "bench", batch, time.Minute, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != batch {
			b.Fatalf("claimed %d, want %d", len(got), batch)
		}
		results = results[:0]
		for _, c := range got {
			results = append(results, AttemptResult{DeliveryID: c.ID, Attempt: c.Attempts + 1, StartedAt: time.Now(),
				Duration: time.Millisecond, StatusCode: 503, Error: "HTTP 503", Status: StatusRetrying})
		}
		lost, err := s.RecordAttempts(ctx, "bench", results)
		if err != nil || len(lost) != 0 {
			b.Fatalf("record: lost %d, %v", len(lost), err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "attempts/s")
}

// BenchmarkLoadHeld reads held deliveries by id, ready to send: what a
// relay does instead of a claim for the deliveries it leased as it stored
// them (no lock, no write).
func BenchmarkLoadHeld(b *testing.B) {
	const batch = 500
	s := newTestStore(b)
	ctx := context.Background()
	wh := s.addWebhook(b, "http://h", "bench-secret-0123456789", "")
	s.mustExec(b, `WITH e AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			SELECT 'bench', g, 0, 'task.completed', 1, 'tasks', 'update', now(), convert_to(repeat('x', 512), 'UTF8')
			FROM generate_series(1, $2::int) g RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
		SELECT {{schema}}.uuid_v7(), e.id, $1, 1, 'task.completed', 'bench', now() + interval '1 hour' FROM e`,
		wh, batch)
	rows, err := s.pool.Query(ctx, s.q(`SELECT id FROM {{schema}}.deliveries`))
	if err != nil {
		b.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		got, err := s.LoadHeld(ctx, "bench", ids, time.Minute)
		if err != nil || len(got) != batch {
			b.Fatalf("loaded %d of %d: %v", len(got), batch, err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "deliveries/s")
}

func TestMigrateIsIdempotent(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		st, err := Open(ctx, url, "relay")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migration run %d: %v", i+1, err)
		}
		st.Close()
	}
}

// Recording attempts finds its deliveries by primary key whatever the
// planner believes about the due deliveries: a plan through the due
// deliveries' index compares each of them with every result, and its cost
// grows with the backlog (seen with statistics taken while the table was
// nearly empty).
// planTx is a transaction in which a hot statement is prepared as the
// store runs it (on a hot connection, hotParams: a generic plan, made once per
// connection, as a relay that starts on an empty table makes it, and kept
// while the table grows), for its plans to be checked.
type planTx struct {
	t  *testing.T
	tx pgx.Tx
}

func (s *Store) preparePlan(t *testing.T, sql string) planTx {
	t.Helper()
	ctx := context.Background()
	tx, err := s.hot.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, "PREPARE hot AS "+s.q(sql)); err != nil {
		t.Fatal(err)
	}
	return planTx{t: t, tx: tx}
}

// exec runs sql in the transaction.
func (p planTx) exec(sql string, args ...any) {
	p.t.Helper()
	if _, err := p.tx.Exec(context.Background(), sql, args...); err != nil {
		p.t.Fatal(err)
	}
}

// explain returns the plan of EXECUTE hot(args), args written out as SQL
// (EXECUTE takes no bind parameters).
func (p planTx) explain(args string) string {
	p.t.Helper()
	rows, err := p.tx.Query(context.Background(), "EXPLAIN EXECUTE hot("+args+")", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		p.t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// grow adds a backlog of n deliveries of webhook wh, leased to owner until
// lease from now, to the plan's transaction.
func (s *Store) grow(p planTx, wh int64, n int, owner string, lease time.Duration) {
	p.t.Helper()
	p.exec(s.q(`INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
		SELECT 'test', 1000, g, 'task.completed', 1, 'tasks', 'update', now(), '{}' FROM generate_series(1, $1::int) g`), n)
	p.exec(s.q(`INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
		SELECT {{schema}}.uuid_v7(), e.id, $1, 1, 'task.completed', NULLIF($2::text, ''), now() + $3::bigint * interval '1 microsecond'
		FROM {{schema}}.events e WHERE e.commit_lsn = 1000`), wh, owner, lease.Microseconds())
}

// Recording attempts finds each delivery by primary key and updates it by
// physical address, whatever plan the statistics suggest.
func TestRecordPlanUsesPrimaryKey(t *testing.T) {
	ctx := context.Background()
	// Statistics of a small table: few due deliveries.
	s, wh, ids := withDeliveries(t, 5)
	s.mustExec(t, `ANALYZE {{schema}}.deliveries`)
	p := s.preparePlan(t, recordSQL)
	explain := func(when string, ids []uuid.UUID) {
		t.Helper()
		idList := make([]string, len(ids))
		for i, id := range ids {
			idList[i] = id.String()
		}
		plan := p.explain(fmt.Sprintf(`'me', '{%s}', array_fill(1, ARRAY[%[2]d]),
			array_fill(now(), ARRAY[%[2]d]), array_fill(0::float8, ARRAY[%[2]d]), array_fill(200, ARRAY[%[2]d]),
			array_fill(''::text, ARRAY[%[2]d]), array_fill(''::text, ARRAY[%[2]d]), array_fill('delivered'::text, ARRAY[%[2]d]),
			array_fill(0::bigint, ARRAY[%[2]d])`, strings.Join(idList, ","), len(ids)))
		if !strings.Contains(plan, "deliveries_pkey") || !strings.Contains(plan, "Tid Scan on deliveries") ||
			strings.Contains(plan, "deliveries_due_by_webhook") || strings.Contains(plan, "Seq Scan on deliveries") {
			t.Fatalf("%s: recording attempts does not find deliveries by primary key:\n%s", when, plan)
		}
	}
	explain("generic plan on a small table", ids)

	// Then a backlog builds up.
	s.grow(p, wh, 30000, "me", time.Minute)
	rows, err := p.tx.Query(ctx, s.q(`SELECT id FROM {{schema}}.deliveries WHERE lease_owner = 'me' LIMIT 200`))
	if err != nil {
		t.Fatal(err)
	}
	ids, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	explain("generic plan on the grown table", ids)
	// A custom plan, from the small table's statistics.
	p.exec("SET LOCAL plan_cache_mode = force_custom_plan")
	explain("custom plan on the grown table", ids)
}

// smallTablePlan prepares sql as the store runs it (preparePlan) on a
// store with one webhook and five deliveries, with fresh statistics of
// that small table.
func smallTablePlan(t *testing.T, sql string) (*Store, int64, planTx) {
	t.Helper()
	s, wh, _ := withDeliveries(t, 5)
	s.mustExec(t, `ANALYZE {{schema}}.deliveries`)
	s.mustExec(t, `ANALYZE {{schema}}.events`)
	return s, wh, s.preparePlan(t, sql)
}

// A claim racing another sender for the oldest due deliveries takes the
// next ones instead, up to its limit.
func TestClaimTakesTheNextPastLockedOnes(t *testing.T) {
	ctx := context.Background()
	s, _, all := withDeliveries(t, 20)
	other, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, s.q(`SELECT 1 FROM {{schema}}.deliveries WHERE id = ANY($1) FOR UPDATE`), all[:5]); err != nil {
		t.Fatal(err)
	}
	got, err := s.Claim(ctx, ClaimRequest{Owner: "me", Limit: 5, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, c := range got {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, all[5:10]) {
		t.Fatalf("claimed %v, want the next five %v", ids, all[5:10])
	}
}

// A claim locks the rows it takes and no others: not the room of every
// webhook it looked at (each lock is a WAL record and dirties a page).
func TestClaimLocksOnlyWhatItTakes(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	for i := range 50 {
		wh := s.addWebhook(t, fmt.Sprintf("http://h%d.example", i), "", "")
		for range 20 {
			s.addDelivery(t, wh, "{}")
		}
	}
	got, err := s.Claim(ctx, ClaimRequest{Owner: "me", Limit: 10, Lease: time.Minute, PerWebhook: 16})
	if err != nil || len(got) != 10 {
		t.Fatalf("claimed %d, %v; want 10", len(got), err)
	}
	// A row locked and left keeps the claim's transaction in xmax.
	var lockedOnly int
	if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries
		WHERE lease_owner IS NULL AND xmax <> '0'`)).Scan(&lockedOnly); err != nil {
		t.Fatal(err)
	}
	if lockedOnly != 0 {
		t.Fatalf("the claim of 10 locked %d rows it did not take", lockedOnly)
	}
}

// A claim reads the due deliveries of each webhook from its index range,
// updates them by physical address and reads their events by primary key:
// no plan reads a whole table, however many deliveries the table holds.
// (A custom plan once joined the picked rows with all deliveries by
// hashing, for every claim.)
func TestClaimPlanReadsNoWholeTable(t *testing.T) {
	s, wh, p := smallTablePlan(t, claimSQL)
	explain := func(when string) {
		t.Helper()
		for _, limit := range []int{1, 32, 500} {
			plan := p.explain(fmt.Sprintf(`'me', %d, '{}', 60000000, 128, '{%d}', '{32}', '{"2100-01-01 00:00:00+00"}'`, limit, wh))
			if !strings.Contains(plan, "Tid Scan on deliveries") || !strings.Contains(plan, "deliveries_due_by_webhook") ||
				!strings.Contains(plan, "events_pkey") || strings.Contains(plan, "Seq Scan on deliveries") ||
				strings.Contains(plan, "Seq Scan on events") || strings.Contains(plan, "Hash Join") && strings.Contains(plan, "deliveries_pkey") {
				t.Fatalf("%s, limit %d: the claim reads a whole table:\n%s", when, limit, plan)
			}
		}
	}
	explain("generic plan on a small table")
	s.grow(p, wh, 30000, "", 0)
	p.exec(s.q(`ANALYZE {{schema}}.deliveries`))
	p.exec(s.q(`ANALYZE {{schema}}.events`))
	explain("generic plan on the grown table")
	p.exec("SET LOCAL plan_cache_mode = force_custom_plan")
	explain("custom plan on the grown table")
}

// Held deliveries load by primary key, with their events by primary key:
// no plan reads a whole table.
func TestLoadHeldPlanReadsNoWholeTable(t *testing.T) {
	s, wh, p := smallTablePlan(t, loadHeldSQL)
	explain := func(when string) {
		t.Helper()
		rows, err := p.tx.Query(context.Background(), s.q(`SELECT id::text FROM {{schema}}.deliveries LIMIT 500`))
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		plan := p.explain(`'me', '{` + strings.Join(ids, ",") + `}', 35000000`)
		if !strings.Contains(plan, "deliveries_pkey") || !strings.Contains(plan, "events_pkey") ||
			strings.Contains(plan, "Seq Scan on deliveries") || strings.Contains(plan, "Seq Scan on events") {
			t.Fatalf("%s: loading held deliveries reads a whole table:\n%s", when, plan)
		}
	}
	explain("generic plan on a small table")
	s.grow(p, wh, 30000, "me", time.Minute)
	p.exec(s.q(`ANALYZE {{schema}}.deliveries`))
	p.exec(s.q(`ANALYZE {{schema}}.events`))
	explain("generic plan on the grown table")
	p.exec("SET LOCAL plan_cache_mode = force_custom_plan")
	explain("custom plan on the grown table")
}

// A webhook's deliveries of every status come newest first, page after
// page, though each status is read from its own index range.
func TestWebhookDeliveriesAcrossStatuses(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	other := s.addWebhook(t, "http://b", "", "")
	statuses := []Status{StatusDelivered, StatusPending, StatusFailed, StatusRetrying, StatusDelivered, StatusFailed, StatusPending}
	var want []uuid.UUID // newest first
	for i, st := range statuses {
		id := s.addDelivery(t, wh, "{}")
		s.mustExec(t, `UPDATE {{schema}}.deliveries SET status = $2, created_at = now() - $3 * interval '1 minute' WHERE id = $1`, id, string(st), len(statuses)-i)
		want = append([]uuid.UUID{id}, want...)
	}
	s.addDelivery(t, other, "{}")
	var got []uuid.UUID
	f := DeliveryFilter{WebhookID: wh, Limit: 3}
	for range 5 {
		page, err := s.WebhookDeliveries(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			got = append(got, d.ID)
		}
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1]
		f.After = &DeliveryCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listing gave\n%v\nwant\n%v", got, want)
	}
	failed, err := s.WebhookDeliveries(ctx, DeliveryFilter{WebhookID: wh, Statuses: []Status{StatusFailed, StatusRetrying}, Limit: 10})
	if err != nil || len(failed) != 3 {
		t.Fatalf("failed and retrying: %d %v", len(failed), err)
	}
}

// Attempt records, given-back claims and the change feed's writes commit
// without waiting for the disk, and only they do: the setting ends with
// their own transaction, so the pooled connections they used commit claims
// and Sync durably afterwards.
func TestAsyncCommitStaysInItsTransaction(t *testing.T) {
	ctx := context.Background()
	// The tests' server commits asynchronously by default; these sessions
	// start with it on, as in production.
	url := pgtest.NewDatabase(t)
	if strings.Contains(url, "?") {
		url += "&synchronous_commit=on"
	} else {
		url += "?synchronous_commit=on"
	}
	s := openTestStore(t, url)
	wh := s.addWebhook(t, "http://a", "", "")
	sent, given := s.addDelivery(t, wh, "{}"), s.addDelivery(t, wh, "{}")
	if got, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil || len(got) != 2 {
		t.Fatalf("claim: %d, %v", len(got), err)
	}
	if lost, err := s.RecordAttempts(ctx, "me", []AttemptResult{{DeliveryID: sent, Attempt: 1, StartedAt: time.Now(),
		StatusCode: 200, Status: StatusDelivered}}); err != nil || len(lost) != 0 {
		t.Fatalf("record: lost %v, %v", lost, err)
	}
	if err := s.ReleaseClaims(ctx, "me", []uuid.UUID{given}); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.DeliveryByID(ctx, given); d.LeaseOwner != "" {
		t.Fatalf("released delivery still leased: %+v", d)
	}
	s.readySlot(t)
	if _, _, err := s.WriteCommit(ctx, "s", Batch{Events: events(5, 1)}, s.at(t), 6); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WritePart(ctx, "s", 8, Part{Changes: 1, NextSeq: 1}, Batch{Events: events(8, 1)}); err != nil {
		t.Fatal(err)
	}
	w, err := s.BeginWrite(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Write(ctx, Batch{Events: events(9, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, s.at(t), 10); err != nil {
		t.Fatal(err)
	}
	conns := s.pool.AcquireAllIdle(ctx)
	if len(conns) == 0 {
		t.Fatal("no idle connection to check")
	}
	for _, c := range conns {
		var setting string
		err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting)
		c.Release()
		if err != nil || setting != "on" {
			t.Fatalf("synchronous_commit on a pooled connection after the async commits: %q, %v", setting, err)
		}
	}
	for _, c := range s.pool.AcquireAllIdle(ctx) {
		var seqscan, planMode string
		err := c.QueryRow(ctx, `SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')`).Scan(&seqscan, &planMode)
		c.Release()
		if err != nil || seqscan != "on" || planMode != "auto" {
			t.Fatalf("the hot statements' settings reached a pooled connection: enable_seqscan %q, plan_cache_mode %q, %v", seqscan, planMode, err)
		}
	}
}

// The deliveries of one event to several webhooks claimed together share
// one copy of its payload.
func TestClaimSharesAnEventsPayload(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	hooks := []int64{s.addWebhook(t, "http://a", "", ""), s.addWebhook(t, "http://b", "", ""), s.addWebhook(t, "http://c", "", "")}
	s.mustExec(t, `WITH e AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', 1, 0, 'task.completed', 1, 'tasks', 'update', now(), '{"task_id":1}')
			RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type)
		SELECT gen_random_uuid(), e.id, h, 1, 'task.completed' FROM e, unnest($1::bigint[]) h`, hooks)
	s.addDelivery(t, hooks[0], `{"task_id":2}`)
	got, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil)
	if err != nil || len(got) != 4 {
		t.Fatalf("claim: %d, %v", len(got), err)
	}
	byEvent := map[int64][]*Claimed{}
	for i := range got {
		byEvent[got[i].EventID] = append(byEvent[got[i].EventID], &got[i])
	}
	for _, cs := range byEvent {
		for _, c := range cs[1:] {
			if string(c.Body) != string(cs[0].Body) || &c.Body[0] != &cs[0].Body[0] {
				t.Fatalf("deliveries of event %d do not share its payload: %q, %q", c.EventID, c.Body, cs[0].Body)
			}
		}
	}
	if len(byEvent) != 2 {
		t.Fatalf("%d events, want 2", len(byEvent))
	}
	var shared, other []byte
	for _, cs := range byEvent {
		if len(cs) == 3 {
			shared = cs[0].Body
		} else {
			other = cs[0].Body
		}
	}
	if string(shared) != `{"task_id":1}` || string(other) != `{"task_id":2}` || &shared[0] == &other[0] {
		t.Fatalf("payloads %q and %q", shared, other)
	}
}

// TestClaimSeesAnEditedWebhook checks that the cache of webhook endpoints
// never outlives an edit: the next claim after a change of URL, secret or
// headers sends with the new ones, and deliveries of an unchanged webhook
// share one endpoint.
func TestClaimSeesAnEditedWebhook(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://example.invalid/a", "one", `{"X-A": "1"}`)
	claim := func() []Claimed {
		t.Helper()
		got, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	s.addDelivery(t, wh, `{}`)
	s.addDelivery(t, wh, `{}`)
	first := claim()
	if len(first) != 2 || first[0].URL != "http://example.invalid/a" || first[0].Secret != "one" || first[0].Headers["X-A"] != "1" {
		t.Fatalf("first claim: %+v", first)
	}
	if fmt.Sprintf("%p", first[0].Headers) != fmt.Sprintf("%p", first[1].Headers) {
		t.Fatal("deliveries of one webhook decode its headers apart")
	}
	for _, edit := range []struct {
		sql, url, secret, header string
	}{
		{"UPDATE {{schema}}.webhooks SET url = 'http://example.invalid/b'", "http://example.invalid/b", "one", "1"},
		{"UPDATE {{schema}}.webhooks SET secret = 'two'", "http://example.invalid/b", "two", "1"},
		{`UPDATE {{schema}}.webhooks SET headers = '{"X-A": "2"}'`, "http://example.invalid/b", "two", "2"},
		{"UPDATE {{schema}}.webhooks SET secret = NULL", "http://example.invalid/b", "", "2"},
	} {
		s.mustExec(t, edit.sql)
		s.addDelivery(t, wh, `{}`)
		got := claim()
		if len(got) != 1 || got[0].URL != edit.url || got[0].Secret != edit.secret || got[0].Headers["X-A"] != edit.header {
			t.Fatalf("after %s: %+v", edit.sql, got)
		}
	}
}

// The counts of pending, retrying and failed deliveries, and their plan on
// a table of many delivered ones: no scan of the whole table.
func TestCountDeliveries(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	a := s.addWebhook(t, "http://a", "", "")
	b := s.addWebhook(t, "http://b", "", "")
	for i, st := range []Status{StatusPending, StatusPending, StatusRetrying, StatusFailed, StatusFailed, StatusFailed, StatusDelivered} {
		id := s.addDelivery(t, []int64{a, b}[i%2], "{}")
		s.mustExec(t, `UPDATE {{schema}}.deliveries SET status = $2 WHERE id = $1`, id, string(st))
	}
	c, err := s.CountDeliveries(ctx)
	if err != nil || c != (DeliveryCounts{Pending: 2, Retrying: 1, Failed: 3}) {
		t.Fatalf("counts %+v, %v; want 2 pending, 1 retrying, 3 failed", c, err)
	}
	s.addFinished(t, a, 30000, StatusDelivered, 0)
	s.mustExec(t, `ANALYZE {{schema}}.deliveries`)
	if plan := s.plan(t, countDeliveriesSQL); strings.Contains(plan, "Seq Scan on deliveries") {
		t.Fatalf("counting reads the whole table:\n%s", plan)
	}
}

// Prune walks the primary key up to its cutoff: with many deliveries
// younger than the cutoff, it reads none of them.
func TestPrunePlanReadsNoWholeTable(t *testing.T) {
	s := newTestStore(t)
	wh := s.addWebhook(t, "http://a", "", "")
	s.addFinished(t, wh, 30000, StatusDelivered, 0)
	s.mustExec(t, `ANALYZE {{schema}}.deliveries`)
	for _, status := range []Status{StatusDelivered, StatusFailed} {
		plan := s.plan(t, pruneDeliveriesSQL(`d.id < (SELECT id FROM cutoff)`), string(status), (24 * time.Hour).Microseconds(), pruneBatch)
		if strings.Contains(plan, "Seq Scan on deliveries") || !strings.Contains(plan, "deliveries_pkey") {
			t.Fatalf("pruning %s deliveries reads the whole table:\n%s", status, plan)
		}
	}
	if n, err := s.Prune(context.Background(), 24*time.Hour, 24*time.Hour); err != nil || n != 0 {
		t.Fatalf("pruned %d, %v; want none", n, err)
	}
}

// addFinished adds n deliveries of webhook wh, each with an event of its
// own, finished with status ago, stored a minute before that (their ids say
// when).
func (s *Store) addFinished(t testing.TB, wh int64, n int, status Status, ago time.Duration) {
	t.Helper()
	s.mustExec(t, `WITH e AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
			SELECT 'bulk', g, 0, 'task.completed', 1, 'tasks', 'update', now(), '{}', now() - $3::bigint * interval '1 microsecond' - interval '1 minute'
			FROM generate_series(1, $2::int) g RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, status, finished_at)
		SELECT {{schema}}.uuid_from(sha256(int8send(e.id)),
		           floor(extract(epoch FROM now() - $3::bigint * interval '1 microsecond' - interval '1 minute') * 1000)::bigint),
		       e.id, $1, 1, 'task.completed', $4, now() - $3::bigint * interval '1 microsecond' FROM e`,
		wh, n, ago.Microseconds(), string(status))
}

// plan returns the plan PostgreSQL makes for sql with args.
func (s *Store) plan(t testing.TB, sql string, args ...any) string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), "EXPLAIN "+s.q(sql), args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// withDeliveries returns a new store with one webhook and n pending
// deliveries of it, oldest first.
func withDeliveries(t *testing.T, n int) (*Store, int64, []uuid.UUID) {
	t.Helper()
	s := newTestStore(t)
	wh := s.addWebhook(t, "http://a.example", "", "")
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = s.addDelivery(t, wh, "{}")
	}
	return s, wh, ids
}
