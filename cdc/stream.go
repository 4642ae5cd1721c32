package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/smartmaintenance/relay/event"
)

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
	// lastFlush is when the last group was stored.
	lastFlush time.Time
}

// loop reads the session's messages until an error or ctx ends it, between
// them doing what is due: periodic duties, and storing a group of committed
// transactions.
//
// The stop (ctx) ends the wait for the next message, not a call of the
// handler in progress: a store write cut short would leave the group read
// so far unstored although the first attempts of its deliveries went out
// ahead, and the next session would send them again. The handler's calls
// and the duties run under a context that the stop ends only StopGrace
// later. On a stop the loop reads on to the end of the transaction it is
// in, when committed transactions wait to be stored behind it, and then
// stores them (a clean stop stores everything it read whole).
func (st *stream) loop(ctx context.Context) error {
	work, release := afterStop(ctx, st.cfg.StopGrace)
	defer release()
	// The stop ends the wait for a message, and so does the end of work
	// while the loop reads on to a transaction's commit (receive). Once
	// both hooks are gone, the connection is left with no deadline.
	defer func() { _ = st.conn.Conn().SetReadDeadline(time.Time{}) }()
	defer st.interruptWhenDone(ctx)()
	defer st.interruptWhenDone(work)()
	// stopping is set when the stop comes in the middle of a transaction
	// read after a pending group: the loop reads on to its commit. stopped
	// is set once the loop ends because of the stop, between transactions.
	stopping, stopped := false, false
	defer func() {
		// On a clean stop, store what is complete, and report it (durable).
		if stopped && !st.inTx && st.pending > 0 {
			if err := st.flush(work); err != nil {
				st.cfg.Logger.Warn("the transactions read before the stop could not be stored; the next start streams them again", "err", err)
			}
		}
		_ = st.sendStatus(work)
	}()
	d := st.newDuties(time.Now())
	for {
		if stopping && !st.inTx {
			stopped = true
			return ctx.Err()
		}
		now := time.Now()
		if err := st.runDuties(work, &d, now); err != nil {
			return err
		}
		wake := d.next()
		if st.pending > 0 && !st.inTx {
			// Group commit: flush when the group is old enough, or as soon
			// as the stream pauses if a delivery waits for the write.
			// A group gathers for SentGroupDelay only while transactions
			// keep coming: after a quiet spell (the last store write that
			// long ago) it is stored as soon as the stream pauses, so that
			// an odd event is in the store a moment after it was sent.
			waiting := st.h.Waiting() || now.Sub(st.lastFlush) >= st.cfg.SentGroupDelay
			due := st.pendingSince.Add(st.cfg.SentGroupDelay)
			if waiting {
				due = st.pendingSince.Add(st.cfg.GroupDelay)
			}
			if !now.Before(due) || (waiting && st.quiet()) {
				if err := st.flush(work); err != nil {
					return err
				}
				continue
			}
			if waiting {
				due = minTime(due, now.Add(groupPause))
			}
			wake = minTime(wake, due)
		}
		wait := ctx
		if stopping {
			wait = work
		}
		raw, err := st.receive(wait, wake)
		if err != nil {
			if wait.Err() != nil {
				if !stopping && st.inTx && st.pending > 0 {
					stopping = true
					continue
				}
				stopped = !st.inTx && ctx.Err() != nil && work.Err() == nil
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				if st.pending > 0 && !st.inTx {
					if err := st.flush(work); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("receive replication message: %w", err)
		}
		if err := st.received(work, raw); err != nil {
			return err
		}
	}
}

// afterStop returns the context of work that a stop (the end of ctx)
// should let finish: it ends grace after ctx does, or when released.
func afterStop(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return work, func() {
		stop()
		cancel()
	}
}

// receive reads the next message, waiting for it until wake at the
// latest, or until wait ends (interruptWhenDone).
//
// The wait is bounded by the connection's own read deadline, not by a
// context: pgconn watches a cancellable context for every message (a
// context.AfterFunc set and stopped, and a timer for a deadline), about
// 9 µs of CPU per event at 1,000 single-row transactions a second, on
// the way from a transaction's arrival to its first attempts. A read past
// the deadline fails as a timeout (pgconn.Timeout) and leaves the
// connection as it was, a message partly read included.
func (st *stream) receive(wait context.Context, wake time.Time) (pgproto3.BackendMessage, error) {
	if err := st.conn.Conn().SetReadDeadline(wake); err != nil {
		return nil, err
	}
	// A stop that came before the deadline was set: interruptWhenDone's deadline
	// was overwritten, and wait says so.
	if err := wait.Err(); err != nil {
		return nil, err
	}
	return st.conn.ReceiveMessage(context.Background())
}

// interruptWhenDone ends any read of the session's connection in progress
// (receive) as soon as ctx ends, until the returned function is called.
func (st *stream) interruptWhenDone(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = st.conn.Conn().SetReadDeadline(time.Now()) })
}

// duties are the times the loop next reports its position, checks the slot
// and writes a heartbeat. A zero check or heartbeat time means that duty is
// off.
type duties struct {
	status, check, beat time.Time
}

// newDuties schedules the first status report one StatusInterval from now,
// the first slot check at once and the first heartbeat one
// HeartbeatInterval from now.
func (st *stream) newDuties(now time.Time) duties {
	d := duties{status: now.Add(st.cfg.StatusInterval)}
	if st.check != nil {
		d.check = now
	}
	if st.cfg.HeartbeatInterval > 0 {
		d.beat = now.Add(st.cfg.HeartbeatInterval)
	}
	return d
}

// runDuties does the duties that are due at now and schedules their next
// time.
func (st *stream) runDuties(ctx context.Context, d *duties, now time.Time) error {
	if !now.Before(d.status) {
		if err := st.sendStatus(ctx); err != nil {
			return err
		}
		d.status = now.Add(st.cfg.StatusInterval)
	}
	if !d.check.IsZero() && !now.Before(d.check) {
		if err := st.check(ctx, st.sql); err != nil {
			return fmt.Errorf("check replication slot: %w", err)
		}
		d.check = now.Add(st.cfg.WALCheckInterval)
	}
	if !d.beat.IsZero() && !now.Before(d.beat) {
		if _, err := st.sql.Exec(ctx, heartbeatSQL); err != nil {
			return fmt.Errorf("write heartbeat: %w", err)
		}
		d.beat = now.Add(st.cfg.HeartbeatInterval)
	}
	return nil
}

// next is when the earliest duty is due.
func (d *duties) next() time.Time {
	wake := d.status
	if !d.check.IsZero() && d.check.Before(wake) {
		wake = d.check
	}
	if !d.beat.IsZero() && d.beat.Before(wake) {
		wake = d.beat
	}
	return wake
}

// received handles one message of the replication connection.
func (st *stream) received(ctx context.Context, raw pgproto3.BackendMessage) error {
	switch msg := raw.(type) {
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyData:
		return st.copyData(ctx, msg.Data)
	}
	return nil
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
	st.lastFlush = time.Now()
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
		return st.message(ctx, xld.WALData, xld.ServerTime)
	}
	return nil
}

// message handles one pgoutput message, which the server sent at sent
// (its clock, from the message's header).
func (st *stream) message(ctx context.Context, data []byte, sent time.Time) error {
	if len(data) > 0 {
		switch data[0] {
		case 'B':
			m, err := parseBegin(data)
			if err != nil {
				return fmt.Errorf("decode pgoutput message: %w", err)
			}
			return st.begin(ctx, m, sent)
		case 'C':
			end, err := parseCommit(data)
			if err != nil {
				return fmt.Errorf("decode pgoutput message: %w", err)
			}
			return st.commit(ctx, end)
		}
	}
	msg, err := parse(data)
	if err != nil {
		return fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		st.dec.relation(m)
	case *pglogrepl.LogicalDecodingMessage:
		// Non-transactional ones (the feed's own heartbeats) are not part
		// of a transaction.
		if st.skip || !m.Transactional || !st.inTx {
			return nil
		}
		return st.h.Message(ctx, m.Prefix, m.Content)
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

// begin opens the source transaction of a Begin message, which the
// server sent at sent.
func (st *stream) begin(ctx context.Context, m beginMessage, sent time.Time) error {
	st.tx = event.Tx{CommitLSN: m.finalLSN, CommitTime: m.commitTime, SentAt: sent, XID: m.xid}
	st.inTx, st.seq = true, 0
	// A transaction that committed before the resume point was handled by
	// an earlier session.
	st.skip = st.tx.CommitLSN < st.start
	if st.skip {
		return nil
	}
	return st.h.Begin(ctx, st.tx)
}

// commit closes the open source transaction, which ends at end, and
// flushes the group when it is full.
func (st *stream) commit(ctx context.Context, end event.LSN) error {
	if !st.inTx {
		return errors.New("commit without begin")
	}
	st.inTx = false
	if st.skip {
		return nil
	}
	st.tx.EndLSN = end
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
	return nil
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
