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
func (s *Store) Prune(ctx context.Context, deliveredAge, failedAge time.Duration) (deleted int64, err error) {
	for _, step := range []struct {
		status Status
		age    time.Duration
	}{{StatusDelivered, deliveredAge}, {StatusFailed, failedAge}} {
		n, err := s.pruneBatches(ctx, `WITH victims AS (
				SELECT id FROM {{schema}}.deliveries
				WHERE status = $1 AND finished_at < now() - $2::bigint * interval '1 microsecond'
				LIMIT $3
				FOR UPDATE SKIP LOCKED
			), attempts AS (
				DELETE FROM {{schema}}.attempts a USING victims v WHERE a.delivery_id = v.id
			)
			DELETE FROM {{schema}}.deliveries d USING victims v WHERE d.id = v.id`,
			string(step.status), step.age.Microseconds(), pruneBatch)
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("prune %s deliveries: %w", step.status, err)
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
