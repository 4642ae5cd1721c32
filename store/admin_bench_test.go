package store

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAdminQueries measures the admin API's heaviest reads on a busy
// installation: 50 webhooks, 100 000 deliveries with one attempt each over
// the last 48 hours.
func BenchmarkAdminQueries(b *testing.B) {
	s := newTestStore(b)
	ctx := context.Background()
	s.mustExec(b, `INSERT INTO {{schema}}.webhooks (company_id, name, url, events)
		SELECT (i % 5) + 1, 'hook-' || i, 'https://example.com/' || i, '{task.completed}' FROM generate_series(1, 50) i`)
	s.mustExec(b, `INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
		SELECT 'bench', i, 0, 'task.completed', 1, 'tasks', 'update', now(), '{}'::bytea, now() - (i * interval '1.7 seconds')
		FROM generate_series(1, 100000) i`)
	// As the relay records them: a first attempt answered 2xx in its
	// delivery's row, a failed one in attempt_rows.
	s.mustExec(b, `INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, status, attempts, created_at, finished_at,
			first_started_at, first_duration_ms, first_status_code)
		SELECT gen_random_uuid(), e.id, (e.commit_lsn % 50) + 1, 1, 'task.completed',
		       CASE WHEN e.commit_lsn % 10 = 0 THEN 'failed' ELSE 'delivered' END, 1, e.created_at, e.created_at,
		       CASE WHEN e.commit_lsn % 10 <> 0 THEN e.created_at END, CASE WHEN e.commit_lsn % 10 <> 0 THEN 12.5 END,
		       CASE WHEN e.commit_lsn % 10 <> 0 THEN 200 END
		FROM {{schema}}.events e`)
	s.mustExec(b, `INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code)
		SELECT d.id, d.webhook_id, 1, d.created_at, 12.5, 500
		FROM {{schema}}.deliveries d WHERE d.status = 'failed'`)
	// As autovacuum leaves a history older than a few minutes: its pages
	// all visible, so that counts can read an index alone. The fixture's
	// commits are asynchronous; vacuum marks a page only once it can tell
	// that they committed: after their WAL is flushed and a read has
	// marked the rows.
	s.mustExec(b, `CHECKPOINT`)
	s.mustExec(b, `SELECT count(*) FROM {{schema}}.deliveries`)
	s.mustExec(b, `VACUUM ANALYZE`)
	b.Run("list-50-webhooks", func(b *testing.B) {
		for b.Loop() {
			if hooks, err := s.ListWebhooks(ctx, AllCompanies); err != nil || len(hooks) != 50 {
				b.Fatal(len(hooks), err)
			}
		}
	})
	b.Run("deliveries-page-50-failed", func(b *testing.B) {
		for b.Loop() {
			ds, err := s.WebhookDeliveries(ctx, DeliveryFilter{WebhookID: 1, Statuses: []Status{StatusFailed}, Limit: 50,
				From: time.Now().Add(-48 * time.Hour)})
			if err != nil || len(ds) != 50 {
				b.Fatal(len(ds), err)
			}
		}
	})
}
