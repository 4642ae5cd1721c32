package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
)

// wholeBatch returns a batch of events(lsn, n) plus one event no webhook
// takes, each of the first n taken ahead for every webhook in hooks, with
// first attempts over in every way a result can be stored (delivered,
// retrying, failed) and some still in flight, and the row state of each.
func wholeBatch(lsn event.LSN, n int, hooks ...int64) Batch {
	evs := events(lsn, n)
	evs = append(evs, event.Event{Type: "task.created", CompanyID: 1, CommitLSN: lsn, Seq: n, CommitTime: time.Now(),
		Table: "tasks", Op: event.Insert, Body: []byte(`{}`)})
	started := time.Date(2026, 12, 7, 9, 15, 30, 0, time.UTC)
	b := Batch{Events: evs, Lease: WriteLease{Owner: "me", Lease: time.Minute}}
	for i, e := range evs[:n] {
		b.States = append(b.States, StateRow{Table: "tasks", Key: fmt.Sprint(i), Vals: event.Row{"status": "completed"}})
		for j, h := range hooks {
			a := Ahead{CommitLSN: e.CommitLSN, Seq: e.Seq, WebhookID: h}
			switch (i + j) % 4 {
			case 0:
				a.Result = &AttemptResult{Attempt: 1, StartedAt: started, Duration: 3 * time.Millisecond, StatusCode: 204, Snippet: "ok", Status: StatusDelivered}
			case 1:
				a.Result = &AttemptResult{Attempt: 1, StartedAt: started, Duration: time.Millisecond, StatusCode: 500, Error: "HTTP 500", Snippet: "oops",
					Status: StatusRetrying, RetryIn: time.Hour}
			case 2:
				a.Result = &AttemptResult{Attempt: 1, StartedAt: started, Duration: time.Millisecond, Error: "connection refused", Status: StatusFailed}
			}
			b.Ahead = append(b.Ahead, a)
		}
	}
	return b
}

// stored returns what the store holds of slot "s": its position, events,
// deliveries, attempts and row state, one line each, ordered, in terms
// that do not depend on the database (not its ids or clock).
func (s *Store) stored(t *testing.T) []string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), s.q(`
		SELECT 'position ' || lsn FROM {{schema}}.checkpoints WHERE slot = 's'
		UNION ALL
		SELECT format('event %s/%s %s %s %s', commit_lsn, seq, event_type, encode(body, 'escape'), traceparent) FROM {{schema}}.events
		UNION ALL
		SELECT format('delivery %s/%s to %s: %s, %s attempts, code %s, error %s, owner %s, leased %s, due later %s, finished %s, first %s %s %s %s %s',
			e.commit_lsn, e.seq, w.url, d.status, d.attempts, d.last_status_code, d.last_error, d.lease_owner,
			d.lease_until > now() + interval '50 seconds', d.next_attempt_at > now() + interval '50 minutes', d.finished_at IS NOT NULL,
			d.first_started_at, d.first_duration_ms, d.first_status_code, d.first_snippet, d.first_sent_by)
		FROM {{schema}}.deliveries d JOIN {{schema}}.events e ON e.id = d.event_id JOIN {{schema}}.webhooks w ON w.id = d.webhook_id
		UNION ALL
		SELECT format('attempt %s/%s to %s #%s: %s %s %s %s %s %s', e.commit_lsn, e.seq, w.url, t.attempt, t.started_at, t.duration_ms,
			t.status_code, t.error, t.response_snippet, t.sent_by)
		FROM {{schema}}.attempts t JOIN {{schema}}.deliveries d ON d.id = t.delivery_id
		JOIN {{schema}}.events e ON e.id = d.event_id JOIN {{schema}}.webhooks w ON w.id = t.webhook_id
		UNION ALL
		SELECT format('state %s %s %s', tbl, pk, vals) FROM {{schema}}.row_state WHERE slot = 's'
		ORDER BY 1`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWholeWriteStoresWhatTheFullOneWould: a batch whose deliveries all
// went ahead (Batch.WholeAt) stores, through WriteCommit and WritePart,
// the same events, deliveries, attempts, row state and position as the
// full write, answers the same counts, and skips a replay's events as it
// does.
func TestWholeWriteStoresWhatTheFullOneWould(t *testing.T) {
	ctx := context.Background()
	type outcome struct {
		created []int64
		ahead   []int
		rows    []string
	}
	run := func(whole bool) outcome {
		s, a, b := twoWebhooks(t)
		var o outcome
		version := func() int64 {
			if !whole {
				return 0
			}
			v, err := s.WebhooksVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		note := func(n int64, l Leased, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Ready) != 0 || len(l.Held) != 0 {
				t.Fatalf("whole %v: leased %d ready, %d held; every delivery went ahead", whole, len(l.Ready), len(l.Held))
			}
			o.created, o.ahead = append(o.created, n), append(o.ahead, l.Ahead)
		}
		batch := wholeBatch(10, 8, a, b)
		batch.WholeAt = version()
		note(s.WriteCommit(ctx, "s", batch, s.at(t), 11))
		// A replay of it with the next transaction: only the next one's
		// events and deliveries are new.
		next := wholeBatch(12, 3, a, b)
		replay := Batch{Events: append(batch.Events, next.Events...), Ahead: append(batch.Ahead, next.Ahead...), Lease: batch.Lease,
			WholeAt: version()}
		note(s.WriteCommit(ctx, "s", replay, s.at(t), 13))
		// A part of a large transaction, and the same part again.
		part := wholeBatch(14, 5, a, b)
		part.States, part.WholeAt = nil, version()
		note(s.WritePart(ctx, "s", 14, Part{Changes: 6, NextSeq: 6}, part))
		note(s.WritePart(ctx, "s", 14, Part{Changes: 6, NextSeq: 6}, part))
		o.rows = s.stored(t)
		return o
	}
	full, whole := run(false), run(true)
	if !slices.Equal(full.created, whole.created) || !slices.Equal(full.ahead, whole.ahead) {
		t.Fatalf("created %v, ahead %v; the full write: %v, %v", whole.created, whole.ahead, full.created, full.ahead)
	}
	if want := []int64{16, 6, 10, 0}; !slices.Equal(whole.created, want) {
		t.Fatalf("created %v, want %v", whole.created, want)
	}
	if !slices.Equal(full.rows, whole.rows) {
		t.Errorf("stored by the whole write:\n%s", diffLines(whole.rows, full.rows))
	}
}

// TestWholeWriteDecidesAgainWhenWebhooksMoved: a batch decided with a
// version of the webhooks that is no longer theirs is decided as usual:
// a webhook added since gets its delivery, as the full write gives it,
// and nothing is stored twice.
func TestWholeWriteDecidesAgainWhenWebhooksMoved(t *testing.T) {
	ctx := context.Background()
	s, a, b := twoWebhooks(t)
	v, err := s.WebhooksVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := s.addWebhook(t, "http://c.example/hook", "", "")
	batch := wholeBatch(10, 4, a, b) // events committed after c was created
	batch.WholeAt = v
	created, leased, err := s.WriteCommit(ctx, "s", batch, s.at(t), 11)
	if err != nil {
		t.Fatal(err)
	}
	if created != 12 || leased.Ahead != 8 {
		t.Fatalf("created %d (%d ahead), want 12 (8 ahead): c's deliveries are decided by the write", created, leased.Ahead)
	}
	var toC int
	if err := s.pool.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE webhook_id = $1 AND status = 'pending'`), c).Scan(&toC); err != nil {
		t.Fatal(err)
	}
	if toC != 4 {
		t.Fatalf("%d deliveries to the webhook added since the decision, want 4", toC)
	}
	// The same for a part.
	v, err = s.WebhooksVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.addWebhook(t, "http://d.example/hook", "", "")
	part := wholeBatch(12, 4, a, b)
	part.States, part.WholeAt = nil, v
	if created, leased, err := s.WritePart(ctx, "s", 12, Part{Changes: 5, NextSeq: 5}, part); err != nil || created != 16 || leased.Ahead != 8 {
		t.Fatalf("part: created %d (%d ahead), %v; want 16 (8 ahead)", created, leased.Ahead, err)
	}
}

// diffLines lists the lines only in got (+) and only in want (-).
func diffLines(got, want []string) string {
	var out string
	for _, l := range got {
		if !slices.Contains(want, l) {
			out += "+ " + l + "\n"
		}
	}
	for _, l := range want {
		if !slices.Contains(got, l) {
			out += "- " + l + "\n"
		}
	}
	return out
}
