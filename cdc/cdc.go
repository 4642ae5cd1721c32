// Package cdc reads a PostgreSQL change feed through logical replication
// (the pgoutput plugin) and hands out decoded, typed row changes of committed
// transactions. It knows the replication protocol and nothing about webhooks.
//
// Its promises:
//   - the slot is confirmed only up to positions the Handler has stored
//     (Flush or Idle returned nil) and then made durable (Sync returned nil),
//     never merely what was received;
//   - keepalives are answered, and a feed whose published tables are quiet
//     still advances the slot (through Handler.Idle), so the relay does not
//     pin WAL;
//   - after any stop it resumes from the Handler's own persisted position;
//   - the publication and slot are created when missing and never dropped by
//     the feed itself (DropSlot is an explicit operation).
//
// A change travels: Source.Run (source.go: connect, elect, resume or create
// the slot, start replication) hands one session to stream.loop (stream.go:
// status reports, group commit, keepalives), which reads each message with
// parse (pgoutput.go: the wire format, checked before anything is
// allocated) and turns it into an event.Change with the decoder
// (decode.go). errors.go holds the errors callers act on and IsFatal;
// setup.go the checks and objects on the database side (wal_level, the
// publication, the slot).
package cdc

import (
	"context"
	"log/slog"
	"time"

	"github.com/smartmaintenance/relay/event"
)

// Config configures a Source. It is plain data: loading it from files or the
// environment is the caller's business.
type Config struct {
	// URL is the platform database's connection string. The replication
	// connection adds replication=database to it.
	URL string
	// Slot and Publication name the logical replication slot and the
	// publication the relay uses.
	Slot        string
	Publication string
	// Tables are the tables to publish (unqualified names in schema public).
	Tables []string
	// StatusInterval is how often the durable position is reported to the
	// server even when nothing happens, each report after a Handler.Sync
	// when something was stored since the last. Default 10s.
	StatusInterval time.Duration
	// IdleInterval bounds how often a quiet feed persists an advanced
	// position through Handler.Idle. Default 1s.
	IdleInterval time.Duration
	// MaxBackoff caps the wait between reconnection attempts. Default 5s.
	MaxBackoff time.Duration
	// GroupDelay bounds how long a committed transaction may wait to be
	// stored together with the ones that follow it (group commit). The feed
	// flushes sooner when the stream pauses. Default 10ms.
	GroupDelay time.Duration
	// SentGroupDelay replaces GroupDelay for a group of which nothing
	// waits for the store write (Handler.Waiting) while transactions keep
	// coming (the last group was stored less than SentGroupDelay ago):
	// every delivery's first attempt has started, so gathering more
	// transactions into one write delays only what the store shows, and
	// makes the write cheaper per transaction. Default 100ms. GroupDelay
	// is cut to it when longer.
	SentGroupDelay time.Duration
	// GroupSize bounds how many transactions are stored together.
	// Default 1000.
	GroupSize int
	// HeartbeatInterval, when positive, makes the streaming relay write a
	// non-transactional logical message (pg_logical_emit_message) this
	// often, so that the slot advances even on a database where nothing
	// at all is written. 0 turns heartbeats off.
	HeartbeatInterval time.Duration
	// WALCheckInterval is how often the streaming relay reads how much WAL
	// its slot retains. Default 1m.
	WALCheckInterval time.Duration
	// RetainedWALWarn is the retained WAL, in bytes, above which each check
	// logs a warning. 0 never warns.
	RetainedWALWarn int64
	// OnSlotStatus, when set, receives the slot's status after each check
	// (for metrics). It is called from the streaming goroutine and must
	// not block.
	OnSlotStatus func(SlotStatus)
	// StopGrace bounds how long a stop waits for the feed to finish what
	// it is doing: a call of the Handler in progress, the rest of the
	// transaction being read when committed ones wait to be stored behind
	// it, and the store write of those (see stream.loop). Default 5s.
	StopGrace time.Duration
	// Logger receives the feed's log lines; nil discards them.
	Logger *slog.Logger
}

func (c *Config) withDefaults() {
	if c.StatusInterval <= 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.IdleInterval <= 0 {
		c.IdleInterval = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.GroupDelay <= 0 {
		c.GroupDelay = 10 * time.Millisecond
	}
	if c.SentGroupDelay <= 0 {
		c.SentGroupDelay = 100 * time.Millisecond
	}
	// A group that deliveries wait for is never held longer than one
	// that none waits for.
	c.GroupDelay = min(c.GroupDelay, c.SentGroupDelay)
	if c.GroupSize <= 0 {
		c.GroupSize = 1000
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 5 * time.Second
	}
	if c.WALCheckInterval <= 0 {
		c.WALCheckInterval = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// State is what the Handler remembers of the feed's position.
type State int

// The states of the Handler's persisted position.
const (
	// StateNone: the relay has never created its slot.
	StateNone State = iota
	// StateSeeding: the relay began creating its slot but never finished
	// recording its starting point. A slot in this state was never
	// confirmed, so it is safe to recreate it.
	StateSeeding
	// StateReady: the position is valid; the slot must exist, and it is
	// never confirmed past the position, which the Handler stores before
	// the feed confirms it (see Sync). A slot confirmed past it means that
	// the Handler's store lost what it had made durable (restored from an
	// older backup) or that someone advanced the slot: the changes in
	// between are gone, and the feed stops (ErrPositionBehind).
	StateReady
	// StateReadyUnbound: as StateReady, but the position was stored by a
	// Handler that could let the slot be confirmed a little past it (an
	// earlier version of the relay): a slot confirmed past it proves
	// nothing, and the feed resumes from the slot's position.
	StateReadyUnbound
)

// Handler consumes the feed and owns its durable position. Calls come from
// one goroutine, in stream order.
type Handler interface {
	// Position returns the persisted position and its state.
	Position(ctx context.Context) (event.LSN, State, error)
	// MarkSeeding records that the slot is about to be (re)created.
	MarkSeeding(ctx context.Context) error
	// Seed is called once, right after the slot is created, with a reader
	// that sees exactly the data as of the slot's consistent point. It
	// records whatever state the Handler needs and persists start as its
	// position, in one transaction of its own store.
	Seed(ctx context.Context, snapshot *Snapshot, start event.LSN) error
	// Begin starts a committed source transaction; Change delivers its row
	// changes in order; Commit ends it. A committed transaction may stay
	// pending, so that several are made durable together.
	Begin(ctx context.Context, tx event.Tx) error
	Change(ctx context.Context, c *event.Change) error
	Commit(ctx context.Context, tx event.Tx) error
	// Message passes a transactional logical decoding message of the
	// transaction being read (pg_logical_emit_message), in its place
	// among the transaction's changes. The feed asks for them from
	// PostgreSQL 14 on. content is valid only during the call.
	Message(ctx context.Context, prefix string, content []byte) error
	// Flush stores every transaction passed to Commit, with the position
	// past the last one. It is called only between transactions. What it
	// stored need not be durable yet: the feed confirms the position only
	// after a Sync. It may return while its write still runs; the Handler
	// then stores later groups after it, finishes it before any later
	// Idle stores or Sync returns, and one of them (or a later Flush)
	// returns its error.
	Flush(ctx context.Context) error
	// Idle stores lsn as the position when no transaction is open or
	// pending and all before it has been handled; the feed confirms it
	// after a Sync. A Handler may put off storing it while a write of its
	// own is still running (see Flush): everything before lsn is handled
	// all the same, and the next Sync waits for that write and then
	// stores lsn, so that the position stored is never behind the one
	// confirmed.
	Idle(ctx context.Context, lsn event.LSN) error
	// Full reports, after a Commit, whether the transactions committed
	// since the last Flush are enough for one store write: the feed then
	// flushes at once instead of gathering more (GroupDelay, GroupSize).
	Full() bool
	// Waiting reports whether something of the transactions committed
	// since the last Flush waits for their store write (a delivery whose
	// first attempt waits for it): the feed then flushes as soon as the
	// stream is quiet. Otherwise it gathers transactions for up to
	// GroupDelay, so that one store write records more of them.
	Waiting() bool
	// Sync makes everything Flush and Idle stored so far durable. The feed
	// calls it before it reports a position it has not reported yet (every
	// StatusInterval, and when the server asks), so its cost is paid once
	// per report, not once per transaction.
	Sync(ctx context.Context) error
}
