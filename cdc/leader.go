package cdc

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/internal/pgconnect"
)

// One relay streams a slot at a time: the holder of a session-level
// advisory lock, taken on a connection of its own that does nothing else.
// The lock goes with its session: when the relay dies, its connections
// close and a stand-by takes the lock within a second. A relay that
// freezes (stopped, swapped out, its host cut off the network) closes
// nothing, though, and its session would keep the lock until TCP gave up
// on it, hours later. So the lock's session shows, every leaderPing, that
// its relay is alive, and asks the server to end it after leaderTimeout
// without a word (idle_session_timeout, PostgreSQL 14 on): a frozen leader
// loses the lock within leaderTimeout, and the stand-by that takes it ends
// the frozen relay's replication connection, which otherwise keeps the
// slot until wal_sender_timeout (a minute by default). A leader whose ping
// fails stops streaming at once: it no longer holds the lock.
const (
	leaderTimeout = 10 * time.Second
	leaderPing    = 2 * time.Second
)

// leaderLock is the lock's connection and the goroutine that keeps it.
type leaderLock struct {
	conn *pgx.Conn
	done chan struct{} // closed when keep returns
}

// takeLeaderLock connects on cfg and takes the slot's lock: ErrSlotBusy
// when another relay holds it. On success it keeps the lock, and cancels
// the session (lost) with the reason when it can no longer show that it
// holds it, until release.
func takeLeaderLock(ctx context.Context, cfg *pgx.ConnConfig, slot string, log *slog.Logger, lost context.CancelCauseFunc) (*leaderLock, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", pgconnect.Explain(err))
	}
	var leader bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(slot)).Scan(&leader); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("take the slot lock: %w", err)
	}
	if !leader {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%w: slot %q", ErrSlotBusy, slot)
	}
	timeout := fmt.Sprintf("%dms", leaderTimeout.Milliseconds())
	if _, err := conn.Exec(ctx, "SELECT set_config('idle_session_timeout', $1, false)", timeout); err != nil {
		// Before PostgreSQL 14: the lock goes only with the connection.
		log.Info("this PostgreSQL cannot end an idle session (idle_session_timeout, from version 14): a relay that freezes keeps the slot's lock until its connection drops", "err", err)
	}
	l := &leaderLock{conn: conn, done: make(chan struct{})}
	go l.keep(ctx, lost)
	return l, nil
}

// keep pings the lock's session every leaderPing, each within
// leaderTimeout, until ctx ends; the first ping that fails cancels the
// session with its reason.
func (l *leaderLock) keep(ctx context.Context, lost context.CancelCauseFunc) {
	defer close(l.done)
	t := time.NewTicker(leaderPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, leaderTimeout)
		_, err := l.conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil && ctx.Err() == nil {
			lost(fmt.Errorf("lost the slot's lock (its session did not answer: %v); another relay may stream the slot now", pgconnect.Explain(err)))
			return
		}
	}
}

// release stops keeping the lock and closes its session, which releases
// it. ctx must be done (the session's context), so that keep returns.
func (l *leaderLock) release(ctx context.Context) {
	<-l.done
	l.conn.Close(context.WithoutCancel(ctx))
}

// endFrozenStreamer ends the replication connection (backend pid) of a
// relay that lost the slot's lock without closing it, now that this relay
// holds the lock, and waits until the slot is free: a frozen relay's
// walsender keeps the slot until wal_sender_timeout. It needs the right
// to signal that backend (the same role, or pg_signal_backend).
func endFrozenStreamer(ctx context.Context, conn *pgx.Conn, slot string, pid int32, log *slog.Logger) error {
	var ended bool
	if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ended); err != nil {
		return fmt.Errorf("end the replication connection (pid %d) of the relay that lost the slot's lock: %w", pid, err)
	}
	log.Warn("took over the slot from a relay that stopped answering: ended its replication connection",
		"slot", slot, "backend_pid", pid, "ended", ended)
	deadline := time.Now().Add(leaderTimeout)
	for {
		st, err := Slot(ctx, conn, slot)
		if err != nil {
			return err
		}
		if !st.Active {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: slot %q is still streamed by backend pid %d after it was asked to end", ErrSlotBusy, slot, st.ActivePID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
