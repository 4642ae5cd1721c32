package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
)

// Checkpoint states, as stored.
const (
	StateSeeding = "seeding"
	StateReady   = "ready"
	// StateReadyUnbound is a ready position last stored by a relay of an
	// earlier version, which could confirm its slot a little past the
	// position it stored (migration 0024). It is never stored as such.
	StateReadyUnbound = "ready, unbound"
)

// Ready reports whether a state from Position is a ready one, bound or not.
func Ready(state string) bool { return state == StateReady || state == StateReadyUnbound }

// Position returns the persisted change-feed position of a slot and its
// state ("" when the relay never created the slot). A ready position is
// StateReady when the slot cannot have been confirmed past it (see
// migration 0024), StateReadyUnbound when it may have been.
func (s *Store) Position(ctx context.Context, slot string) (event.LSN, string, error) {
	var lsn int64
	var state string
	err := s.pool.QueryRow(ctx, s.q(`SELECT lsn,
			CASE WHEN state = 'ready' AND bound_lsn IS DISTINCT FROM lsn THEN '`+StateReadyUnbound+`' ELSE state END
		FROM {{schema}}.checkpoints WHERE slot = $1`), slot).Scan(&lsn, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read checkpoint: %w", err)
	}
	return event.LSN(lsn), state, nil
}

// MarkSeeding records that the slot is being (re)created and forgets the
// row state of an earlier attempt.
func (s *Store) MarkSeeding(ctx context.Context, slot string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q(`INSERT INTO {{schema}}.checkpoints (slot, lsn, state) VALUES ($1, 0, 'seeding')
			ON CONFLICT (slot) DO UPDATE SET lsn = 0, state = 'seeding', updated_at = now()`), slot); err != nil {
			return fmt.Errorf("mark seeding: %w", err)
		}
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("clear row state: %w", err)
		}
		return nil
	})
}

// Seed stores the initial row state read from the slot's snapshot and marks
// the slot ready at start, in one transaction.
func (s *Store) Seed(ctx context.Context, slot string, start event.LSN, rows func(yield func(StateRow) error) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("clear row state: %w", err)
		}
		const batch = 5000
		buf := make([][]any, 0, batch)
		flush := func() error {
			if len(buf) == 0 {
				return nil
			}
			_, err := tx.CopyFrom(ctx, pgx.Identifier{s.name, "row_state"}, []string{"slot", "tbl", "pk", "vals"}, pgx.CopyFromRows(buf))
			buf = buf[:0]
			return err
		}
		err := rows(func(r StateRow) error {
			vals, err := appendRow(nil, r.Vals)
			if err != nil {
				return err
			}
			buf = append(buf, []any{slot, r.Table, r.Key, vals})
			if len(buf) == batch {
				return flush()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("seed row state: %w", err)
		}
		if err := flush(); err != nil {
			return fmt.Errorf("seed row state: %w", err)
		}
		// The table may have grown from nothing to millions of rows: without
		// fresh statistics the planner reads it whole for every lookup of
		// prior state until autovacuum gets to it.
		if _, err := tx.Exec(ctx, s.q("ANALYZE {{schema}}.row_state")); err != nil {
			return fmt.Errorf("analyze row state: %w", err)
		}
		tag, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, bound_lsn = $2, state = 'ready', updated_at = now()
			WHERE slot = $1 AND state = 'seeding'`), slot, int64(start))
		if err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("save checkpoint: slot %s is not being seeded", slot)
		}
		return nil
	})
}

// Sync makes every store transaction committed so far durable, the ones
// that did not wait for the disk (Writer) among them: it commits a write
// of its own that waits for the disk, which flushes the WAL up to its
// commit record and so everything committed before it. at is the position
// the caller last stored: if the store's is another, PostgreSQL forgot
// writes that had not reached the disk, and Sync fails (ErrPositionMoved)
// rather than make the rest durable without them.
func (s *Store) Sync(ctx context.Context, slot string, at event.LSN) error {
	n := 0
	err := s.hotStatement(ctx, durable, s.q(`UPDATE {{schema}}.checkpoints SET updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn = $2 RETURNING 1`), []any{slot, int64(at)},
		func(rows pgx.Rows) error {
			for rows.Next() {
				n++
			}
			return rows.Err()
		})
	if err != nil {
		return fmt.Errorf("sync the store: %w", err)
	}
	if n != 1 {
		// Without a row to write, the commit would not wait for the disk.
		return fmt.Errorf("sync the store: %w", s.positionMoved(ctx, slot, at))
	}
	return nil
}

// ErrPositionMoved means that the store's position of a slot is not the one
// its writer last stored: PostgreSQL forgot writes that had not reached the
// disk (it crashed or was stopped in immediate mode), or another process
// moved it. The change feed must resume from the store's position.
var ErrPositionMoved = errors.New("the store's position is not the one last stored")

// positionMoved describes why a write that expected the slot's position to
// be want found another.
func (s *Store) positionMoved(ctx context.Context, slot string, want event.LSN) error {
	lsn, state, err := s.Position(ctx, slot)
	switch {
	case err != nil:
		return fmt.Errorf("%w (slot %s, expected %s; reading it: %v)", ErrPositionMoved, slot, want, err)
	case !Ready(state):
		return fmt.Errorf("slot %s is not ready (state %q)", slot, state)
	default:
		return fmt.Errorf("%w: slot %s is at %s, expected %s (PostgreSQL lost writes that were not yet on disk?)", ErrPositionMoved, slot, lsn, want)
	}
}

// SaveIdle advances a ready slot's position from from to lsn when no
// transaction is pending. It fails (ErrPositionMoved) when the position is
// not from.
func (s *Store) SaveIdle(ctx context.Context, slot string, from, lsn event.LSN) error {
	tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, bound_lsn = $2, updated_at = now()
		WHERE slot = $1 AND state = 'ready' AND lsn = $3`), slot, int64(lsn), int64(from))
	if err != nil {
		return fmt.Errorf("save idle checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("save idle checkpoint: %w", s.positionMoved(ctx, slot, from))
	}
	return nil
}

// ForwardPosition moves a ready slot's position forward to lsn, where the
// replication slot was confirmed, after the store lost what it had made
// durable (restored from an older backup): the source transactions in
// between cannot be streamed again. The row state stays as it was at the
// old position, and the parts stored of transactions before lsn are
// forgotten. It fails when the slot is not ready or its position is not
// behind lsn.
func (s *Store) ForwardPosition(ctx context.Context, slot string, lsn event.LSN) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.checkpoints SET lsn = $2, bound_lsn = $2, updated_at = now()
			WHERE slot = $1 AND state = 'ready' AND lsn < $2`), slot, int64(lsn))
		if err != nil {
			return fmt.Errorf("forward the position: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("forward the position of slot %s to %s: it is not ready, or not behind it", slot, lsn)
		}
		if _, err := tx.Exec(ctx, s.q(`DELETE FROM {{schema}}.parts WHERE slot = $1 AND commit_lsn < $2`), slot, int64(lsn)); err != nil {
			return fmt.Errorf("forget stored parts: %w", err)
		}
		return nil
	})
}

// ForgetSlot deletes a slot's position and row record. Events and
// deliveries already stored are kept.
func (s *Store) ForgetSlot(ctx context.Context, slot string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.row_state WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("forget row state: %w", err)
		}
		if _, err := tx.Exec(ctx, s.q("DELETE FROM {{schema}}.checkpoints WHERE slot = $1"), slot); err != nil {
			return fmt.Errorf("forget position: %w", err)
		}
		return nil
	})
}
