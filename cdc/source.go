package cdc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/outage"
	"github.com/smartmaintenance/relay/internal/pgconnect"
)

// Source streams committed changes of the published tables to a Handler.
type Source struct {
	cfg   Config
	state atomic.Value // FeedState
	// retained is the WAL the slot retained at the last check, in bytes;
	// -1 before the first check.
	retained atomic.Int64
}

// FeedState is what a running Source is doing, for readiness checks.
type FeedState string

// The states of a Source.
const (
	// FeedStarting: Run has not connected yet.
	FeedStarting FeedState = "starting"
	// FeedStreaming: this process streams the slot.
	FeedStreaming FeedState = "streaming"
	// FeedStandby: another relay streams the slot; this one waits to take over.
	FeedStandby FeedState = "standby"
	// FeedReconnecting: the stream was interrupted and is being resumed.
	FeedReconnecting FeedState = "reconnecting"
	// FeedStopped: Run has returned.
	FeedStopped FeedState = "stopped"
)

// State reports what the Source is doing. It is safe to call at any time.
func (s *Source) State() FeedState {
	if v, ok := s.state.Load().(FeedState); ok {
		return v
	}
	return FeedStarting
}

// New returns a Source. It connects nothing until Run.
func New(cfg Config) *Source {
	cfg.withDefaults()
	s := &Source{cfg: cfg}
	s.retained.Store(-1)
	return s
}

// RetainedWAL returns how many bytes of WAL the slot retained at the last
// check of this process, or -1 when it has not checked (it stands by, or
// has not streamed yet).
func (s *Source) RetainedWAL() int64 { return s.retained.Load() }

// Run streams until ctx is done or a fatal error occurs. Lost connections
// (a database restart, a network failure, a failing store) are retried with
// capped exponential backoff; each retry resumes from the Handler's
// persisted position. Problems the relay cannot fix by waiting (wal_level,
// privileges, a missing or invalidated slot, bad credentials) end Run with
// an error saying how to fix them. Before the first session that streams or
// finds another relay streaming the slot any error ends Run, so a
// misconfigured relay exits at once.
func (s *Source) Run(ctx context.Context, h Handler) error {
	log := s.cfg.Logger
	backoff := 250 * time.Millisecond
	connected, standingBy := false, false
	down := interruption{log: log}
	defer s.state.Store(FeedStopped)
	for {
		started := time.Now()
		err := s.session(ctx, h, func() {
			connected = true
			s.state.Store(FeedStreaming)
			down.over("streaming")
		})
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		standby := errors.Is(err, ErrSlotBusy)
		// A relay standing by reached the server and found the slot held:
		// it is set up right, and waits out a later outage like one that
		// streamed.
		connected = connected || standby
		if !connected || IsFatal(err) {
			return err
		}
		if standby {
			s.state.Store(FeedStandby)
			down.over("standing by")
		} else {
			s.state.Store(FeedReconnecting)
		}
		if time.Since(started) > time.Minute {
			backoff = 250 * time.Millisecond
		}
		wait := backoff
		if standby {
			// Another relay streams the slot: poll often so that a takeover
			// after its death is quick.
			wait = min(backoff, time.Second)
			if !standingBy {
				log.Info("standing by: another relay streams the slot", "slot", s.cfg.Slot)
			}
		} else {
			down.failed(time.Now(), err, backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		standingBy = standby
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// interruption is the change feed's outage: logged when it begins, every
// outage.Remind while it lasts, and when the feed reaches the server again
// (to stream, or to stand by for another relay), not at every attempt.
type interruption struct {
	log           *slog.Logger
	since, remind time.Time // zero since while the feed is not interrupted
	attempts      int
}

// failed notes a failed session or attempt at now.
func (i *interruption) failed(now time.Time, err error, retryIn time.Duration) {
	i.attempts++
	switch {
	case i.since.IsZero():
		i.since, i.remind = now, now.Add(outage.Remind)
		i.log.Warn("replication interrupted; reconnecting, logged again every "+outage.Remind.String()+" while it fails",
			"err", err, "retry_in", retryIn)
	case !now.Before(i.remind):
		i.remind = now.Add(outage.Remind)
		i.log.Warn("replication still interrupted; reconnecting", "for", now.Sub(i.since).Round(time.Second).String(),
			"failed_attempts", i.attempts, "err", err, "retry_in", retryIn)
	}
}

// over ends the interruption, if there is one: the feed reached the
// server and is now doing what.
func (i *interruption) over(doing string) {
	if i.since.IsZero() {
		return
	}
	i.log.Info("replication works again", "after", time.Since(i.since).Round(time.Second).String(),
		"failed_attempts", i.attempts, "now", doing)
	i.since, i.attempts = time.Time{}, 0
}

// session runs one replication connection from setup to failure.
func (s *Source) session(ctx context.Context, h Handler, streaming func()) error {
	log := s.cfg.Logger
	ccfg, err := pgx.ParseConfig(s.cfg.URL)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", err)
	}
	// The connection that holds the slot's lock, checks the slot and reads
	// the watched rows' snapshot: named so that an operator finds which
	// relay streams (pg_locks joined to pg_stat_activity).
	ccfg.RuntimeParams["application_name"] = "smtm-relay-feed"
	textForms(ccfg.RuntimeParams)
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", pgconnect.Explain(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := Preflight(ctx, conn); err != nil {
		return err
	}
	// One relay streams a slot at a time: the holder of its lock (see
	// leader.go). The session ends when the lock is lost.
	lctx, lost := context.WithCancelCause(ctx)
	lock, err := takeLeaderLock(lctx, ccfg, s.cfg.Slot, log, lost)
	if err != nil {
		lost(nil)
		return err
	}
	defer func() {
		lost(nil)
		lock.release(ctx)
	}()
	err = s.lead(lctx, conn, h, streaming)
	if lctx.Err() != nil && ctx.Err() == nil {
		return context.Cause(lctx)
	}
	return err
}

// lead streams the slot, holding its lock, until ctx ends or the stream
// fails.
func (s *Source) lead(ctx context.Context, conn *pgx.Conn, h Handler, streaming func()) error {
	log := s.cfg.Logger
	added, err := EnsurePublication(ctx, conn, s.cfg.Publication, s.cfg.Tables)
	if err != nil {
		return err
	}
	if len(added) > 0 {
		log.Info("publication updated", "publication", s.cfg.Publication, "added_tables", added)
	}

	rconn, err := s.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer rconn.Close(context.WithoutCancel(ctx))

	start, err := s.resume(ctx, conn, rconn, h)
	if err != nil {
		return err
	}
	args := []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", s.cfg.Publication)}
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return fmt.Errorf("read the server's version: %w", err)
	}
	if version >= 140000 {
		// Logical decoding messages (Handler.Message), which pgoutput sends
		// from PostgreSQL 14 on.
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, rconn, s.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		return fmt.Errorf("start replication from slot %s at %s: %w", s.cfg.Slot, start, classifyStart(err))
	}
	log.Info("streaming changes", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "from", start.String())
	streaming()
	st := &stream{cfg: &s.cfg, conn: rconn, h: h, dec: newDecoder(), stored: start, start: start,
		sql: conn, check: s.checkSlot}
	return st.loop(ctx)
}

// textForms sets the session settings that decide the text form of the
// values the relay reads, on the replication connection (pgoutput writes
// each value in its walsender's session's form) and on the connection a
// new slot's snapshot is read on: ISO dates whatever the server's
// DateStyle, and timestamps with a time zone in UTC, which is how the
// relay sends them (see isoTimestamp). They replace any the URL set, in
// whatever case it spelt them.
func textForms(params map[string]string) {
	for k := range params {
		if strings.EqualFold(k, "datestyle") || strings.EqualFold(k, "timezone") {
			delete(params, k)
		}
	}
	params["DateStyle"] = "ISO"
	params["TimeZone"] = "UTC"
}

func (s *Source) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	pcfg, err := pgconn.ParseConfig(s.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	pcfg.RuntimeParams["application_name"] = "smtm-relay"
	textForms(pcfg.RuntimeParams)
	rconn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", pgconnect.Explain(err))
	}
	return rconn, nil
}

// resume decides where to start: the Handler's persisted position, or a new
// slot whose starting point the Handler records together with a snapshot.
func (s *Source) resume(ctx context.Context, conn *pgx.Conn, rconn *pgconn.PgConn, h Handler) (event.LSN, error) {
	log := s.cfg.Logger
	pos, state, err := h.Position(ctx)
	if err != nil {
		return 0, fmt.Errorf("read relay position: %w", err)
	}
	slot, err := Slot(ctx, conn, s.cfg.Slot)
	if err != nil {
		return 0, err
	}
	if slot.Exists && slot.Active {
		// This relay holds the slot's lock, so the walsender streaming the
		// slot is that of a relay that lost the lock without closing its
		// connection (frozen, or cut off the network).
		if err := endFrozenStreamer(ctx, conn, s.cfg.Slot, slot.ActivePID, log); err != nil {
			return 0, err
		}
		if slot, err = Slot(ctx, conn, s.cfg.Slot); err != nil {
			return 0, err
		}
	}
	ready := state == StateReady || state == StateReadyUnbound
	switch {
	case ready && !slot.Exists:
		return 0, fmt.Errorf("%w: slot %q does not exist but the relay's position is %s; events after that point cannot be recovered from this slot. See the README, section 'Recovering a lost slot'",
			ErrSlotMissing, s.cfg.Slot, pos)
	case ready && slot.WALStatus == "lost":
		return 0, fmt.Errorf("%w: slot %q lost the WAL it needed (max_slot_wal_keep_size exceeded); events after %s cannot be read. See the README, section 'Recovering a lost slot'",
			ErrSlotInvalidated, s.cfg.Slot, pos)
	case ready && slot.Active:
		return 0, fmt.Errorf("%w: slot %q is streamed by backend pid %d (another relay?)", ErrSlotBusy, s.cfg.Slot, slot.ActivePID)
	case state == StateReady && slot.ConfirmedFlush > pos:
		// The server would start at the slot's position without a word.
		return 0, fmt.Errorf("%w: slot %q is confirmed up to %s but the relay's position is %s: the state database lost writes it had made durable (restored from an older backup?) or someone advanced the slot, and the changes in between cannot be read again; relay slot forward --config FILE --yes resumes from the slot's position. See the README, section 'Recovering a lost slot'",
			ErrPositionBehind, s.cfg.Slot, slot.ConfirmedFlush, pos)
	case ready && slot.ConfirmedFlush > pos:
		log.Warn("the slot is confirmed past the relay's position, which an earlier version of the relay stored: harmless if that version confirmed a stretch with nothing to deliver, as it could; if the state database was restored from an older backup, the changes in between are lost. Resuming from the slot's position",
			"slot", s.cfg.Slot, "position", pos.String(), "confirmed_flush_lsn", slot.ConfirmedFlush.String())
		return pos, nil
	case ready:
		return pos, nil
	case state == StateNone && slot.Exists:
		return 0, fmt.Errorf("%w: slot %q exists but the relay has no position for it in its state database; if no relay uses it, drop it with `relay slot drop` and start again",
			ErrSlotForeign, s.cfg.Slot)
	}
	// First start, or a start that died while creating the slot: the slot
	// (if any) was never confirmed, so recreating it loses nothing.
	if err := h.MarkSeeding(ctx); err != nil {
		return 0, fmt.Errorf("record slot creation: %w", err)
	}
	if slot.Exists {
		log.Warn("recreating a replication slot whose creation never finished", "slot", s.cfg.Slot)
		if err := DropSlot(ctx, conn, s.cfg.Slot); err != nil {
			return 0, err
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, rconn, s.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return 0, fmt.Errorf("create replication slot %s: %w", s.cfg.Slot, err)
	}
	start, err := event.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, err
	}
	// The exported snapshot is valid while the replication connection stays
	// idle: seed now, before START_REPLICATION.
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+res.SnapshotName+"'"); err != nil {
			return fmt.Errorf("import slot snapshot: %w", err)
		}
		return h.Seed(ctx, &Snapshot{tx: tx, dec: newDecoder()}, start)
	})
	if err != nil {
		return 0, fmt.Errorf("seed from slot snapshot: %w", err)
	}
	log.Info("replication slot created", "slot", s.cfg.Slot, "consistent_point", start.String())
	return start, nil
}

// checkSlot reads the slot's retained WAL, logs it, warns above the
// threshold and hands the status to the observer.
func (s *Source) checkSlot(ctx context.Context, conn *pgx.Conn) error {
	slot, err := Slot(ctx, conn, s.cfg.Slot)
	if err != nil {
		return err
	}
	if !slot.Exists {
		return fmt.Errorf("%w: slot %q was dropped while the relay streamed it. See the README, section 'Recovering a lost slot'", ErrSlotMissing, s.cfg.Slot)
	}
	s.retained.Store(slot.RetainedBytes)
	log := s.cfg.Logger
	attrs := []any{"slot", s.cfg.Slot, "retained_wal_bytes", slot.RetainedBytes, "wal_status", slot.WALStatus,
		"confirmed_flush_lsn", slot.ConfirmedFlush.String()}
	if s.cfg.RetainedWALWarn > 0 && slot.RetainedBytes > s.cfg.RetainedWALWarn {
		log.Warn("replication slot retains much WAL: the server keeps it until the relay confirms it; check that the relay keeps up and see the README, section 'WAL safety'",
			append(attrs, "warn_above_bytes", s.cfg.RetainedWALWarn)...)
	} else {
		log.Info("replication slot WAL", attrs...)
	}
	if s.cfg.OnSlotStatus != nil {
		s.cfg.OnSlotStatus(slot)
	}
	return nil
}

// lockKey derives the advisory lock key that elects the streaming relay.
func lockKey(slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("smtm-relay/slot/" + slot))
	return int64(h.Sum64())
}
