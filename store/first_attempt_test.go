package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

// TestFirstAttemptKeptInItsDelivery: a live delivery's first attempt
// answered 2xx is kept in the delivery's row, every other attempt in
// attempt_rows (migration 0023), and whoever reads attempts (a
// delivery's history, last fired, the 24-hour counts, the success rates)
// sees all of them as before, each once.
func TestFirstAttemptKeptInItsDelivery(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	ok := s.addDelivery(t, wh, "{}")
	retried := s.addDelivery(t, wh, "{}")
	aborted := s.addDelivery(t, wh, "{}")
	replayed := s.addDelivery(t, wh, "{}")
	s.mustExec(t, `UPDATE {{schema}}.deliveries SET replay_id = 7 WHERE id = $1`, replayed)
	claim := func() {
		t.Helper()
		if _, err := s.ClaimDue(ctx, "me", 10, time.Minute, nil); err != nil {
			t.Fatal(err)
		}
	}
	record := func(rs ...AttemptResult) {
		t.Helper()
		if lost, err := s.RecordAttempts(ctx, "me", rs); err != nil || len(lost) != 0 {
			t.Fatalf("record: lost %v, %v", lost, err)
		}
	}
	start := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	claim()
	record(
		AttemptResult{DeliveryID: ok, Attempt: 1, StartedAt: at(0), Duration: 12 * time.Millisecond, StatusCode: 200, Snippet: "fine", Status: StatusDelivered},
		AttemptResult{DeliveryID: retried, Attempt: 1, StartedAt: at(1), Duration: time.Millisecond, StatusCode: 503, Error: "HTTP 503", Status: StatusRetrying},
		AttemptResult{DeliveryID: aborted, Attempt: 1, StartedAt: at(2), Aborted: true},
		AttemptResult{DeliveryID: replayed, Attempt: 1, StartedAt: at(3), StatusCode: 204, Status: StatusDelivered},
	)
	claim()
	record(
		AttemptResult{DeliveryID: retried, Attempt: 2, StartedAt: at(4), StatusCode: 200, Status: StatusDelivered},
		AttemptResult{DeliveryID: aborted, Attempt: 2, StartedAt: at(5), StatusCode: 201, Status: StatusDelivered},
	)

	rows := func(id uuid.UUID) (n int, folded bool) {
		t.Helper()
		err := s.pool.QueryRow(ctx, s.q(`SELECT (SELECT count(*) FROM {{schema}}.attempt_rows WHERE delivery_id = $1),
				first_started_at IS NOT NULL FROM {{schema}}.deliveries WHERE id = $1`), id).Scan(&n, &folded)
		if err != nil {
			t.Fatal(err)
		}
		return n, folded
	}
	for _, c := range []struct {
		name   string
		id     uuid.UUID
		rows   int
		folded bool
	}{
		{"first attempt answered 200", ok, 0, true},
		{"retried, then answered", retried, 2, false},
		{"aborted, then answered", aborted, 2, false},
		{"a replay's", replayed, 1, false},
	} {
		if n, folded := rows(c.id); n != c.rows || folded != c.folded {
			t.Errorf("%s: %d attempt rows, kept in the delivery %v; want %d, %v", c.name, n, folded, c.rows, c.folded)
		}
	}

	as, err := s.Attempts(ctx, ok)
	if err != nil || len(as) != 1 {
		t.Fatalf("attempts of the delivered one: %v, %v", as, err)
	}
	if a := as[0]; a.Attempt != 1 || !a.StartedAt.Equal(at(0)) || a.Duration != 12*time.Millisecond || a.StatusCode != 200 ||
		a.Snippet != "fine" || a.SentBy != "me" || a.Error != "" || a.WebhookID != wh || a.ReplayID != 0 {
		t.Fatalf("the attempt kept in the delivery reads back as %+v", a)
	}
	if as, _ := s.Attempts(ctx, replayed); len(as) != 1 || as[0].ReplayID != 7 || as[0].StatusCode != 204 {
		t.Fatalf("the replay's attempt reads back as %+v", as)
	}

	// Re-fired, the delivered one keeps its first attempt and adds the next
	// as a row.
	if err := s.Refire(ctx, ok); err != nil {
		t.Fatal(err)
	}
	claim()
	record(AttemptResult{DeliveryID: ok, Attempt: 2, StartedAt: at(6), StatusCode: 500, Error: "HTTP 500", Status: StatusFailed})
	as, err = s.Attempts(ctx, ok)
	if err != nil || len(as) != 2 || as[0].Attempt != 1 || as[0].StatusCode != 200 || as[1].Attempt != 2 || as[1].StatusCode != 500 {
		t.Fatalf("attempts after a re-fire: %+v, %v", as, err)
	}
	hist, err := s.WebhookDeliveries(ctx, DeliveryFilter{WebhookID: wh, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var listed int
	for _, d := range hist {
		listed += len(d.Attempts)
	}
	if listed != 7 {
		t.Errorf("the history lists %d attempts, want 7", listed)
	}

	// 7 attempts, 6 counted (not the aborted one), 4 of them answered
	// 2xx. Last fired: the re-fire's attempt.
	w, err := s.WebhookByID(ctx, AllCompanies, wh)
	if err != nil {
		t.Fatal(err)
	}
	if w.Attempts24h != 6 || w.Succeeded24h != 4 || !w.LastFiredAt.Equal(at(6)) {
		t.Errorf("webhook stats: %d attempts, %d succeeded, last fired %v; want 6, 4, %v", w.Attempts24h, w.Succeeded24h, w.LastFiredAt, at(6))
	}
	ws, err := s.ListWebhooks(ctx, AllCompanies)
	if err != nil || len(ws) != 1 || ws[0].Attempts24h != 6 || ws[0].Succeeded24h != 4 || !ws[0].LastFiredAt.Equal(at(6)) {
		t.Errorf("listed stats: %+v, %v", ws, err)
	}
	rates, err := s.SuccessRates(ctx, 24*time.Hour)
	if err != nil || len(rates) != 1 || rates[0].Attempts != 6 || rates[0].Succeeded != 4 {
		t.Errorf("success rates: %+v, %v", rates, err)
	}
	// A window that ends before the first attempt kept in a row counts
	// neither kind.
	rates, err = s.SuccessRates(ctx, time.Since(at(3))-500*time.Millisecond)
	if err != nil || len(rates) != 1 || rates[0].Attempts != 3 || rates[0].Succeeded != 2 {
		t.Errorf("success rates over the last attempts only: %+v, %v; want 3 attempts, 2 succeeded", rates, err)
	}

	// Last fired by a first attempt kept in a row, later than every row.
	late := s.addDelivery(t, wh, "{}")
	claim()
	record(AttemptResult{DeliveryID: late, Attempt: 1, StartedAt: at(7), StatusCode: 200, Status: StatusDelivered})
	if w, err := s.WebhookByID(ctx, AllCompanies, wh); err != nil || !w.LastFiredAt.Equal(at(7)) {
		t.Errorf("last fired %v, %v; want %v", w.LastFiredAt, err, at(7))
	}
}

// TestAttemptsViewTakesAnEarlierRelaysWrites: a relay of the version
// before migration 0023, still running during an upgrade, records into
// attempts and prunes from it, as its statements say.
func TestAttemptsViewTakesAnEarlierRelaysWrites(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	wh := s.addWebhook(t, "http://a", "", "")
	d := s.addDelivery(t, wh, "{}")
	var got [16]byte
	err := s.pool.QueryRow(ctx, s.q(`WITH att AS (
			INSERT INTO {{schema}}.attempts (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error, response_snippet, sent_by)
			VALUES ($1, $2, 1, now(), 2.5, 200, NULL, 'ok', 'old') RETURNING delivery_id)
		SELECT delivery_id FROM att`), d, wh).Scan(&got)
	if err != nil || uuid.UUID(got) != d {
		t.Fatalf("insert into attempts: %v, %v", uuid.UUID(got), err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.attempt_rows WHERE delivery_id = $1 AND sent_by = 'old'`), d).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows in attempt_rows, %v; want the inserted one", n, err)
	}
	if as, err := s.Attempts(ctx, d); err != nil || len(as) != 1 || as[0].Snippet != "ok" {
		t.Fatalf("attempts: %+v, %v", as, err)
	}
	// The earlier version's prune.
	s.mustExec(t, `WITH victims AS (SELECT id FROM {{schema}}.deliveries WHERE id = $1),
		attempts AS (DELETE FROM {{schema}}.attempts a USING victims v WHERE a.delivery_id = v.id)
		DELETE FROM {{schema}}.deliveries d USING victims v WHERE d.id = v.id`, d)
	if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.attempt_rows`)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows left in attempt_rows after the prune, %v", n, err)
	}
}

// TestUpgradeKeepsAttemptsAndTheirReaders: an installation upgraded across
// migration 0023 keeps its recorded attempts where every reader finds
// them, and a role that could read the attempts table can read the view.
func TestUpgradeKeepsAttemptsAndTheirReaders(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	s, err := Open(ctx, url, "relay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.migrate(ctx, 22); err != nil {
		t.Fatal(err)
	}
	wh := s.addWebhook(t, "http://a", "", "")
	d := s.addDelivery(t, wh, "{}")
	s.mustExec(t, `INSERT INTO {{schema}}.attempts (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, sent_by)
		VALUES ($1, $2, 1, now(), 3, 200, 'before')`, d, wh)
	role := "dashboard_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	s.mustExec(t, `CREATE ROLE `+role)
	t.Cleanup(func() {
		s.pool.Exec(context.Background(), `DROP OWNED BY `+role)
		s.pool.Exec(context.Background(), `DROP ROLE `+role)
	})
	s.mustExec(t, `GRANT USAGE ON SCHEMA {{schema}} TO `+role)
	s.mustExec(t, `GRANT SELECT ON {{schema}}.attempts TO `+role)

	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if as, err := s.Attempts(ctx, d); err != nil || len(as) != 1 || as[0].SentBy != "before" {
		t.Fatalf("the attempt recorded before the upgrade reads back as %+v, %v", as, err)
	}
	if w, err := s.WebhookByID(ctx, AllCompanies, wh); err != nil || w.Attempts24h != 1 || w.Succeeded24h != 1 || w.LastFiredAt.IsZero() {
		t.Fatalf("stats after the upgrade: %+v, %v", w, err)
	}
	var n int
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role); err != nil {
			return err
		}
		return tx.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.attempts`)).Scan(&n)
	})
	if err != nil || n != 1 {
		t.Fatalf("the role that could read the attempts table reads the view: %d rows, %v", n, err)
	}
}
