// Package event is the relay's shared vocabulary: the row changes that the
// change feed decodes, and the webhook events that the mapper derives from
// them. Every stage imports it; it imports no other package of the relay, so
// the stages never depend on each other sideways.
package event

import (
	"fmt"
	"time"
)

// LSN is a PostgreSQL write-ahead log position.
type LSN uint64

// String formats the LSN the way PostgreSQL does (for example "16/B374D848").
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses PostgreSQL's textual LSN form.
func ParseLSN(s string) (LSN, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return LSN(uint64(hi)<<32 | uint64(lo)), nil
}

// Op is the kind of a row change.
type Op string

// The operations the change feed reports.
const (
	Insert   Op = "insert"
	Update   Op = "update"
	Delete   Op = "delete"
	Truncate Op = "truncate"
)

// Row holds column values by column name. Values are normalised to what
// encoding/json and the rule language handle: nil, bool, int64, float64,
// string (text, enums, numerics, UUIDs, timestamps in RFC 3339), []any and
// map[string]any (json/jsonb and arrays).
type Row map[string]any

// Tx is a committed source transaction.
type Tx struct {
	// CommitLSN is the LSN of the transaction's commit record. It orders
	// transactions and, with an index, identifies the events they produce.
	CommitLSN LSN
	// EndLSN is the position just past the commit record: once the changes of
	// this transaction are durable, the slot may be confirmed up to EndLSN.
	// It is known only when the commit message arrives.
	EndLSN LSN
	// CommitTime is the transaction's commit time as the server recorded it.
	CommitTime time.Time
	// SentAt is when the server sent the transaction's first message, by
	// the server's clock: SentAt - CommitTime is the server's part of the
	// feed's delay (the commit's WAL flush, decoding, the walsender's
	// turn). Zero when not known.
	SentAt time.Time
	XID    uint32
}

// Change is one decoded row change of a committed transaction.
type Change struct {
	CommitLSN  LSN
	CommitTime time.Time
	// Seq is the change's index within its transaction, starting at 0.
	Seq    int
	Schema string
	Table  string
	Op     Op
	// New holds the new row for inserts and updates. Columns listed in
	// Unchanged are absent from it.
	New Row
	// Old holds the previous row of an update or the deleted row, as far as
	// the server sent it: the replica identity's key columns by default, the
	// whole row with REPLICA IDENTITY FULL, nothing when the key did not
	// change. For a truncate, New and Old are nil.
	Old Row
	// Unchanged lists the columns of New whose value is an unchanged TOAST
	// value that the server did not send. They are unknown, never null.
	Unchanged []string
}

// IsUnchanged reports whether col's value was not sent because it is an
// unchanged TOAST value.
func (c *Change) IsUnchanged(col string) bool {
	for _, u := range c.Unchanged {
		if u == col {
			return true
		}
	}
	return false
}

// Event is one webhook event derived from a change, with its payload bytes
// fixed: every delivery and every retry of it sends exactly Body.
type Event struct {
	Type      string
	CompanyID int64
	// CommitLSN and Seq (the event's index within its transaction) identify
	// the event across restarts and replays of the same transaction.
	CommitLSN  LSN
	Seq        int
	CommitTime time.Time
	// Table and Op name the change the event came from, for logs and traces.
	Table string
	Op    Op
	Body  []byte
	// TraceParent is the W3C traceparent of the event's trace, stored with
	// the event so that every attempt of its deliveries joins that trace.
	// Empty when the event is not traced.
	TraceParent string
}
