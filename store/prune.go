package store

import (
	"context"
	"fmt"
	"time"
)

// pruneBatch is how many rows one prune statement deletes at most, so that
// no statement holds its locks for long.
const pruneBatch = 1000

// Prune deletes finished deliveries, with their attempts: delivered ones
// finished longer than deliveredAge ago and failed ones finished longer than
// failedAge ago. It then deletes the events older than the larger of the two
// ages that have no delivery left. It works in bounded batches, each its own
// transaction, and stops between batches when ctx is done. deleted counts
// the deliveries removed.
//
// Deliveries are found by walking the primary key up to the cutoff: a
// delivery id begins with a time no later than its end (migration 0013).
// Random ids stored before ids were time-ordered are looked for in the
// whole table, until none is left.
func (s *Store) Prune(ctx context.Context, deliveredAge, failedAge time.Duration) (deleted int64, err error) {
	var random bool
	if err := s.pool.QueryRow(ctx, s.q(`SELECT random_ids FROM {{schema}}.installation`)).Scan(&random); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	for _, step := range []struct {
		status Status
		age    time.Duration
	}{{StatusDelivered, deliveredAge}, {StatusFailed, failedAge}} {
		n, err := s.pruneBatches(ctx, pruneDeliveriesSQL(`d.id < (SELECT id FROM cutoff)`),
			string(step.status), step.age.Microseconds(), pruneBatch)
		deleted += n
		if err == nil && random {
			n, err = s.pruneBatches(ctx, pruneDeliveriesSQL(randomID),
				string(step.status), step.age.Microseconds(), pruneBatch)
			deleted += n
		}
		if err != nil {
			return deleted, fmt.Errorf("prune %s deliveries: %w", step.status, err)
		}
	}
	if random {
		if _, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.installation SET random_ids = false
			WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.deliveries d WHERE `+randomID+`)`)); err != nil {
			return deleted, fmt.Errorf("prune: %w", err)
		}
	}
	_, err = s.pruneBatches(ctx, `WITH victims AS (
			SELECT e.id FROM {{schema}}.events e
			WHERE e.created_at < now() - $1::bigint * interval '1 microsecond'
			  AND NOT EXISTS (SELECT 1 FROM {{schema}}.deliveries d WHERE d.event_id = e.id)
			ORDER BY e.created_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		)
		DELETE FROM {{schema}}.events e USING victims v WHERE e.id = v.id`,
		max(deliveredAge, failedAge).Microseconds(), pruneBatch)
	if err != nil {
		return deleted, fmt.Errorf("prune events: %w", err)
	}
	return deleted, nil
}

// randomID is the condition that delivery d's id is random (UUID version
// 4), not time-ordered.
const randomID = `substr(d.id::text, 15, 1) = '4'`

// pruneDeliveriesSQL deletes up to $3 deliveries of status $1 that
// finished more than $2 µs ago, and their attempts, looking among the
// deliveries that the condition where selects. cutoff is the smallest id
// of a delivery that began after that time: every delivery whose id is
// below it began, and so may have finished, before.
func pruneDeliveriesSQL(where string) string {
	return `WITH cutoff AS (
			SELECT encode(substring(int8send(floor(extract(epoch FROM now() - $2::bigint * interval '1 microsecond') * 1000)::bigint + 1) FROM 3)
			              || '\x00000000000000000000'::bytea, 'hex')::uuid AS id
		), victims AS (
			SELECT d.id FROM {{schema}}.deliveries d
			WHERE ` + where + `
			  AND d.status = $1 AND d.finished_at < now() - $2::bigint * interval '1 microsecond'
			LIMIT $3
			FOR UPDATE SKIP LOCKED
		), attempts AS (
			DELETE FROM {{schema}}.attempt_rows a USING victims v WHERE a.delivery_id = v.id
		)
		DELETE FROM {{schema}}.deliveries d USING victims v WHERE d.id = v.id`
}

// pruneBatches runs a bounded delete until it deletes less than a batch.
func (s *Store) pruneBatches(ctx context.Context, sql string, args ...any) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		tag, err := s.pool.Exec(ctx, s.q(sql), args...)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
	}
}
