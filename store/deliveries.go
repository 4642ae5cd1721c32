package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
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
    SELECT w.id, w.url, w.secret, w.headers, COALESCE(b.room, $5::int) AS room,
           COALESCE(b.before, 'infinity') AS before
    FROM {{schema}}.webhooks w
    LEFT JOIN unnest($6::bigint[], $7::int[], $8::timestamptz[]) AS b(webhook_id, room, before) ON b.webhook_id = w.id
    WHERE w.active AND w.deleted_at IS NULL AND w.id <> ALL($3::bigint[])
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
    SELECT c.tid, h.url, h.secret, h.headers, e.traceparent, e.body, e.created_at, e.committed_at
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
          p.url, p.secret, p.headers`

// loadHeldSQL reads held deliveries by id (see LoadHeld), with the same
// columns as claimSQL returns: those owner still holds for at least the
// given time, unfinished, of active webhooks.
const loadHeldSQL = `
SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.company_id, COALESCE(e.traceparent, ''),
       d.attempts, d.retry_base, d.next_attempt_at, d.lease_until, e.body, e.created_at, e.committed_at,
       w.url, w.secret, w.headers
FROM unnest($2::uuid[]) WITH ORDINALITY AS u(id, n)
CROSS JOIN LATERAL (
    SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.company_id, d.attempts, d.retry_base,
           d.next_attempt_at, d.lease_until
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
	// They run with a generic plan (see hotSettingsSQL).
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
	var eventType, trace, body, url, secret, headers pgtype.DriverBytes
	for rows.Next() {
		if out == nil {
			out = make([]Claimed, 0, n)
			events, types = make(map[int64]shared, n), make(map[string]string)
		}
		out = append(out, Claimed{})
		c := &out[len(out)-1]
		if err := rows.Scan((*[16]byte)(&c.ID), &c.WebhookID, &c.EventID, &eventType, &c.CompanyID, &trace, &c.Attempts, &c.RetryBase,
			&c.NextAttemptAt, &c.LeaseUntil, &body, &c.CreatedAt, &c.CommittedAt,
			&url, &secret, &headers); err != nil {
			return nil, err
		}
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
		s.endpointOf(c.WebhookID, url, secret, headers).fill(c)
	}
	return out, rows.Err()
}

// LoadHeld reads held deliveries (Leased.Held) by id, ready to send, as a
// claim would return them, without taking a lock or writing anything: the
// lease taken when they were stored holds them. It returns those owner
// still holds for at least minLease, that are not finished and whose
// webhooks are active, in the order of ids; the caller gives back the
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
    SELECT r.*, d.ctid AS tid, d.webhook_id
    FROM r CROSS JOIN LATERAL (
        SELECT d.ctid, d.webhook_id FROM {{schema}}.deliveries d
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
        lease_owner = NULL,
        lease_until = NULL,
        updated_at = now()
    FROM held h
    -- By physical address (a TID scan). A row changed since it was read
    -- (its lease was lost) no longer matches and is not recorded.
    WHERE d.ctid = ANY (ARRAY(SELECT tid FROM held))
      AND d.ctid = h.tid
    RETURNING d.id, d.webhook_id
)
INSERT INTO {{schema}}.attempts
    (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, error, response_snippet, sent_by)
SELECT r.id, upd.webhook_id, r.attempt, r.started_at, r.duration_ms,
       NULLIF(r.status_code, 0), NULLIF(r.error, ''), NULLIF(r.snippet, ''), $1
FROM r JOIN upd ON upd.id = r.id
RETURNING delivery_id`

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

// hotSettingsSQL makes the statements after it in its transaction use
// their prepared statement's generic plan instead of planning each
// execution for its parameters, and never scan a whole table. The hot
// statements (storing events and their deliveries, row state, the
// position, claims, attempt records) are planned once per connection this
// way; planning them anew for every batch cost PostgreSQL more than
// executing them. A generic plan is made once, often while the tables are
// nearly empty, when a sequential scan looks cheapest, and is kept as they
// grow: with sequential scans off it is made of the keyed lookups these
// statements are written for (TestRecordPlanUsesPrimaryKey,
// TestClaimPlanReadsNoWholeTable). Other statements keep custom plans:
// some need a parameter's value to use a partial index.
const hotSettingsSQL = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true)`

// asyncSettingsSQL is hotSettingsSQL for a transaction whose commit does not
// wait for the disk (synchronous_commit off for that transaction only);
// durableSettingsSQL for one whose commit does, whatever the server's
// default.
const (
	asyncSettingsSQL   = hotSettingsSQL + `, set_config('synchronous_commit', 'off', true)`
	durableSettingsSQL = hotSettingsSQL + `, set_config('synchronous_commit', 'on', true)`
)

// commitMode says whether a hotStatement's commit waits for the disk.
type commitMode int

const (
	// durable waits for the transaction's WAL to reach the disk.
	durable commitMode = iota
	// async does not: synchronous_commit is off for the transaction only.
	async
)

// hotStatement runs one statement in a transaction of its own, with
// hotSettingsSQL, in one round trip, and hands its rows to read (nil: none
// are wanted). In async mode its commit does not wait for its WAL to reach
// the disk. Attempt records and given-back claims commit this way: a
// PostgreSQL crash can forget the last fraction of a second of them. A
// forgotten record leaves its delivery leased to the sender that made the
// attempt, so it is sent again under the same id once that lease expires
// (as when a relay dies between an attempt and its record), and never while
// the attempt could still be in flight; a forgotten give-back only delays a
// delivery until its lease expires. Claims always wait for the disk; so do
// events, deliveries and the replication position before the slot is
// confirmed past them (see Store.Sync).
func (s *Store) hotStatement(ctx context.Context, mode commitMode, sql string, args []any, read func(pgx.Rows) error) error {
	settings := durableSettingsSQL
	if mode == async {
		settings = asyncSettingsSQL
	}
	b := &pgx.Batch{}
	b.Queue(settings)
	b.Queue(sql, args...)
	br := s.pool.SendBatch(ctx, b)
	err := readStatement(br, read)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// readStatement reads the answers of a settings statement and then of the
// statement after it, whose rows go to read (nil: none are wanted).
func readStatement(br pgx.BatchResults, read func(pgx.Rows) error) error {
	if _, err := br.Exec(); err != nil {
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	if read != nil {
		if err := read(rows); err != nil {
			return err
		}
	}
	rows.Close()
	return rows.Err()
}

// cleanText makes s storable as PostgreSQL text: valid UTF-8 without NUL.
func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "")
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
}

// DeliveryByID reads one delivery; ErrNotFound if there is none.
func (s *Store) DeliveryByID(ctx context.Context, id uuid.UUID) (Delivery, error) {
	var d Delivery
	var owner, lastErr *string
	var leaseUntil, finished *time.Time
	var code *int
	err := s.pool.QueryRow(ctx, s.q(`SELECT id, event_id, webhook_id, company_id, event_type, status,
			attempts, retry_base, next_attempt_at, lease_owner, lease_until, last_status_code, last_error,
			created_at, updated_at, finished_at
		FROM {{schema}}.deliveries WHERE id = $1`), id).Scan(
		&d.ID, &d.EventID, &d.WebhookID, &d.CompanyID, &d.EventType, &d.Status,
		&d.Attempts, &d.RetryBase, &d.NextAttemptAt, &owner, &leaseUntil, &code, &lastErr,
		&d.CreatedAt, &d.UpdatedAt, &finished)
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
}

// attemptColumns are the columns scanAttempt reads, in its order.
const attemptColumns = `delivery_id, webhook_id, attempt, started_at,
	duration_ms, status_code, error, response_snippet, sent_by`

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
