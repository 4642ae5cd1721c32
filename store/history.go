package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// EventBodies returns the stored bodies of events by id: the request body
// each delivery of the event sent. Events no longer stored are absent.
func (s *Store) EventBodies(ctx context.Context, ids []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, body FROM {{schema}}.events WHERE id = ANY($1)`), ids)
	if err != nil {
		return nil, fmt.Errorf("read event bodies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return nil, fmt.Errorf("read event bodies: %w", err)
		}
		out[id] = body
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read event bodies: %w", err)
	}
	return out, nil
}

// ErrNotFinished: the delivery is still pending or retrying, and cannot be
// sent again (RefireDelivery).
var ErrNotFinished = errors.New("delivery is not finished")

// DeliveryFilter selects a webhook's deliveries, newest first.
type DeliveryFilter struct {
	WebhookID int64
	// Statuses keeps only these; empty keeps all.
	Statuses []Status
	// From and To bound created_at: From <= created_at < To; zero is open.
	From, To time.Time
	// After continues a listing after the delivery with this position.
	After *DeliveryCursor
	Limit int
}

// DeliveryCursor is a position in a listing: keyset pagination on
// (created_at, id), stable while deliveries are added.
type DeliveryCursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// DeliveryRecord is a delivery with every attempt.
type DeliveryRecord struct {
	Delivery
	Attempts []Attempt
}

// WebhookDeliveries lists deliveries by f with their attempts.
func (s *Store) WebhookDeliveries(ctx context.Context, f DeliveryFilter) ([]DeliveryRecord, error) {
	statuses := make([]string, len(f.Statuses))
	for i, st := range f.Statuses {
		statuses[i] = string(st)
	}
	var from, to, afterAt *time.Time
	var afterID *uuid.UUID
	if !f.From.IsZero() {
		from = &f.From
	}
	if !f.To.IsZero() {
		to = &f.To
	}
	if f.After != nil {
		afterAt, afterID = &f.After.CreatedAt, &f.After.ID
	}
	if len(statuses) == 0 {
		statuses = []string{string(StatusPending), string(StatusRetrying), string(StatusDelivered), string(StatusFailed)}
	}
	// One ordered range of the (webhook, status, created_at, id) index per
	// status, merged: the newest first of all of them, without an index of
	// its own for the unfiltered listing (every index on deliveries costs
	// each delivery an entry when it is stored and when it is recorded).
	rows, err := s.pool.Query(ctx, s.q(`SELECT d.* FROM unnest($2::text[]) AS st(status)
		CROSS JOIN LATERAL (
			SELECT id, event_id, webhook_id, company_id, event_type, status,
				attempts, retry_base, next_attempt_at, last_status_code, last_error, created_at, updated_at, finished_at,
				replay_id
			FROM {{schema}}.deliveries
			WHERE webhook_id = $1
			  AND status = st.status
			  AND ($3::timestamptz IS NULL OR created_at >= $3)
			  AND ($4::timestamptz IS NULL OR created_at < $4)
			  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
			ORDER BY created_at DESC, id DESC
			LIMIT $7
		) d
		ORDER BY d.created_at DESC, d.id DESC
		LIMIT $7`), f.WebhookID, statuses, from, to, afterAt, afterID, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeliveryRecord, error) {
		var d DeliveryRecord
		var code *int
		var lastErr *string
		var finished *time.Time
		var replay *int64
		err := r.Scan(&d.ID, &d.EventID, &d.WebhookID, &d.CompanyID, &d.EventType, &d.Status, &d.Delivery.Attempts, &d.RetryBase,
			&d.NextAttemptAt, &code, &lastErr, &d.CreatedAt, &d.UpdatedAt, &finished, &replay)
		d.LastStatusCode, d.LastError, d.FinishedAt = deref(code), deref(lastErr), deref(finished)
		d.ReplayID = deref(replay)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	if err := s.addAttempts(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// addAttempts reads the attempts of deliveries, in one query, into each
// delivery's Attempts, in order.
func (s *Store) addAttempts(ctx context.Context, out []DeliveryRecord) error {
	ids := make([]uuid.UUID, len(out))
	index := make(map[uuid.UUID]int, len(out))
	for i, d := range out {
		ids[i] = d.ID
		index[d.ID] = i
	}
	arows, err := s.pool.Query(ctx, s.q(`SELECT `+attemptColumns+`
		FROM {{schema}}.attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt`), ids)
	if err != nil {
		return fmt.Errorf("list attempts: %w", err)
	}
	attempts, err := pgx.CollectRows(arows, scanAttempt)
	if err != nil {
		return fmt.Errorf("list attempts: %w", err)
	}
	for _, a := range attempts {
		i := index[a.DeliveryID]
		out[i].Attempts = append(out[i].Attempts, a)
	}
	for i := range out {
		sort.Slice(out[i].Attempts, func(a, b int) bool { return out[i].Attempts[a].Attempt < out[i].Attempts[b].Attempt })
	}
	return nil
}

func scanAttempt(row pgx.CollectableRow) (Attempt, error) {
	var a Attempt
	var ms float64
	var code *int
	var errText, snippet, sentBy *string
	var replay *int64
	err := row.Scan(&a.DeliveryID, &a.WebhookID, &a.Attempt, &a.StartedAt, &ms, &code, &errText, &snippet, &sentBy, &replay)
	a.ReplayID = deref(replay)
	a.Duration = time.Duration(ms * float64(time.Millisecond))
	a.StatusCode = deref(code)
	a.Error = deref(errText)
	a.Snippet = deref(snippet)
	a.SentBy = deref(sentBy)
	return a, err
}

// refireSet is the change that sends a finished delivery again: see Refire.
// A re-fired delivery is no replay's any more.
const refireSet = `status = 'pending', retry_base = attempts, finished_at = NULL,
	next_attempt_at = now(), last_error = NULL, last_status_code = NULL, replay_id = NULL, updated_at = now()`

// RefireDelivery sends a failed or delivered delivery of a webhook again,
// keeping its id (see Refire), and records it in the audit log. It returns
// ErrNotFound when the webhook has no such delivery and ErrNotFinished when
// the delivery is pending or retrying (it is sent anyway).
func (s *Store) RefireDelivery(ctx context.Context, actor string, w Webhook, id uuid.UUID) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status Status
		err := tx.QueryRow(ctx, s.q(`SELECT status FROM {{schema}}.deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE`),
			id, w.ID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if status != StatusFailed && status != StatusDelivered {
			return fmt.Errorf("delivery %s is %s: %w", id, status, ErrNotFinished)
		}
		if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.deliveries SET `+refireSet+` WHERE id = $1`), id); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "delivery.refire",
			WebhookID: w.ID, DeliveryID: id, Details: map[string]any{"previous_status": status}})
	})
	if err != nil {
		return fmt.Errorf("refire delivery %s: %w", id, err)
	}
	return nil
}

// RefireFailed sends every failed delivery of a webhook created in
// [from, to) again (zero bounds are open), keeping their ids, and records
// it in the audit log. It returns the ids re-fired.
func (s *Store) RefireFailed(ctx context.Context, actor string, w Webhook, from, to time.Time) ([]uuid.UUID, error) {
	var fromArg, toArg *time.Time
	if !from.IsZero() {
		fromArg = &from
	}
	if !to.IsZero() {
		toArg = &to
	}
	var ids []uuid.UUID
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q(`UPDATE {{schema}}.deliveries SET `+refireSet+`
			WHERE webhook_id = $1 AND status = 'failed'
			  AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
			RETURNING id`), w.ID, fromArg, toArg)
		if err != nil {
			return err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
			return err
		}
		details := map[string]any{"refired": len(ids)}
		if fromArg != nil {
			details["from"] = from
		}
		if toArg != nil {
			details["to"] = to
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "delivery.refire_bulk",
			WebhookID: w.ID, Details: details})
	})
	if err != nil {
		return nil, fmt.Errorf("refire failed deliveries of webhook %d: %w", w.ID, err)
	}
	return ids, nil
}

// DeliveryOf reads a delivery of a webhook with its attempts; ErrNotFound
// when the webhook has no such delivery.
func (s *Store) DeliveryOf(ctx context.Context, webhookID int64, id uuid.UUID) (DeliveryRecord, error) {
	d, err := s.DeliveryByID(ctx, id)
	if err != nil {
		return DeliveryRecord{}, err
	}
	if d.WebhookID != webhookID {
		return DeliveryRecord{}, fmt.Errorf("delivery %s: %w", id, ErrNotFound)
	}
	as, err := s.Attempts(ctx, id)
	if err != nil {
		return DeliveryRecord{}, err
	}
	return DeliveryRecord{Delivery: d, Attempts: as}, nil
}
