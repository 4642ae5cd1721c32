package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Status is the state of a delivery.
type Status string

// The states of a delivery. Pending and retrying deliveries are due at their
// next_attempt_at; delivered and failed ones are finished.
const (
	StatusPending   Status = "pending"
	StatusRetrying  Status = "retrying"
	StatusDelivered Status = "delivered"
	StatusFailed    Status = "failed"
)

// ErrLeaseLost is returned when an attempt is recorded for a delivery that
// the caller no longer holds: its lease expired and another sender claimed
// it, or it was already recorded. The attempt is not recorded.
var ErrLeaseLost = errors.New("delivery lease lost")

// Refire sends a delivery again. A delivered or failed delivery goes back to
// pending, due now, keeping its id (the X-SMTM-Delivery header) and its
// attempts; its attempt numbers keep increasing and the retry schedule
// starts over. A delivery still pending or retrying is made due now. It
// returns ErrNotFound when there is no such delivery.
func (s *Store) Refire(ctx context.Context, deliveryID uuid.UUID) error {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx, s.q(`UPDATE {{schema}}.deliveries SET
			status = CASE WHEN status IN ('delivered', 'failed') THEN 'pending' ELSE status END,
			retry_base = CASE WHEN status IN ('delivered', 'failed') THEN attempts ELSE retry_base END,
			replay_id = CASE WHEN status IN ('delivered', 'failed') THEN NULL ELSE replay_id END,
			finished_at = NULL,
			next_attempt_at = now(),
			updated_at = now()
		WHERE id = $1
		RETURNING id`), deliveryID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("refire delivery %s: %w", deliveryID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("refire delivery %s: %w", deliveryID, err)
	}
	return nil
}

// Delivery is a delivery as stored. Absent values are zero.
type Delivery struct {
	ID             uuid.UUID
	EventID        int64
	WebhookID      int64
	CompanyID      int64
	EventType      string
	Status         Status
	Attempts       int
	RetryBase      int
	NextAttemptAt  time.Time
	LeaseOwner     string
	LeaseUntil     time.Time
	LastStatusCode int
	LastError      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     time.Time
	// ReplayID is the replay that made the delivery due again; 0 when none
	// did (or it was re-fired since).
	ReplayID int64
}

// DeliveryByID reads one delivery; ErrNotFound if there is none.
func (s *Store) DeliveryByID(ctx context.Context, id uuid.UUID) (Delivery, error) {
	var d Delivery
	var owner, lastErr *string
	var leaseUntil, finished *time.Time
	var code *int
	var replay *int64
	err := s.pool.QueryRow(ctx, s.q(`SELECT id, event_id, webhook_id, company_id, event_type, status,
			attempts, retry_base, next_attempt_at, lease_owner, lease_until, last_status_code, last_error,
			created_at, updated_at, finished_at, replay_id
		FROM {{schema}}.deliveries WHERE id = $1`), id).Scan(
		&d.ID, &d.EventID, &d.WebhookID, &d.CompanyID, &d.EventType, &d.Status,
		&d.Attempts, &d.RetryBase, &d.NextAttemptAt, &owner, &leaseUntil, &code, &lastErr,
		&d.CreatedAt, &d.UpdatedAt, &finished, &replay)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, fmt.Errorf("delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("read delivery %s: %w", id, err)
	}
	d.LeaseOwner = deref(owner)
	d.LastError = deref(lastErr)
	d.LeaseUntil = deref(leaseUntil)
	d.FinishedAt = deref(finished)
	d.LastStatusCode = deref(code)
	d.ReplayID = deref(replay)
	return d, nil
}

// Attempt is one recorded attempt of a delivery.
type Attempt struct {
	DeliveryID uuid.UUID
	WebhookID  int64
	Attempt    int
	StartedAt  time.Time
	Duration   time.Duration
	// StatusCode is 0 when there was no response.
	StatusCode int
	Error      string
	Snippet    string
	// SentBy names the relay process that made the attempt (its lease
	// owner name); empty for attempts recorded before it was kept.
	SentBy string
	// ReplayID is the replay the attempt was made for; 0 for a live one.
	ReplayID int64
}

// attemptColumns are the columns scanAttempt reads, in its order.
const attemptColumns = `delivery_id, webhook_id, attempt, started_at,
	duration_ms, status_code, error, response_snippet, sent_by, replay_id`

// Attempts lists a delivery's attempts in order. It returns no error and no
// attempts for an unknown delivery.
func (s *Store) Attempts(ctx context.Context, deliveryID uuid.UUID) ([]Attempt, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+attemptColumns+`
		FROM {{schema}}.attempts WHERE delivery_id = $1 ORDER BY attempt`), deliveryID)
	if err != nil {
		return nil, fmt.Errorf("read attempts of %s: %w", deliveryID, err)
	}
	out, err := pgx.CollectRows(rows, scanAttempt)
	if err != nil {
		return nil, fmt.Errorf("read attempts of %s: %w", deliveryID, err)
	}
	return out, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
