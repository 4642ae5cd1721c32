package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// hotParams are the settings of the hot pool's connections (Store.hot),
// for the hot statements: storing events and their deliveries, row state,
// the position, claims, attempt records.
//
// They use their prepared statement's generic plan instead of planning
// each execution for its parameters, and never scan a whole table:
// planning them anew for every batch cost PostgreSQL more than executing
// them. A generic plan is made once, often while the tables are nearly
// empty, when a sequential scan looks cheapest, and is kept as they grow:
// with sequential scans off it is made of the keyed lookups these
// statements are written for (TestRecordPlanUsesPrimaryKey,
// TestClaimPlanReadsNoWholeTable). Other statements run on the main pool
// and keep custom plans: some need a parameter's value to use a partial
// index.
//
// Their commits do not wait for the disk (see hotStatement and Writer);
// a statement that must be durable runs after durableSQL in its
// transaction. As session settings they cost no statement: setting them
// per transaction was one more statement for every source transaction.
var hotParams = map[string]string{
	"plan_cache_mode":    "force_generic_plan",
	"enable_seqscan":     "off",
	"synchronous_commit": "off",
	// A scan the statement cannot avoid (a table of one row) is costed
	// with sequential scans off as if it read billions of rows, which
	// would make PostgreSQL compile the whole plan just in time, about a
	// second per execution, for statements that run in microseconds.
	"jit": "off",
}

// durableSQL makes the commit of its transaction on a hot connection wait
// for the disk, whatever the server's default.
const durableSQL = `SELECT set_config('synchronous_commit', 'on', true)`

// commitMode says whether a hotStatement's commit waits for the disk.
type commitMode int

const (
	// durable waits for the transaction's WAL to reach the disk.
	durable commitMode = iota
	// async does not.
	async
)

// hotStatement runs one statement on the hot pool, in a transaction of
// its own, in one round trip, and hands its rows to read (nil: none are
// wanted). In async mode its commit does not wait for its WAL to reach
// the disk. Attempt records and given-back claims commit this way: a
// PostgreSQL crash can forget the last fraction of a second of them. A
// forgotten record leaves its delivery leased to the sender that made the
// attempt, so it is sent again under the same id once that lease expires
// (as when a relay dies between an attempt and its record), and never while
// the attempt could still be in flight; a forgotten give-back only delays a
// delivery until its lease expires. Claims always wait for the disk; so do
// events, deliveries and the replication position before the slot is
// confirmed past them (see Store.Sync).
func (s *Store) hotStatement(ctx context.Context, mode commitMode, sql string, args []any, read func(pgx.Rows) error) error {
	if mode == async {
		rows, err := s.hot.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		return readRows(rows, read)
	}
	b := &pgx.Batch{}
	b.Queue(durableSQL)
	b.Queue(sql, args...)
	br := s.hot.SendBatch(ctx, b)
	err := readStatement(br, read)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// readStatement reads the answers of a settings statement and then of the
// statement after it, whose rows go to read (nil: none are wanted).
func readStatement(br pgx.BatchResults, read func(pgx.Rows) error) error {
	if _, err := br.Exec(); err != nil {
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	return readRows(rows, read)
}

// readRows hands rows to read (nil: none are wanted) and reports the
// first error of either.
func readRows(rows pgx.Rows, read func(pgx.Rows) error) error {
	if read != nil {
		if err := read(rows); err != nil {
			return err
		}
	}
	rows.Close()
	return rows.Err()
}
