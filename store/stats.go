package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeliveryCounts is how many deliveries are in each unfinished or failed
// state.
type DeliveryCounts struct {
	Pending  int64
	Retrying int64
	// Failed counts the failed deliveries still kept (see Prune).
	Failed int64
}

// CountDeliveries counts pending, retrying and failed deliveries. Indexes
// keep it cheap (metrics collection runs it): the due deliveries' partial
// index for the first two, and each webhook's range of failed ones in the
// (webhook, status) index for the third; delivered rows are never read.
func (s *Store) CountDeliveries(ctx context.Context) (DeliveryCounts, error) {
	var c DeliveryCounts
	err := s.pool.QueryRow(ctx, s.q(countDeliveriesSQL)).Scan(&c.Pending, &c.Retrying, &c.Failed)
	if err != nil {
		return c, fmt.Errorf("count deliveries: %w", err)
	}
	return c, nil
}

// countDeliveriesSQL is CountDeliveries' statement.
const countDeliveriesSQL = `SELECT
    (SELECT count(*) FROM {{schema}}.deliveries WHERE status = 'pending'),
    (SELECT count(*) FROM {{schema}}.deliveries WHERE status = 'retrying'),
    (SELECT coalesce(sum(f.n), 0)::bigint FROM {{schema}}.webhooks w
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM {{schema}}.deliveries d
                         WHERE d.webhook_id = w.id AND d.status = 'failed') f)`

// WebhookSuccess is one webhook's attempts over a window, as the admin
// guide's success rate counts them: 2xx responses over all attempts (but
// those a shutdown aborted).
type WebhookSuccess struct {
	WebhookID int64
	CompanyID int64
	Name      string
	Attempts  int64
	// Succeeded counts the attempts answered with a 2xx status.
	Succeeded int64
}

// Rate returns Succeeded/Attempts, or 1 when there were no attempts.
func (w WebhookSuccess) Rate() float64 {
	if w.Attempts == 0 {
		return 1
	}
	return float64(w.Succeeded) / float64(w.Attempts)
}

// SuccessRates counts, per webhook not deleted, the attempts started in the
// last window and those answered with 2xx. Attempts a shutdown aborted are
// not counted: the receiver did not fail them. Webhooks without attempts in the
// window are listed with zero counts. It reads the attempt rows through
// their (webhook_id, started_at) index and the first attempts kept in
// deliveries' rows through deliveries_first_attempt (see statsSQL).
func (s *Store) SuccessRates(ctx context.Context, window time.Duration) ([]WebhookSuccess, error) {
	since := `now() - $1::bigint * interval '1 microsecond'`
	rows, err := s.pool.Query(ctx, s.q(`SELECT w.id, w.company_id, w.name, COALESCE(a.total, 0) + f.total, COALESCE(a.ok, 0) + f.ok
		FROM {{schema}}.webhooks w
		LEFT JOIN LATERAL (
			SELECT `+countsSQL+`
			FROM {{schema}}.attempt_rows a
			WHERE a.webhook_id = w.id AND a.started_at > `+since+`
		) a ON true
		CROSS JOIN LATERAL (`+firstCounts(since)+`) f
		WHERE w.deleted_at IS NULL
		ORDER BY w.id`), window.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("read success rates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookSuccess, error) {
		var w WebhookSuccess
		err := r.Scan(&w.WebhookID, &w.CompanyID, &w.Name, &w.Attempts, &w.Succeeded)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("read success rates: %w", err)
	}
	return out, nil
}

// Writable checks that the state database accepts writes: it is not a
// standby and the session is not read-only.
func (s *Store) Writable(ctx context.Context) error {
	var recovery bool
	var readOnly string
	err := s.pool.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").Scan(&recovery, &readOnly)
	if err != nil {
		return fmt.Errorf("state database: %w", err)
	}
	if recovery {
		return fmt.Errorf("state database is a standby in recovery: it cannot be written")
	}
	if readOnly == "on" {
		return fmt.Errorf("state database session is read-only")
	}
	return nil
}
