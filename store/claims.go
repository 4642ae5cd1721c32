package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Claimed is a delivery claimed for one attempt, with everything needed to
// send it.
type Claimed struct {
	ID        uuid.UUID
	WebhookID int64
	EventID   int64
	EventType string
	CompanyID int64
	// TraceParent is the W3C traceparent of the event's trace; empty when
	// the event was stored while tracing was off.
	TraceParent string
	// Attempts is the number of attempts made so far; the claimed attempt is
	// number Attempts+1.
	Attempts int
	// RetryBase is the number of attempts the retry schedule does not
	// count: those made before the current series began (see Refire) and
	// those aborted by a shutdown (see AttemptResult.Aborted). The schedule
	// counts Attempts - RetryBase.
	RetryBase     int
	NextAttemptAt time.Time
	LeaseUntil    time.Time
	// Body is the event's payload, sent unchanged by every attempt. It may
	// be shared with the other deliveries of its event: read it, never change
	// it.
	Body []byte
	// CreatedAt is when the event was recorded, CommittedAt when its source
	// transaction committed.
	CreatedAt   time.Time
	CommittedAt time.Time
	URL         string
	// Secret is the webhook's signing secret, decrypted; empty when none is
	// set.
	Secret string
	// SecretError is set instead of Secret when the stored secret, or a
	// stored header value, cannot be decrypted with the configured keys:
	// the attempt must not be sent.
	SecretError string
	// Headers are the webhook's own extra headers, decrypted.
	Headers map[string]string
	// ReplayID is the replay that made the delivery due (X-SMTM-Replay);
	// 0 for a live delivery.
	ReplayID int64
	// Format is the webhook's payload format: "raw" (Body as it is),
	// "slack" or "teams" (a message rendered from Body; package message).
	Format string
	// PreviousSecret is the secret a rotation replaced, decrypted, while
	// its overlap window lasts: an attempt made before PreviousSecretUntil
	// is signed with it too. Empty otherwise.
	PreviousSecret string
	// PreviousSecretUntil is the end of the previous secret's window.
	PreviousSecretUntil time.Time
	// StandardWebhooks: the attempt also carries the Standard Webhooks
	// headers.
	StandardWebhooks bool
}

// ClaimRequest describes a claim of due deliveries.
type ClaimRequest struct {
	// Owner names the claiming sender; it must be unique per process.
	Owner string
	// Limit is the most deliveries to claim.
	Limit int
	// Lease is how long the claim holds; after that another sender may
	// claim the delivery again.
	Lease time.Duration
	// Exclude lists webhooks whose deliveries must not be claimed.
	Exclude []int64
	// PerWebhook caps the deliveries of one webhook a claim returns,
	// counting those in Busy; 0 means no cap.
	PerWebhook int
	// Busy maps a webhook to the number of its deliveries the caller
	// already has in flight.
	Busy map[int64]int
	// Before maps a webhook to a time: only its deliveries due before it
	// are claimed. The caller holds its deliveries due from then on
	// (Leased.Held), which a claim would otherwise walk past one by one.
	Before map[int64]time.Time
}

// claimDue is the condition on delivery d of webhook h that it may be
// claimed: pending or retrying, due, due before the webhook's held ones,
// and not leased.
const claimDue = `d.webhook_id = h.id
          AND d.status IN ('pending', 'retrying')
          AND d.next_attempt_at <= now()
          AND d.next_attempt_at < h.before
          AND (d.lease_until IS NULL OR d.lease_until <= now())`

// claimSQL claims due deliveries webhook by webhook: for each active webhook
// that is not excluded, its oldest due deliveries up to its room (an index
// range scan), then the oldest of those up to the limit, which says how
// many each webhook gets (its quota). A webhook with a large backlog, or
// one at its limit, costs the others nothing. Only then are rows locked:
// each webhook's oldest due ones up to its quota, in a second scan of its
// range that skips the rows other senders are claiming (never waits for
// them) and takes the next ones instead, so a delivery is claimed by one
// sender at a time and a sender racing another still gets its share.
// (Locking in the first scan locked the room of every webhook looked at:
// 500 rows, each a WAL record that dirties its page, for a claim of 10
// among 50 webhooks; TestClaimLocksOnlyWhatItTakes.) The picked rows are
// updated by physical address and their events read by primary key, one
// lookup per row: a join the planner chose from the pick's estimated size
// (its limit) read the whole deliveries table for every claim
// (TestClaimPlanReadsNoWholeTable).
const claimSQL = `
WITH hooks AS (
    SELECT w.id, w.url, w.secret, w.headers, w.format, w.standard_webhooks, ` + claimPreviousSecret + `,
           COALESCE(b.room, $5::int) AS room,
           COALESCE(b.before, 'infinity') AS before
    FROM {{schema}}.webhooks w
    LEFT JOIN unnest($6::bigint[], $7::int[], $8::timestamptz[]) AS b(webhook_id, room, before) ON b.webhook_id = w.id
    WHERE w.active AND w.deleted_at IS NULL AND w.id <> ALL($3::bigint[])
      AND NOT EXISTS (SELECT 1 FROM {{schema}}.webhook_pauses p WHERE p.webhook_id = w.id AND p.until > now())
), quota AS (
    SELECT oldest.webhook_id, count(*) AS n
    FROM (
        SELECT h.id AS webhook_id
        FROM hooks h
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at
            FROM {{schema}}.deliveries d
            WHERE ` + claimDue + `
            ORDER BY d.next_attempt_at
            LIMIT h.room
        ) c
        WHERE h.room > 0
        ORDER BY c.next_attempt_at, c.id
        LIMIT $2
    ) oldest
    GROUP BY oldest.webhook_id
), pick AS (
    SELECT c.tid, h.url, h.secret, h.headers, h.format, h.standard_webhooks, h.previous_secret, h.previous_until, e.traceparent, e.body, e.created_at, e.committed_at
    FROM quota q
    JOIN hooks h ON h.id = q.webhook_id
    CROSS JOIN LATERAL (
        SELECT d.ctid AS tid, d.event_id
        FROM {{schema}}.deliveries d
        WHERE ` + claimDue + `
        ORDER BY d.next_attempt_at
        LIMIT q.n
        FOR UPDATE OF d SKIP LOCKED
    ) c
    CROSS JOIN LATERAL (
        SELECT e.traceparent, e.body, e.created_at, e.committed_at
        FROM {{schema}}.events e
        WHERE e.id = c.event_id
        LIMIT 1 -- one lookup per picked row, never a join over the table
    ) e
)
UPDATE {{schema}}.deliveries d
SET lease_owner = $1, lease_until = now() + $4::bigint * interval '1 microsecond', updated_at = now()
FROM pick p
WHERE d.ctid = ANY (ARRAY(SELECT tid FROM pick))
  AND d.ctid = p.tid
RETURNING d.id, d.webhook_id, d.event_id, d.event_type, d.company_id, COALESCE(p.traceparent, ''),
          d.attempts, d.retry_base, d.next_attempt_at, d.lease_until, p.body, p.created_at, p.committed_at,
          p.url, p.secret, p.headers, p.format, d.replay_id, p.standard_webhooks, p.previous_secret, p.previous_until`

// loadHeldSQL reads held deliveries by id (see LoadHeld), with the same
// columns as claimSQL returns: those owner still holds for at least the
// given time, unfinished, of active webhooks.
const loadHeldSQL = `
SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.company_id, COALESCE(e.traceparent, ''),
       d.attempts, d.retry_base, d.next_attempt_at, d.lease_until, e.body, e.created_at, e.committed_at,
       w.url, w.secret, w.headers, w.format, d.replay_id, w.standard_webhooks, ` + claimPreviousSecret + `
FROM unnest($2::uuid[]) WITH ORDINALITY AS u(id, n)
CROSS JOIN LATERAL (
    SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.company_id, d.attempts, d.retry_base,
           d.next_attempt_at, d.lease_until, d.replay_id
    FROM {{schema}}.deliveries d
    WHERE d.id = u.id
      AND d.lease_owner = $1
      AND d.lease_until > now() + $3::bigint * interval '1 microsecond'
      AND d.status NOT IN ('delivered', 'failed')
    LIMIT 1 -- one lookup per id, never a join over the table
) d
CROSS JOIN LATERAL (
    SELECT e.traceparent, e.body, e.created_at, e.committed_at
    FROM {{schema}}.events e
    WHERE e.id = d.event_id
    LIMIT 1
) e
JOIN {{schema}}.webhooks w ON w.id = d.webhook_id AND w.active AND w.deleted_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM {{schema}}.webhook_pauses p WHERE p.webhook_id = w.id AND p.until > now())
ORDER BY u.n`

// ClaimDue claims up to limit due deliveries for owner, oldest due first,
// for the length of lease. A delivery is due when it is pending or retrying,
// its next attempt time has come, nobody holds an unexpired lease on it, and
// its webhook is active and not deleted. Deliveries of the webhooks in
// exclude are left alone. Rows other senders are claiming at the same moment
// are skipped, never waited for, so a delivery is claimed by one sender at a
// time.
func (s *Store) ClaimDue(ctx context.Context, owner string, limit int, lease time.Duration, exclude []int64) ([]Claimed, error) {
	return s.Claim(ctx, ClaimRequest{Owner: owner, Limit: limit, Lease: lease, Exclude: exclude})
}

// Claim is ClaimDue with a per-webhook cap: see ClaimRequest.
func (s *Store) Claim(ctx context.Context, req ClaimRequest) ([]Claimed, error) {
	if req.Owner == "" {
		return nil, errors.New("claim deliveries: empty owner")
	}
	if req.Lease <= 0 {
		return nil, errors.New("claim deliveries: lease must be positive")
	}
	if req.Limit <= 0 {
		return nil, nil
	}
	room := req.Limit
	busyIDs := make([]int64, 0, len(req.Busy))
	busyRoom := make([]int32, 0, len(req.Busy))
	if req.PerWebhook > 0 {
		room = min(req.PerWebhook, req.Limit)
		for id, n := range req.Busy {
			busyIDs = append(busyIDs, id)
			busyRoom = append(busyRoom, int32(max(req.PerWebhook-n, 0)))
		}
	}
	exclude := req.Exclude
	if exclude == nil {
		exclude = []int64{}
	}
	// Claims commit durably: a claim PostgreSQL forgot in a crash would let
	// another sender claim a delivery whose attempt is still in flight.
	// They run with a generic plan (see hotParams).
	var out []Claimed
	var before []pgtype.Timestamptz
	if len(req.Before) > 0 {
		before = make([]pgtype.Timestamptz, len(busyIDs))
		for i, id := range busyIDs {
			before[i] = pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
			if t, ok := req.Before[id]; ok {
				before[i] = pgtype.Timestamptz{Time: t, Valid: true}
			}
		}
		for id, t := range req.Before {
			if _, ok := req.Busy[id]; !ok || req.PerWebhook <= 0 {
				busyIDs = append(busyIDs, id)
				busyRoom = append(busyRoom, int32(room))
				before = append(before, pgtype.Timestamptz{Time: t, Valid: true})
			}
		}
	}
	err := s.hotStatement(ctx, durable, s.q(claimSQL), []any{req.Owner, req.Limit, exclude,
		req.Lease.Microseconds(), room, busyIDs, busyRoom, before},
		func(rows pgx.Rows) (err error) {
			out, err = s.scanClaimed(rows, 0) // most claims find nothing
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NextAttemptAt.Before(out[j].NextAttemptAt) })
	return out, nil
}

// scanClaimed reads the rows of claimSQL or loadHeldSQL; n is how many
// are expected, if known. The deliveries of one event to several webhooks
// share its payload, those of one webhook its endpoint: a fanned-out
// backlog holds one copy of each.
func (s *Store) scanClaimed(rows pgx.Rows, n int) ([]Claimed, error) {
	var out []Claimed
	type shared struct {
		body  []byte
		trace string
	}
	var events map[int64]shared
	var types map[string]string
	// Read from the driver's buffer, copied only when first seen.
	var eventType, trace, body, url, secret, headers, format, previous pgtype.DriverBytes
	var replay pgtype.Int8
	var previousUntil pgtype.Timestamptz
	var standard bool
	for rows.Next() {
		if out == nil {
			out = make([]Claimed, 0, n)
			events, types = make(map[int64]shared, n), make(map[string]string)
		}
		out = append(out, Claimed{})
		c := &out[len(out)-1]
		replay, previousUntil = pgtype.Int8{}, pgtype.Timestamptz{}
		if err := rows.Scan((*[16]byte)(&c.ID), &c.WebhookID, &c.EventID, &eventType, &c.CompanyID, &trace, &c.Attempts, &c.RetryBase,
			&c.NextAttemptAt, &c.LeaseUntil, &body, &c.CreatedAt, &c.CommittedAt,
			&url, &secret, &headers, &format, &replay, &standard, &previous, &previousUntil); err != nil {
			return nil, err
		}
		c.ReplayID = replay.Int64 // 0 when NULL
		t, ok := types[string(eventType)]
		if !ok {
			t = string(eventType)
			types[t] = t
		}
		c.EventType = t
		e, ok := events[c.EventID]
		if !ok {
			e = shared{body: append([]byte{}, body...), trace: string(trace)}
			events[c.EventID] = e
		}
		c.Body, c.TraceParent = e.body, e.trace
		s.endpointOf(c.WebhookID, url, secret, headers, format, signing{previous: previous, until: previousUntil.Time, standard: standard}).fill(c)
	}
	return out, rows.Err()
}

// LoadHeld reads held deliveries (Leased.Held) by id, ready to send, as a
// claim would return them, without taking a lock or writing anything: the
// lease taken when they were stored holds them. It returns those owner
// still holds for at least minLease, that are not finished and whose
// webhooks are active and not paused (Retry-After), in the order of ids; the caller gives back the
// others (ReleaseClaims), if any are still its own.
func (s *Store) LoadHeld(ctx context.Context, owner string, ids []uuid.UUID, minLease time.Duration) ([]Claimed, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Claimed
	err := s.hotStatement(ctx, async, s.q(loadHeldSQL), []any{owner, uuidArray(ids), minLease.Microseconds()},
		func(rows pgx.Rows) (err error) {
			out, err = s.scanClaimed(rows, len(ids))
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("load held deliveries: %w", err)
	}
	return out, nil
}

// uuidArray returns ids as pgx sends them in binary: a []uuid.UUID goes as
// text, one string per id.
func uuidArray(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// decodeHeaders reads a webhook's headers object, as stored (values sealed
// when a key is set). String values are taken as they are; any other JSON
// value, which the table refuses since migration 0015, is taken as its JSON
// text. Anything that is not an object yields no headers.
func decodeHeaders(b []byte) map[string]string {
	if len(b) == 0 || string(b) == "{}" { // most webhooks: no decoding per delivery
		return nil
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil || len(raw) == 0 {
		return nil
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else if string(v) != "null" {
			out[k] = string(v)
		}
	}
	return out
}

// ReleaseClaims gives back deliveries owner holds without recording an
// attempt, so that they are due again at once for any sender.
func (s *Store) ReleaseClaims(ctx context.Context, owner string, ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.hotStatement(ctx, async, s.q(`UPDATE {{schema}}.deliveries
		SET lease_owner = NULL, lease_until = NULL, updated_at = now()
		WHERE id = ANY($2::uuid[]) AND lease_owner = $1`), []any{owner, uuidArray(ids)}, nil)
	if err != nil {
		return fmt.Errorf("release claims: %w", err)
	}
	return nil
}

// Heartbeat records that owner is sending now and returns how many other
// senders did so within the last within. Records older than an hour (of
// senders that died) are removed on the way.
func (s *Store) Heartbeat(ctx context.Context, owner string, within time.Duration) (peers int, err error) {
	err = s.pool.QueryRow(ctx, s.q(`WITH beat AS (
			INSERT INTO {{schema}}.senders (owner, seen_at) VALUES ($1, now())
			ON CONFLICT (owner) DO UPDATE SET seen_at = now()
			RETURNING 1
		), gone AS (
			DELETE FROM {{schema}}.senders WHERE seen_at < now() - interval '1 hour' AND owner <> $1
		)
		SELECT count(*) FROM {{schema}}.senders
		WHERE owner <> $1 AND seen_at > now() - $2::bigint * interval '1 microsecond'`),
		owner, within.Microseconds()).Scan(&peers)
	if err != nil {
		return 0, fmt.Errorf("sender heartbeat: %w", err)
	}
	return peers, nil
}

// Leave forgets owner's heartbeat: a sender that stops is no peer any more.
func (s *Store) Leave(ctx context.Context, owner string) error {
	if _, err := s.pool.Exec(ctx, s.q(`DELETE FROM {{schema}}.senders WHERE owner = $1`), owner); err != nil {
		return fmt.Errorf("sender leave: %w", err)
	}
	return nil
}
