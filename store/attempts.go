package store

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// AttemptResult is the outcome of one attempt, to be recorded.
type AttemptResult struct {
	DeliveryID uuid.UUID
	// Attempt is the number of this attempt: Claimed.Attempts+1. The
	// delivery is updated only if it still has Attempt-1 attempts.
	Attempt   int
	StartedAt time.Time
	Duration  time.Duration
	// StatusCode is the response status; 0 when there was no response.
	StatusCode int
	// Error is a one-line description of a failed attempt; empty on success.
	Error string
	// Snippet is the start of the response body.
	Snippet string
	// Status is the delivery's new status: delivered, retrying or failed.
	// Ignored when Aborted.
	Status Status
	// RetryIn is the delay before the next attempt when Status is retrying.
	RetryIn time.Duration
	// PauseWebhook, when positive, is how long the receiver asked the
	// relay to wait (a 429 or 503 with Retry-After, bounded by the
	// sender): no sender claims or leases the webhook's deliveries until
	// then, and its new ones are due no earlier (see PausedUntil).
	PauseWebhook time.Duration
	// Aborted says the relay itself cut the attempt short (it was shutting
	// down) before a response arrived. The receiver may have seen the
	// request, so the attempt is recorded, with the error AbortedError; but
	// it is no failure of the receiver: the delivery keeps its status, is
	// due again at once for any sender, and the retry schedule does not
	// count the attempt (RetryBase grows with Attempts).
	Aborted bool
}

// AbortedError is the error recorded for an aborted attempt (see
// AttemptResult.Aborted). The success rates leave such attempts out.
const AbortedError = "aborted: relay shutting down"

const recordSQL = `
WITH r AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::timestamptz[], $5::float8[], $6::int[],
                         $7::text[], $8::text[], $9::text[], $10::bigint[])
        AS r(id, attempt, started_at, duration_ms, status_code, error, snippet, status, retry_us)
), held AS (
    -- Each delivery by primary key, whatever the planner believes about
    -- leases and due deliveries from statistics taken when the table
    -- looked different (the status is not written as "IN ('pending',
    -- 'retrying')", which would offer the due deliveries' index: a plan
    -- through it compares every due delivery with every result, a cost that
    -- grows with the backlog).
    SELECT r.*, d.ctid AS tid, d.webhook_id,
           -- A live delivery's first attempt answered 2xx is kept in its
           -- row (migration 0023), any other in attempt_rows.
           r.attempt = 1 AND r.status = 'delivered' AND d.replay_id IS NULL AS folded
    FROM r CROSS JOIN LATERAL (
        SELECT d.ctid, d.webhook_id, d.replay_id FROM {{schema}}.deliveries d
        WHERE d.id = r.id
          AND d.lease_owner = $1
          AND d.attempts = r.attempt - 1
          AND d.status NOT IN ('delivered', 'failed')
        LIMIT 1 -- keeps the lookup per result, never flattened into a join
    ) d
), upd AS (
    -- An aborted attempt (status 'aborted', never a delivery's status)
    -- leaves the delivery as it was, due as it was, with the attempt
    -- added to both attempts and retry_base: the schedule does not count
    -- it. Its last status code and error stay those of the last attempt
    -- that was not cut short.
    UPDATE {{schema}}.deliveries d
    SET attempts = h.attempt,
        retry_base = d.retry_base + (h.status = 'aborted')::int,
        status = CASE WHEN h.status = 'aborted' THEN d.status ELSE h.status END,
        next_attempt_at = CASE WHEN h.status = 'retrying'
                               THEN now() + h.retry_us * interval '1 microsecond'
                               ELSE d.next_attempt_at END,
        last_status_code = CASE WHEN h.status = 'aborted' THEN d.last_status_code ELSE NULLIF(h.status_code, 0) END,
        last_error = CASE WHEN h.status = 'aborted' THEN d.last_error ELSE NULLIF(h.error, '') END,
        finished_at = CASE WHEN h.status IN ('delivered', 'failed') THEN now() END,
        first_started_at = CASE WHEN h.folded THEN h.started_at ELSE d.first_started_at END,
        first_duration_ms = CASE WHEN h.folded THEN h.duration_ms ELSE d.first_duration_ms END,
        first_status_code = CASE WHEN h.folded THEN NULLIF(h.status_code, 0) ELSE d.first_status_code END,
        first_snippet = CASE WHEN h.folded THEN NULLIF(h.snippet, '') ELSE d.first_snippet END,
        first_sent_by = CASE WHEN h.folded THEN $1 ELSE d.first_sent_by END,
        lease_owner = NULL,
        lease_until = NULL,
        updated_at = now()
    FROM held h
    -- By physical address (a TID scan). A row changed since it was read
    -- (its lease was lost) no longer matches and is not recorded.
    WHERE d.ctid = ANY (ARRAY(SELECT tid FROM held))
      AND d.ctid = h.tid
    RETURNING d.id, d.webhook_id, d.replay_id, h.folded
), att AS (
    INSERT INTO {{schema}}.attempt_rows
        (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error, response_snippet, sent_by, replay_id)
    SELECT r.id, upd.webhook_id, r.attempt, r.started_at, r.duration_ms,
           NULLIF(r.status_code, 0), NULLIF(r.error, ''), NULLIF(r.snippet, ''), $1, upd.replay_id
    FROM r JOIN upd ON upd.id = r.id
    WHERE NOT upd.folded
)
SELECT id FROM upd`

// RecordAttempt records one attempt of a delivery owner holds and updates
// the delivery, releasing its lease. It returns ErrLeaseLost, recording
// nothing, when owner no longer holds the delivery.
func (s *Store) RecordAttempt(ctx context.Context, owner string, res AttemptResult) error {
	lost, err := s.RecordAttempts(ctx, owner, []AttemptResult{res})
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		return fmt.Errorf("record attempt %d of delivery %s: %w", res.Attempt, res.DeliveryID, ErrLeaseLost)
	}
	return nil
}

// RecordAttempts records a batch of attempts in one statement, so either all
// of the recordable ones are recorded or none. It returns the deliveries
// whose attempts were not recorded because owner no longer holds them (see
// ErrLeaseLost). A batch may not name a delivery twice.
func (s *Store) RecordAttempts(ctx context.Context, owner string, results []AttemptResult) (lost []uuid.UUID, err error) {
	if len(results) == 0 {
		return nil, nil
	}
	n := len(results)
	ids := make([][16]byte, n) // not []uuid.UUID, which pgx encodes as text, one string each
	attempts := make([]int32, n)
	started := make([]time.Time, n)
	durations := make([]float64, n)
	codes := make([]int32, n)
	errs := make([]string, n)
	snippets := make([]string, n)
	statuses := make([]string, n)
	retry := make([]int64, n)
	seen := make(map[uuid.UUID]bool, n)
	for i, r := range results {
		if seen[r.DeliveryID] {
			return nil, fmt.Errorf("record attempts: delivery %s appears twice in one batch", r.DeliveryID)
		}
		seen[r.DeliveryID] = true
		switch {
		case r.Aborted:
		case r.Status == StatusDelivered, r.Status == StatusRetrying, r.Status == StatusFailed:
		default:
			return nil, fmt.Errorf("record attempts: delivery %s: bad status %q", r.DeliveryID, r.Status)
		}
		if r.Attempt < 1 {
			return nil, fmt.Errorf("record attempts: delivery %s: bad attempt number %d", r.DeliveryID, r.Attempt)
		}
		ids[i] = r.DeliveryID
		attempts[i] = int32(r.Attempt)
		started[i] = r.StartedAt
		durations[i] = float64(r.Duration) / float64(time.Millisecond)
		codes[i] = int32(r.StatusCode)
		errs[i] = cleanText(r.Error)
		snippets[i] = cleanText(r.Snippet)
		statuses[i] = string(r.Status)
		retry[i] = max(r.RetryIn, 0).Microseconds()
		if r.Aborted {
			statuses[i], errs[i], retry[i] = "aborted", AbortedError, 0
		}
	}
	// The pauses first: when they fail, nothing is recorded, and the
	// caller's retry records the batch whole.
	if err := s.pauseWebhooks(ctx, results); err != nil {
		return nil, err
	}
	var done [][16]byte // not uuid.UUID, which pgx scans as text through sql.Scanner
	err = s.hotStatement(ctx, async, s.q(recordSQL), []any{owner, ids, attempts, started, durations, codes, errs, snippets, statuses, retry},
		func(rows pgx.Rows) (err error) {
			done, err = pgx.CollectRows(rows, pgx.RowTo[[16]byte])
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("record attempts: %w", err)
	}
	if len(done) == n {
		return nil, nil
	}
	recorded := make(map[[16]byte]bool, len(done))
	for _, id := range done {
		recorded[id] = true
	}
	for _, id := range ids {
		if !recorded[id] {
			lost = append(lost, uuid.UUID(id))
		}
	}
	return lost, nil
}

// cleanText makes s storable as PostgreSQL text: valid UTF-8 without NUL.
func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "")
}

// pauseWebhooks records that the receivers of some results asked to be
// left alone for a while (AttemptResult.PauseWebhook): each webhook is
// paused until the latest time asked, never shortened by a later answer.
func (s *Store) pauseWebhooks(ctx context.Context, results []AttemptResult) error {
	var ids [][16]byte
	var pauses []int64
	for _, r := range results {
		if r.PauseWebhook > 0 && !r.Aborted {
			ids = append(ids, r.DeliveryID)
			pauses = append(pauses, r.PauseWebhook.Microseconds())
		}
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, s.q(`INSERT INTO {{schema}}.webhook_pauses (webhook_id, until)
		SELECT d.webhook_id, now() + max(x.us) * interval '1 microsecond'
		FROM unnest($1::uuid[], $2::bigint[]) AS x(id, us) JOIN {{schema}}.deliveries d ON d.id = x.id
		GROUP BY d.webhook_id
		ON CONFLICT (webhook_id) DO UPDATE SET until = greatest(webhook_pauses.until, excluded.until)`), ids, pauses)
	if err != nil {
		return fmt.Errorf("record receivers' Retry-After: %w", err)
	}
	return nil
}

// PausedUntil returns when the webhook's receiver asked the relay to
// resume (Retry-After); zero when it did not or that time has passed.
func (s *Store) PausedUntil(ctx context.Context, webhook int64) (time.Time, error) {
	var until *time.Time
	err := s.pool.QueryRow(ctx, s.q(`SELECT max(until) FROM {{schema}}.webhook_pauses
		WHERE webhook_id = $1 AND until > now()`), webhook).Scan(&until)
	if err != nil {
		return time.Time{}, fmt.Errorf("read webhook %d's pause: %w", webhook, err)
	}
	return deref(until), nil
}
