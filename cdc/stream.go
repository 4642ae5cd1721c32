package cdc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/smartmaintenance/relay/event"
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
// an error saying how to fix them. Before the first successful session any
// error ends Run, so a misconfigured relay exits at once.
func (s *Source) Run(ctx context.Context, h Handler) error {
	log := s.cfg.Logger
	backoff := 250 * time.Millisecond
	connected, standingBy := false, false
	defer s.state.Store(FeedStopped)
	for {
		started := time.Now()
		err := s.session(ctx, h, func() {
			connected = true
			s.state.Store(FeedStreaming)
		})
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("replication stream ended")
		}
		standby := errors.Is(err, ErrSlotBusy)
		if (!connected && !standby) || IsFatal(err) {
			return err
		}
		if standby {
			s.state.Store(FeedStandby)
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
			log.Warn("replication interrupted; reconnecting", "err", err, "retry_in", backoff)
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

// session runs one replication connection from setup to failure.
func (s *Source) session(ctx context.Context, h Handler, streaming func()) error {
	log := s.cfg.Logger
	conn, err := pgx.Connect(ctx, s.cfg.URL)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := Preflight(ctx, conn); err != nil {
		return err
	}
	// One relay streams a slot at a time: the holder of this session lock.
	// It is released when the connection closes, also when the relay dies.
	var leader bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(s.cfg.Slot)).Scan(&leader); err != nil {
		return fmt.Errorf("take the slot lock: %w", err)
	}
	if !leader {
		return fmt.Errorf("%w: slot %q", ErrSlotBusy, s.cfg.Slot)
	}
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
	err = pglogrepl.StartReplication(ctx, rconn, s.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		PluginArgs: []string{
			"proto_version '1'",
			fmt.Sprintf("publication_names '%s'", s.cfg.Publication),
		},
	})
	if err != nil {
		return fmt.Errorf("start replication from slot %s at %s: %w", s.cfg.Slot, start, classifyStart(err))
	}
	log.Info("streaming changes", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "from", start.String())
	streaming()
	st := &stream{cfg: &s.cfg, conn: rconn, h: h, dec: newDecoder(), stored: start, start: start,
		sql: conn, check: s.checkSlot}
	return st.loop(ctx)
}

func (s *Source) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	pcfg, err := pgconn.ParseConfig(s.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	pcfg.RuntimeParams["application_name"] = "smtm-relay"
	rconn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
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
	switch {
	case state == StateReady && !slot.Exists:
		return 0, fmt.Errorf("%w: slot %q does not exist but the relay's position is %s; events after that point cannot be recovered from this slot. See the README, section 'Recovering a lost slot'",
			ErrSlotMissing, s.cfg.Slot, pos)
	case state == StateReady && slot.WALStatus == "lost":
		return 0, fmt.Errorf("%w: slot %q lost the WAL it needed (max_slot_wal_keep_size exceeded); events after %s cannot be read. See the README, section 'Recovering a lost slot'",
			ErrSlotInvalidated, s.cfg.Slot, pos)
	case state == StateReady && slot.Active:
		return 0, fmt.Errorf("%w: slot %q is streamed by backend pid %d (another relay?)", ErrSlotBusy, s.cfg.Slot, slot.ActivePID)
	case state == StateReady:
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

// heartbeatSQL writes a non-transactional logical message: a WAL record
// that moves the server's WAL end without touching any table. pgoutput
// does not forward it (messages are off), but the keepalive after it lets
// the slot advance.
const heartbeatSQL = "SELECT pg_logical_emit_message(false, 'smtm_relay_heartbeat', '')"

// stream is one running replication session.
type stream struct {
	cfg   *Config
	conn  *pgconn.PgConn
	h     Handler
	dec   *decoder
	start event.LSN // transactions committed before this were handled
	// stored is the highest position the Handler stored (Flush, Idle, or
	// its position at the start); durable the highest it made durable
	// (Sync), which is what the feed confirms. A session starts with
	// nothing known durable: the position it resumes from may have been
	// stored but not yet synced when the last session ended.
	stored, durable event.LSN

	// sql is the session's plain connection (it holds the slot lock);
	// check reads the slot's status through it.
	sql   *pgx.Conn
	check func(context.Context, *pgx.Conn) error

	inTx bool
	skip bool
	// Committed transactions not yet stored (group commit), the time the
	// first of them was committed, and the position past the last one.
	pending      int
	pendingSince time.Time
	committed    event.LSN
	tx           event.Tx
	seq          int
	lastIdle     time.Time
}

func (st *stream) loop(ctx context.Context) error {
	// stopped is set only when the loop itself sees the context end while
	// waiting for a message, so no handler call was cut short.
	stopped := false
	defer func() {
		// On a clean stop, store what is complete, and report it (durable).
		if stopped && !st.inTx && st.pending > 0 {
			_ = st.flush(context.WithoutCancel(ctx))
		}
		_ = st.sendStatus(context.WithoutCancel(ctx))
	}()
	now := time.Now()
	next := now.Add(st.cfg.StatusInterval)
	nextCheck := now // once at the start, then every WALCheckInterval
	var nextBeat time.Time
	if st.cfg.HeartbeatInterval > 0 {
		nextBeat = now.Add(st.cfg.HeartbeatInterval)
	}
	for {
		now := time.Now()
		if !now.Before(next) {
			if err := st.sendStatus(ctx); err != nil {
				return err
			}
			next = now.Add(st.cfg.StatusInterval)
		}
		if st.check != nil && !now.Before(nextCheck) {
			if err := st.check(ctx, st.sql); err != nil {
				return fmt.Errorf("check replication slot: %w", err)
			}
			nextCheck = now.Add(st.cfg.WALCheckInterval)
		}
		if !nextBeat.IsZero() && !now.Before(nextBeat) {
			if _, err := st.sql.Exec(ctx, heartbeatSQL); err != nil {
				return fmt.Errorf("write heartbeat: %w", err)
			}
			nextBeat = now.Add(st.cfg.HeartbeatInterval)
		}
		wake := next
		if st.check != nil && nextCheck.Before(wake) {
			wake = nextCheck
		}
		if !nextBeat.IsZero() && nextBeat.Before(wake) {
			wake = nextBeat
		}
		if st.pending > 0 && !st.inTx {
			// Group commit: flush when the group is old enough, or as soon
			// as the stream pauses.
			due := st.pendingSince.Add(st.cfg.GroupDelay)
			if !now.Before(due) || st.quiet() {
				if err := st.flush(ctx); err != nil {
					return err
				}
				continue
			}
			wake = minTime(wake, minTime(due, now.Add(groupPause)))
		}
		rctx, cancel := context.WithDeadline(ctx, wake)
		raw, err := st.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				stopped = true
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				if st.pending > 0 && !st.inTx {
					if err := st.flush(ctx); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("receive replication message: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyData:
			if err := st.copyData(ctx, msg.Data); err != nil {
				return err
			}
		}
	}
}

// groupPause is how long the stream must stay quiet for a group to be
// stored before GroupDelay, where quiet cannot tell: a pause this long
// means the transactions that arrived together have all been read. (Go's
// timers shorter than a millisecond fire after about a millisecond on an
// otherwise idle process.)
const groupPause = 200 * time.Microsecond

// quiet reports whether everything the server has sent so far has been
// read: nothing buffered in the connection and nothing in its socket. The
// group is then complete, and waiting for more only adds latency; what
// arrived while the previous group was stored is all read before it.
func (st *stream) quiet() bool {
	if st.conn.Frontend().ReadBufferLen() > 0 {
		return false
	}
	quiet, known := socketQuiet(st.conn.Conn())
	return quiet && known
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// flush stores the pending transactions and moves the position the feed
// confirms after its next Sync.
func (st *stream) flush(ctx context.Context) error {
	if err := st.h.Flush(ctx); err != nil {
		return fmt.Errorf("store transactions up to %s: %w", st.committed, err)
	}
	st.pending = 0
	if st.committed > st.stored {
		st.stored = st.committed
	}
	return nil
}

func (st *stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		end := event.LSN(ka.ServerWALEnd)
		// Nothing is open and everything sent before this keepalive has been
		// handled: the position may move to the server's WAL end, so a quiet
		// publication does not pin WAL.
		if !st.inTx && end > st.stored && (ka.ReplyRequested || time.Since(st.lastIdle) >= st.cfg.IdleInterval) {
			if st.pending > 0 {
				if err := st.flush(ctx); err != nil {
					return err
				}
			}
			if err := st.h.Idle(ctx, end); err != nil {
				return fmt.Errorf("persist idle position %s: %w", end, err)
			}
			st.stored = end
			st.lastIdle = time.Now()
		}
		if ka.ReplyRequested {
			return st.sendStatus(ctx)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlog data: %w", err)
		}
		return st.message(ctx, xld.WALData)
	}
	return nil
}

func (st *stream) message(ctx context.Context, data []byte) error {
	msg, err := parse(data)
	if err != nil {
		return fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		st.dec.relation(m)
	case *pglogrepl.BeginMessage:
		st.tx = event.Tx{CommitLSN: event.LSN(m.FinalLSN), CommitTime: m.CommitTime, XID: m.Xid}
		st.inTx, st.seq = true, 0
		// A transaction that committed before the resume point was handled
		// by an earlier session.
		st.skip = st.tx.CommitLSN < st.start
		if st.skip {
			return nil
		}
		return st.h.Begin(ctx, st.tx)
	case *pglogrepl.CommitMessage:
		if !st.inTx {
			return errors.New("commit without begin")
		}
		st.inTx = false
		if st.skip {
			return nil
		}
		st.tx.EndLSN = event.LSN(m.TransactionEndLSN)
		if err := st.h.Commit(ctx, st.tx); err != nil {
			return fmt.Errorf("commit transaction %s: %w", st.tx.CommitLSN, err)
		}
		if st.pending == 0 {
			st.pendingSince = time.Now()
		}
		st.pending++
		st.committed = st.tx.EndLSN
		if st.pending >= st.cfg.GroupSize || st.h.Full() {
			return st.flush(ctx)
		}
	case *pglogrepl.TruncateMessage:
		if st.skip {
			return nil
		}
		changes, err := st.dec.truncated(m, &st.tx, st.seq)
		if err != nil {
			return err
		}
		for _, c := range changes {
			st.seq++
			if err := st.h.Change(ctx, c); err != nil {
				return err
			}
		}
	case rowMessage:
		if st.skip {
			return nil
		}
		c, err := st.dec.change(m, &st.tx, st.seq)
		if err != nil {
			return err
		}
		if !st.inTx {
			return errors.New("row change outside a transaction")
		}
		st.seq++
		return st.h.Change(ctx, c)
	}
	return nil
}

// parse decodes a pgoutput message: a row change into a rowMessage, any
// other into pglogrepl's message, turning a panic of its decoder on a
// malformed message into an error. Counts and lengths are checked against
// the message's size first: the decoder allocates what they declare, so a
// corrupt length would otherwise ask for gigabytes.
func parse(data []byte) (m any, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty message")
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeInsert, pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete:
		m, err := parseRow(data)
		if err != nil {
			return nil, fmt.Errorf("malformed %q message (%d bytes): %w", data[0], len(data), err)
		}
		return m, nil
	case pglogrepl.MessageTypeTruncate:
		if len(data) < 6 {
			return nil, fmt.Errorf("malformed %q message (%d bytes): too short", data[0], len(data))
		}
		if n := uint64(binary.BigEndian.Uint32(data[1:])); 5+4*n > uint64(len(data)-1) {
			return nil, fmt.Errorf("malformed %q message (%d bytes): declares %d relations", data[0], len(data), n)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed message (%d bytes): %v", len(data), r)
		}
	}()
	return pglogrepl.Parse(data)
}

// checkTuple verifies one TupleData and returns its size.
func checkTuple(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, errors.New("truncated tuple")
	}
	n := int(binary.BigEndian.Uint16(b))
	pos := 2
	for range n {
		if pos >= len(b) {
			return 0, fmt.Errorf("tuple declares %d columns", n)
		}
		kind := b[pos]
		pos++
		switch kind {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if len(b)-pos < 4 {
				return 0, errors.New("truncated column length")
			}
			l := uint64(binary.BigEndian.Uint32(b[pos:]))
			pos += 4
			if l > uint64(len(b)-pos) {
				return 0, fmt.Errorf("column declares %d bytes", l)
			}
			pos += int(l)
		}
	}
	return pos, nil
}

// sendStatus reports the durable position to the server, first making
// durable what the Handler stored since the last report.
func (st *stream) sendStatus(ctx context.Context) error {
	if st.stored > st.durable {
		if err := st.h.Sync(ctx); err != nil {
			return fmt.Errorf("make the position %s durable: %w", st.stored, err)
		}
		st.durable = st.stored
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, st.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(st.durable),
		WALFlushPosition: pglogrepl.LSN(st.durable),
		WALApplyPosition: pglogrepl.LSN(st.durable),
		ClientTime:       time.Now(),
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

// lockKey derives the advisory lock key that elects the streaming relay.
func lockKey(slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("smtm-relay/slot/" + slot))
	return int64(h.Sum64())
}

// IsFatal reports whether err is a problem that waiting and reconnecting
// cannot fix.
func IsFatal(err error) bool {
	for _, target := range []error{ErrWalLevel, ErrNoReplication, ErrSlotMissing, ErrSlotInvalidated, ErrSlotForeign} {
		if errors.Is(err, target) {
			return true
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", // bad password, no such role / not allowed
			"3D000", // database does not exist
			"42501", // insufficient privilege
			"42704", // undefined object (slot, publication)
			"42P01": // undefined table
			return true
		case "55000": // object not in prerequisite state: wal_level, invalidated slot
			return true
		}
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// classifyStart maps START_REPLICATION failures onto the errors callers act on.
func classifyStart(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55006": // object in use
			return fmt.Errorf("%w: %v", ErrSlotBusy, err)
		case "55000":
			return fmt.Errorf("%w: %v", ErrSlotInvalidated, err)
		}
	}
	return err
}
