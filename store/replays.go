package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReplayState is the state of a replay.
type ReplayState string

// The states of a replay. A queued or running replay is active (one per
// webhook at a time); done, cancelled and failed ones are over.
const (
	ReplayQueued    ReplayState = "queued"
	ReplayRunning   ReplayState = "running"
	ReplayDone      ReplayState = "done"
	ReplayCancelled ReplayState = "cancelled"
	ReplayFailed    ReplayState = "failed"
)

// Errors of the replay operations.
var (
	// ErrReplayActive: the webhook already has a queued or running replay.
	ErrReplayActive = errors.New("the webhook already has a replay running")
	// ErrReplayOver: the replay is done, cancelled or failed already.
	ErrReplayOver = errors.New("the replay is over")
	// ErrReplayLost: the replay is no longer this runner's to run (its
	// lease passed to another, or it was cancelled or finished).
	ErrReplayLost = errors.New("replay lease lost")
)

// Replay is a request to deliver the stored events of a time range again
// to one webhook, and how far it got.
type Replay struct {
	ID          int64
	WebhookID   int64
	CompanyID   int64
	From, To    time.Time
	RequestedBy string
	State       ReplayState
	// LastEvent is the id of the last event the range held when the
	// replay was created; Total is how many of its events the webhook was
	// subscribed to then. Cursor is the last event id looked at.
	LastEvent, Total, Cursor int64
	// Armed counts the deliveries made due again or created; Skipped the
	// events not sent again (see ArmReplay). Withdrawn counts those of
	// the armed ones a cancel took back unsent: given back the state they
	// had before, or removed (see CancelReplay).
	Armed, Skipped, Withdrawn int64
	Error                     string
	CreatedAt                 time.Time
	UpdatedAt                 time.Time
	StartedAt                 time.Time
	FinishedAt                time.Time
	// Pending, Delivered and Failed count the deliveries that name the
	// replay now, by status (pending counts retrying ones too).
	Pending, Delivered, Failed int64
}

const replayColumns = `r.id, r.webhook_id, r.company_id, r.range_from, r.range_to, r.requested_by, r.state,
	r.last_event, r.total, r.cursor_id, r.armed, r.skipped, r.withdrawn, coalesce(r.error, ''),
	r.created_at, r.updated_at, r.started_at, r.finished_at,
	coalesce(c.pending, 0), coalesce(c.delivered, 0), coalesce(c.failed, 0)`

// replayCounts joins a replay r to the counts of its deliveries by status
// (the deliveries_replay index).
const replayCounts = ` LEFT JOIN LATERAL (
		SELECT count(*) FILTER (WHERE d.status IN ('pending', 'retrying')) AS pending,
		       count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
		       count(*) FILTER (WHERE d.status = 'failed') AS failed
		FROM {{schema}}.deliveries d WHERE d.replay_id = r.id) c ON true`

func scanReplay(row pgx.CollectableRow) (Replay, error) {
	var r Replay
	var started, finished *time.Time
	err := row.Scan(&r.ID, &r.WebhookID, &r.CompanyID, &r.From, &r.To, &r.RequestedBy, &r.State,
		&r.LastEvent, &r.Total, &r.Cursor, &r.Armed, &r.Skipped, &r.Withdrawn, &r.Error,
		&r.CreatedAt, &r.UpdatedAt, &started, &finished, &r.Pending, &r.Delivered, &r.Failed)
	r.StartedAt, r.FinishedAt = deref(started), deref(finished)
	return r, err
}

// CreateReplay asks for the events of w's company committed in [from, to)
// to be delivered again to w, and records it in the audit log, in one
// transaction. The replay covers the events stored at this moment whose
// types w subscribes to (Replay.Total counts them); it returns
// ErrReplayActive when w already has an active replay. A range without
// such events makes a replay that is done at once.
func (s *Store) CreateReplay(ctx context.Context, actor string, w Webhook, from, to time.Time) (Replay, error) {
	var out Replay
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var first, last, total int64
		err := tx.QueryRow(ctx, s.q(`SELECT coalesce(min(e.id), 0), coalesce(max(e.id), 0), count(*)
			FROM {{schema}}.events e
			WHERE e.committed_at >= $1 AND e.committed_at < $2 AND e.company_id = $3 AND e.event_type = ANY($4)`),
			from, to, w.CompanyID, w.Events).Scan(&first, &last, &total)
		if err != nil {
			return fmt.Errorf("count the range's events: %w", err)
		}
		state, finished := ReplayQueued, "NULL"
		if total == 0 {
			state, finished = ReplayDone, "now()"
		}
		rows, err := tx.Query(ctx, s.q(`WITH r AS (
				INSERT INTO {{schema}}.replays (webhook_id, company_id, range_from, range_to, requested_by, state,
					last_event, total, cursor_id, finished_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, `+finished+`)
				RETURNING *)
			SELECT `+replayColumns+` FROM r LEFT JOIN LATERAL (SELECT 0 AS pending, 0 AS delivered, 0 AS failed) c ON true`),
			w.ID, w.CompanyID, from, to, actor, string(state), last, total, max(first-1, 0))
		if err != nil {
			return err
		}
		if out, err = pgx.CollectExactlyOneRow(rows, scanReplay); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "webhook.replay",
			WebhookID: w.ID, Details: map[string]any{"replay_id": out.ID, "from": from, "to": to, "events": total}})
	})
	if isUniqueViolation(err) {
		return Replay{}, fmt.Errorf("replay to webhook %d: %w", w.ID, ErrReplayActive)
	}
	if err != nil {
		return Replay{}, fmt.Errorf("replay to webhook %d: %w", w.ID, err)
	}
	return out, nil
}

// Replays lists a webhook's replays, newest first, at most limit.
func (s *Store) Replays(ctx context.Context, webhookID int64, limit int) ([]Replay, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+replayColumns+` FROM {{schema}}.replays r`+replayCounts+`
		WHERE r.webhook_id = $1 ORDER BY r.id DESC LIMIT $2`), webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list replays of webhook %d: %w", webhookID, err)
	}
	out, err := pgx.CollectRows(rows, scanReplay)
	if err != nil {
		return nil, fmt.Errorf("list replays of webhook %d: %w", webhookID, err)
	}
	return out, nil
}

// ReplayOf reads a replay of a webhook; ErrNotFound when the webhook has
// no such replay.
func (s *Store) ReplayOf(ctx context.Context, webhookID, id int64) (Replay, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+replayColumns+` FROM {{schema}}.replays r`+replayCounts+`
		WHERE r.id = $1 AND r.webhook_id = $2`), id, webhookID)
	if err != nil {
		return Replay{}, fmt.Errorf("read replay %d: %w", id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanReplay)
	if errors.Is(err, pgx.ErrNoRows) {
		return Replay{}, fmt.Errorf("replay %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Replay{}, fmt.Errorf("read replay %d: %w", id, err)
	}
	return r, nil
}

// withdrawable are the deliveries of a cancelled replay ($1) not sent yet
// that a cancel takes back: pending or retrying, and held by no sender. A
// delivery a sender holds (its attempt may be in flight) is left to finish
// that attempt, and taken back by a later sweep if it is still due then.
const withdrawable = `replay_id = $1 AND status IN ('pending', 'retrying') AND (lease_until IS NULL OR lease_until <= now())`

// removeUnsentSQL removes the deliveries a cancelled replay ($1) created
// (no earlier state) and never attempted: as if the replay had not
// reached their events.
const removeUnsentSQL = `DELETE FROM {{schema}}.deliveries
	WHERE ` + withdrawable + ` AND replay_prior IS NULL AND attempts = 0`

// withdrawSQL takes back the other deliveries of a cancelled replay ($1)
// not sent yet. One the replay re-armed and made no attempt of since
// (attempts = retry_base: an attempt a shutdown aborted does not count)
// gets back the state it had before (replay_prior): a delivered event is
// delivered again, a failed one failed with its earlier error and time.
// One the replay did attempt, and was retrying, ends failed, its last
// error naming the cancel and the attempt's error (the receiver failed
// that attempt; its history shows it); one it created and only aborted
// attempts of ends failed too. It returns, per delivery, whether it was
// given back its earlier state.
const withdrawSQL = `UPDATE {{schema}}.deliveries SET
	status = CASE WHEN r.back THEN replay_prior->>'status' ELSE 'failed' END,
	retry_base = CASE WHEN r.back THEN (replay_prior->>'retry_base')::int ELSE retry_base END,
	finished_at = CASE WHEN r.back THEN (replay_prior->>'finished_at')::timestamptz ELSE now() END,
	next_attempt_at = CASE WHEN r.back THEN (replay_prior->>'next_attempt_at')::timestamptz ELSE next_attempt_at END,
	last_status_code = CASE WHEN r.back THEN (replay_prior->>'last_status_code')::int ELSE last_status_code END,
	last_error = CASE
	    WHEN r.back THEN replay_prior->>'last_error'
	    WHEN attempts = retry_base THEN 'replay ' || $1::bigint || ' cancelled before this delivery was sent'
	    ELSE 'replay ' || $1::bigint || ' cancelled while this delivery was retrying; last error: '
	         || coalesce(last_error, 'HTTP ' || last_status_code, 'none recorded') END,
	replay_id = CASE WHEN r.back THEN (replay_prior->>'replay_id')::bigint ELSE replay_id END,
	replay_prior = NULL,
	updated_at = now()
	FROM (SELECT id, replay_prior IS NOT NULL AND attempts = retry_base AS back
	      FROM {{schema}}.deliveries WHERE ` + withdrawable + ` FOR UPDATE) r
	WHERE deliveries.id = r.id AND ` + withdrawable + `
	RETURNING r.back`

// withdraw takes back the deliveries of cancelled replay id not sent yet
// (removeUnsentSQL, withdrawSQL) and counts those given back their
// earlier state or removed in the replay's withdrawn. It returns how many
// it took back and how many of them it ended as failed.
func (s *Store) withdraw(ctx context.Context, tx pgx.Tx, id int64) (taken, failed int64, err error) {
	tag, err := tx.Exec(ctx, s.q(removeUnsentSQL), id)
	if err != nil {
		return 0, 0, fmt.Errorf("remove the replay's unsent deliveries: %w", err)
	}
	removed := tag.RowsAffected()
	rows, err := tx.Query(ctx, s.q(withdrawSQL), id)
	if err != nil {
		return 0, 0, fmt.Errorf("take back the replay's deliveries: %w", err)
	}
	backs, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return 0, 0, fmt.Errorf("take back the replay's deliveries: %w", err)
	}
	restored := int64(0)
	for _, b := range backs {
		if b {
			restored++
		}
	}
	failed = int64(len(backs)) - restored
	if removed+restored > 0 {
		if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays SET withdrawn = withdrawn + $2 WHERE id = $1`),
			id, removed+restored); err != nil {
			return 0, 0, err
		}
	}
	return removed + int64(len(backs)), failed, nil
}

// finishCancelledSQL marks a cancelled replay ($1) finished once none of
// its deliveries is pending or retrying.
const finishCancelledSQL = `UPDATE {{schema}}.replays r SET finished_at = now(), updated_at = now()
	WHERE r.id = $1 AND r.state = 'cancelled' AND r.finished_at IS NULL
	  AND NOT EXISTS (SELECT 1 FROM {{schema}}.deliveries d WHERE d.replay_id = r.id AND d.status IN ('pending', 'retrying'))`

// CancelReplay cancels an active replay of w and records it in the audit
// log: no delivery is armed for it any more, and those it armed that are
// not sent yet are taken back (see withdrawSQL): a delivery it re-armed
// gets back the state it had before, one it created is removed, and only
// one whose replay attempts failed ends as failed. It returns ErrNotFound
// when w has no such replay and ErrReplayOver when the replay is over
// already.
func (s *Store) CancelReplay(ctx context.Context, actor string, w Webhook, id int64) (Replay, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Waits for a batch being armed (it holds the row) to commit.
		var state ReplayState
		err := tx.QueryRow(ctx, s.q(`SELECT state FROM {{schema}}.replays WHERE id = $1 AND webhook_id = $2 FOR UPDATE`),
			id, w.ID).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("replay %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if state != ReplayQueued && state != ReplayRunning {
			return fmt.Errorf("replay %d is %s: %w", id, state, ErrReplayOver)
		}
		if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays
			SET state = 'cancelled', lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = $1`), id); err != nil {
			return err
		}
		taken, failed, err := s.withdraw(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.q(finishCancelledSQL), id); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "webhook.replay_cancel",
			WebhookID: w.ID, Details: map[string]any{"replay_id": id, "deliveries_withdrawn": taken - failed, "deliveries_failed": failed}})
	})
	if err != nil {
		return Replay{}, fmt.Errorf("cancel replay %d: %w", id, err)
	}
	return s.ReplayOf(ctx, w.ID, id)
}

// ClaimReplays leases the active replays nobody else holds to owner, up
// to limit, for lease, and renews the leases owner holds already. It
// returns the ids of the replays owner holds, oldest first. A replay whose
// holder died is claimed again once its lease has passed.
func (s *Store) ClaimReplays(ctx context.Context, owner string, limit int, lease time.Duration) ([]int64, error) {
	rows, err := s.pool.Query(ctx, s.q(`WITH pick AS (
			SELECT id FROM {{schema}}.replays
			WHERE state IN ('queued', 'running')
			  AND (lease_owner = $1 OR lease_until IS NULL OR lease_until <= now())
			ORDER BY id
			LIMIT $2
			FOR UPDATE SKIP LOCKED)
		UPDATE {{schema}}.replays r
		SET state = 'running', lease_owner = $1, lease_until = now() + $3::bigint * interval '1 microsecond',
		    started_at = coalesce(r.started_at, now()), updated_at = now()
		FROM pick WHERE r.id = pick.id
		RETURNING r.id`), owner, limit, lease.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("claim replays: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("claim replays: %w", err)
	}
	return ids, nil
}

// ReleaseReplays gives back the replays owner holds, for any runner to go
// on with at once.
func (s *Store) ReleaseReplays(ctx context.Context, owner string) error {
	_, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.replays SET lease_owner = NULL, lease_until = NULL, updated_at = now()
		WHERE lease_owner = $1 AND state = 'running'`), owner)
	if err != nil {
		return fmt.Errorf("release replays: %w", err)
	}
	return nil
}

// SweepCancelledReplays takes back the deliveries of cancelled replays
// that were held by a sender when the replay was cancelled and are still
// pending or retrying (see CancelReplay), and marks each cancelled replay
// finished once none of its deliveries is left to take back. It returns
// how many deliveries it took back.
func (s *Store) SweepCancelledReplays(ctx context.Context) (int64, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT id FROM {{schema}}.replays WHERE finished_at IS NULL AND state = 'cancelled'`))
	if err != nil {
		return 0, fmt.Errorf("sweep cancelled replays: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("sweep cancelled replays: %w", err)
	}
	var n int64
	for _, id := range ids {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			taken, _, err := s.withdraw(ctx, tx, id)
			if err != nil {
				return err
			}
			n += taken
			_, err = tx.Exec(ctx, s.q(finishCancelledSQL), id)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("sweep cancelled replay %d: %w", id, err)
		}
	}
	return n, nil
}

// ReplayEvent is a stored event a replay is about to send again.
type ReplayEvent struct {
	ID          int64
	Type        string
	CompanyID   int64
	CommittedAt time.Time
	Body        []byte
}

// ReplayBatch is one step of a replay: see ArmReplay.
type ReplayBatch struct {
	// Owner must hold the replay (ClaimReplays); Lease renews its lease.
	Owner string
	Lease time.Duration
	// Limit is the most events the step looks at.
	Limit int
	// Due is the most deliveries of the replay that may be pending or
	// retrying at once: while that many are, the step arms nothing.
	Due int
	// Keep decides whether the webhook takes an event (its filter); nil
	// takes every event of a subscribed type.
	Keep func(webhookID int64, filter string, e ReplayEvent) bool
}

// ReplayStep is what one step of a replay did.
type ReplayStep struct {
	// Looked is how many events the step looked at; Armed how many
	// deliveries it made due; Skipped how many events it did not send.
	Looked, Armed, Skipped int
	// Waiting is how many of the replay's deliveries were pending or
	// retrying before the step.
	Waiting int
	// State is the replay's state after the step.
	State ReplayState
}

// ArmReplay takes the next step of replay id, which b.Owner holds: it
// looks at the replay's next events (by id, at most b.Limit and no more
// than leave b.Due of its deliveries pending or retrying) of the range,
// of the webhook's company, of a type the webhook subscribes to now and
// that b.Keep keeps, and makes each one's delivery to the webhook due now
// as part of the replay, keeping its id: a finished delivery starts a new
// series of attempts, as a re-fire does, its earlier attempts kept; an
// event without a delivery to the webhook (the webhook did not take it
// then) gets one under the id its delivery would have had. An event whose
// delivery to the webhook is still pending or retrying is skipped: it is
// being sent. The events are locked against prune until the step commits.
// The step, its counts and how far it got are committed together.
//
// The replay is done once every event is looked at and none of its
// deliveries is pending or retrying; it fails when its webhook is deleted.
// While the webhook is disabled nothing is armed. It returns ErrReplayLost
// when b.Owner no longer holds the replay.
func (s *Store) ArmReplay(ctx context.Context, id int64, b ReplayBatch) (ReplayStep, error) {
	key, err := s.deliveryKey(ctx)
	if err != nil {
		return ReplayStep{}, err
	}
	var step ReplayStep
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		step = ReplayStep{State: ReplayRunning}
		var webhook, company, last, cursor int64
		var from, to time.Time
		var events []string
		var filter string
		var active, deleted bool
		err := tx.QueryRow(ctx, s.q(`SELECT r.webhook_id, r.company_id, r.range_from, r.range_to, r.last_event, r.cursor_id,
				w.events, coalesce(w.filter, ''), w.active, w.deleted_at IS NOT NULL,
				(SELECT count(*) FROM {{schema}}.deliveries d WHERE d.replay_id = r.id AND d.status IN ('pending', 'retrying'))
			FROM {{schema}}.replays r JOIN {{schema}}.webhooks w ON w.id = r.webhook_id
			WHERE r.id = $1 AND r.lease_owner = $2 AND r.state = 'running'
			FOR UPDATE OF r`), id, b.Owner).Scan(&webhook, &company, &from, &to, &last, &cursor,
			&events, &filter, &active, &deleted, &step.Waiting)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrReplayLost
		}
		if err != nil {
			return err
		}
		lease := b.Lease.Microseconds()
		switch {
		case deleted:
			step.State = ReplayFailed
			_, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays SET state = 'failed', error = 'webhook deleted',
				lease_owner = NULL, lease_until = NULL, finished_at = now(), updated_at = now() WHERE id = $1`), id)
			return err
		case cursor >= last && step.Waiting == 0:
			step.State = ReplayDone
			_, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays SET state = 'done',
				lease_owner = NULL, lease_until = NULL, finished_at = now(), updated_at = now() WHERE id = $1`), id)
			return err
		}
		room := min(b.Limit, b.Due-step.Waiting)
		if !active || cursor >= last || room <= 0 {
			_, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays SET lease_until = now() + $2::bigint * interval '1 microsecond'
				WHERE id = $1`), id, lease)
			return err
		}
		rows, err := tx.Query(ctx, s.q(`SELECT e.id, e.event_type, e.company_id, e.committed_at, e.body
			FROM {{schema}}.events e
			WHERE e.id > $1 AND e.id <= $2 AND e.company_id = $3 AND e.event_type = ANY($4)
			  AND e.committed_at >= $5 AND e.committed_at < $6
			ORDER BY e.id
			LIMIT $7
			FOR KEY SHARE`), cursor, last, company, events, from, to, room)
		if err != nil {
			return err
		}
		var e ReplayEvent
		var keep []int64
		_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.Type, &e.CompanyID, &e.CommittedAt, &e.Body}, func() error {
			step.Looked++
			cursor = e.ID
			if filter == "" || b.Keep == nil || b.Keep(webhook, filter, e) {
				keep = append(keep, e.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if step.Looked < room {
			cursor = last // nothing further in the range
		}
		if len(keep) > 0 {
			tag, err := tx.Exec(ctx, s.q(armReplaySQL), keep, webhook, id, key)
			if err != nil {
				return fmt.Errorf("arm deliveries: %w", err)
			}
			step.Armed = int(tag.RowsAffected())
		}
		step.Skipped = step.Looked - step.Armed
		_, err = tx.Exec(ctx, s.q(`UPDATE {{schema}}.replays
			SET cursor_id = $2, armed = armed + $3, skipped = skipped + $4,
			    lease_until = now() + $5::bigint * interval '1 microsecond', updated_at = now()
			WHERE id = $1`), id, cursor, step.Armed, step.Skipped, lease)
		return err
	})
	if err != nil {
		return ReplayStep{}, fmt.Errorf("replay %d: %w", id, err)
	}
	return step, nil
}

// armReplaySQL makes the deliveries of events $1 to webhook $2 due now as
// replay $3's: see ArmReplay. $4 is the installation's key for delivery
// ids (delivery_id, migration 0012). A finished delivery keeps the state it
// had in replay_prior, for a cancel to give back (withdrawSQL).
const armReplaySQL = `INSERT INTO {{schema}}.deliveries
		(id, event_id, webhook_id, company_id, event_type, next_attempt_at, replay_id)
	SELECT {{schema}}.delivery_id($4, e.source, e.commit_lsn, e.seq, $2, e.committed_at),
	       e.id, $2, e.company_id, e.event_type, now(), $3
	FROM {{schema}}.events e WHERE e.id = ANY($1::bigint[])
	ON CONFLICT (event_id, webhook_id) DO UPDATE
	SET status = 'pending', retry_base = deliveries.attempts, finished_at = NULL, next_attempt_at = now(),
	    last_error = NULL, last_status_code = NULL, replay_id = excluded.replay_id, updated_at = now(),
	    replay_prior = jsonb_build_object('status', deliveries.status, 'retry_base', deliveries.retry_base,
	        'finished_at', deliveries.finished_at, 'next_attempt_at', deliveries.next_attempt_at,
	        'last_status_code', deliveries.last_status_code, 'last_error', deliveries.last_error,
	        'replay_id', deliveries.replay_id)
	WHERE deliveries.status IN ('delivered', 'failed')`
