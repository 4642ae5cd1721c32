package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/ingest"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/storetest"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestCloseReleasesAnOpenTransaction: when the feed stops in the middle of
// a source transaction, Close rolls back its store transaction, so the
// store's pool can close (before, a relay stopped under load hung in
// store.Close).
func TestCloseReleasesAnOpenTransaction(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	m, err := mapper.New(mapper.DefaultRules(), mapper.Options{DefaultLocation: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	in := ingest.New(st, m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: 1})
	tx := event.Tx{CommitLSN: 100, CommitTime: time.Now()}
	if err := in.Begin(ctx, tx); err != nil {
		t.Fatal(err)
	}
	// Chunks of one: the first change is written when the second comes,
	// in an open store transaction.
	for id := range int64(2) {
		c := &event.Change{CommitLSN: 100, CommitTime: tx.CommitTime, Table: "users", Op: event.Insert,
			New: event.Row{"id": id + 1, "company_id": int64(1), "email": "a@b.example", "full_name": "A", "role": "technician", "active": true}}
		if err := in.Change(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	in.Close(cancelled)
	closed := make(chan struct{})
	go func() { st.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("store.Close hangs: the ingester's transaction still holds a connection")
	}
}

// fixture is an ingester on a fresh store whose recorded state holds n
// active users of company 1.
type fixture struct {
	t   *testing.T
	st  *store.Store
	m   *mapper.Mapper
	in  *ingest.Ingester
	lsn event.LSN
}

func newFixture(t *testing.T, users int, chunk int) *fixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t)
	m, err := mapper.New(mapper.DefaultRules(), mapper.Options{DefaultLocation: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st, m: m, lsn: 1000}
	subscribeAll(t, st, m)
	if err := st.MarkSeeding(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	err = st.Seed(ctx, "s", f.lsn, func(yield func(store.StateRow) error) error {
		for id := 1; id <= users; id++ {
			r := user(id, true)
			key, _ := m.RowKey(&event.Change{Table: "users", Op: event.Insert, New: r})
			if err := yield(store.StateRow{Table: "users", Key: key, Vals: m.State("users", r)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.in = ingest.New(st, m, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: chunk})
	// Before the store closes (cleanups run last first): a test that fails
	// with a group open fails instead of hanging in store.Close.
	t.Cleanup(func() { f.in.Close(context.Background()) })
	f.start()
	return f
}

// subscribeAll adds a webhook of company 1 that takes every event type,
// so that every event of the company is stored (one that no webhook takes
// is not).
func subscribeAll(t *testing.T, st *store.Store, m *mapper.Mapper) {
	t.Helper()
	if _, err := st.Pool().Exec(context.Background(), `INSERT INTO relay.webhooks (company_id, name, url, events, created_at)
		VALUES (1, 'all', 'https://example.com/all', $1, now() - interval '1 day')`, m.EventTypes()); err != nil {
		t.Fatal(err)
	}
}

// start begins a session, as the feed does after each (re)connection.
func (f *fixture) start() {
	f.t.Helper()
	if _, state, err := f.in.Position(context.Background()); err != nil || state != cdc.StateReady {
		f.t.Fatalf("position: %v %v", state, err)
	}
}

func user(id int, active bool) event.Row {
	return event.Row{"id": int64(id), "company_id": int64(1), "email": fmt.Sprintf("u%d@example.com", id),
		"full_name": fmt.Sprintf("User %d", id), "role": "technician", "active": active}
}

// set is one update: user id's active column becomes active.
type set struct {
	id     int
	active bool
}

// tx feeds one source transaction of updates, without flushing (the next
// transactions join the same group).
func (f *fixture) tx(updates ...set) {
	f.t.Helper()
	ctx := context.Background()
	f.lsn += 10
	tx := event.Tx{CommitLSN: f.lsn, EndLSN: f.lsn + 1, CommitTime: time.Now()}
	if err := f.in.Begin(ctx, tx); err != nil {
		f.t.Fatal(err)
	}
	for _, u := range updates {
		c := &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Table: "users", Op: event.Update, New: user(u.id, u.active)}
		if err := f.in.Change(ctx, c); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := f.in.Commit(ctx, tx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) flush() {
	f.t.Helper()
	if err := f.in.Flush(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

// deactivateAll deactivates users 1 to n in one transaction and commits it.
func (f *fixture) deactivateAll(n int) {
	f.t.Helper()
	all := make([]set, n)
	for i := range all {
		all[i] = set{i + 1, false}
	}
	f.tx(all...)
	f.flush()
}

func (f *fixture) deactivations() int {
	f.t.Helper()
	var n int
	if err := f.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM relay.events WHERE event_type = 'user.deactivated'`).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// Transactions of one group, and changes of one transaction, see the state
// that the ones before them left, though none of it is written yet.
func TestTransitionsWithinAGroup(t *testing.T) {
	f := newFixture(t, 3, 1000)
	f.tx(set{1, false})                // deactivated
	f.tx(set{1, false})                // an edit of an inactive user: nothing
	f.tx(set{1, true})                 // reactivated
	f.tx(set{1, false}, set{2, false}) // deactivated again, and user 2
	// One transaction, one chunk: off, on, off, off.
	f.tx(set{3, false}, set{3, true}, set{3, false}, set{3, false})
	f.flush()
	if got := f.deactivations(); got != 5 {
		t.Fatalf("%d user.deactivated, want 5", got)
	}
	// The next group starts from what this one committed.
	f.tx(set{1, false}, set{2, true})
	f.flush()
	if got := f.deactivations(); got != 5 {
		t.Fatalf("%d user.deactivated after edits that change nothing, want still 5", got)
	}
}

// A store transaction that is rolled back takes its row state with it: the
// ingester must not remember what it had written, or the replay of those
// source transactions would miss their transitions.
func TestRollbackForgetsState(t *testing.T) {
	f := newFixture(t, 2, 1) // chunks of one: written at once
	f.tx(set{1, false})
	// The connection is lost before the group commits; the session restarts
	// and the transaction is streamed again.
	f.in.Close(context.Background())
	f.start()
	f.lsn -= 10
	f.tx(set{1, false})
	f.flush()
	if got := f.deactivations(); got != 1 {
		t.Fatalf("%d user.deactivated after the replay, want 1", got)
	}
}

// More rows than the ingester keeps in memory: what it forgets is read
// again, and every transition is still seen exactly once.
func TestManyRows(t *testing.T) {
	const n = 25_000
	f := newFixture(t, n, 2000)
	all := func(active bool) []set {
		out := make([]set, n)
		for i := range out {
			out[i] = set{i + 1, active}
		}
		return out
	}
	f.tx(all(false)...)
	f.flush()
	f.tx(all(false)...) // no transition
	f.tx(all(true)...)
	f.flush()
	f.tx(all(false)...)
	f.flush()
	if got := f.deactivations(); got != 2*n {
		t.Fatalf("%d user.deactivated, want %d", got, 2*n)
	}
}

// One source transaction larger than what the ingester keeps in memory,
// with one row changed once in every chunk: each chunk is mapped while the
// previous one is written, from the state the previous one left (which
// the store does not have yet when the chunk's state is read), and rows
// changed long before are read again from the open store transaction.
func TestLargeTransactionAcrossChunks(t *testing.T) {
	const n, chunk = 5000, 100
	f := newFixture(t, n, chunk)
	// Memory for a chunk and a half: most of what a chunk leaves is
	// forgotten by the next.
	ingest.SetMaxKnown(f.in, 3*chunk/2)
	var changes []set
	hot, hotActive := 0, true // deactivations of user 1, and its state
	for id := 2; id <= n; id++ {
		changes = append(changes, set{id, false})
		if len(changes)%chunk == chunk-1 {
			// The last change of each chunk toggles user 1.
			hotActive = !hotActive
			if !hotActive {
				hot++
			}
			changes = append(changes, set{1, hotActive})
		}
	}
	f.tx(changes...)
	f.flush()
	if got, want := f.deactivations(), n-1+hot; got != want {
		t.Fatalf("%d user.deactivated, want %d", got, want)
	}
	// Deactivating everyone again finds a transition only if user 1's
	// last change left it active.
	f.deactivateAll(n)
	want := n - 1 + hot
	if hotActive {
		want++
	}
	if got := f.deactivations(); got != want {
		t.Fatalf("%d user.deactivated after deactivating everyone, want %d", got, want)
	}
}

// A large transaction's events are stored in parts as it is read. When the
// session ends before it commits, the replay stores the rest, numbered on
// from the parts, and never an event twice; the group's earlier
// transactions are committed before the first part.
func TestLargeTransactionInParts(t *testing.T) {
	const n, chunk = 500, 100
	f := newFixture(t, n, chunk)
	ctx := context.Background()
	// An earlier transaction of the same group.
	f.tx(set{n, false})
	begin := func() event.Tx {
		tx := event.Tx{CommitLSN: f.lsn + 10, EndLSN: f.lsn + 11, CommitTime: time.Now()}
		if err := f.in.Begin(ctx, tx); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	change := func(tx event.Tx, id int) {
		c := &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Table: "users", Op: event.Update, New: user(id, false)}
		if err := f.in.Change(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	tx := begin()
	for id := 1; id <= 350; id++ {
		change(tx, id)
	}
	// Three chunks mapped: three parts stored, and the earlier transaction
	// before them. (No sender takes a delivery ahead here, so each part
	// is stored before the next chunk is read.)
	if got := f.deactivations(); got != 1+3*chunk {
		t.Fatalf("%d user.deactivated stored while the transaction is read, want %d", got, 1+3*chunk)
	}
	parts, err := f.st.Parts(ctx, "s")
	if err != nil || parts[tx.CommitLSN].Changes != 3*chunk {
		t.Fatalf("parts %v, %v", parts, err)
	}
	// The connection is lost, and lost again while the transaction is
	// streamed a second time, before that reaches the parts' end: its first
	// part must not lower what the parts record.
	f.in.Close(ctx)
	f.start()
	tx = begin()
	for id := 1; id <= 150; id++ {
		change(tx, id)
	}
	f.in.Close(ctx)
	if parts, err := f.st.Parts(ctx, "s"); err != nil || parts[tx.CommitLSN].Changes != 3*chunk {
		t.Fatalf("parts after a replay stopped short of them: %v, %v", parts, err)
	}
	// The relay restarts with a rule more (each deactivation now also
	// fires user.created) and the transaction is streamed again, whole.
	// The stored parts stand; the rest follows the new rules, numbered on
	// from the parts.
	rules := mapper.DefaultRules()
	var deactivated mapper.Rule
	for _, r := range rules {
		if r.Event == "user.deactivated" {
			deactivated = r
		}
	}
	for i, r := range rules {
		if r.Event == "user.created" {
			rules[i].Table, rules[i].On, rules[i].When = deactivated.Table, deactivated.On, deactivated.When
		}
	}
	m2, err := mapper.New(rules, mapper.Options{DefaultLocation: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	f.in = ingest.New(f.st, m2, ingest.Options{Slot: "s", Tables: []string{"users"}, ChunkSize: chunk})
	f.start()
	tx = begin()
	for id := 1; id < n; id++ {
		change(tx, id)
	}
	if err := f.in.Commit(ctx, tx); err != nil {
		t.Fatal(err)
	}
	f.lsn += 10
	f.flush()
	if got := f.deactivations(); got != n {
		t.Fatalf("%d user.deactivated after the replay, want %d (each user once)", got, n)
	}
	// The parts' users (1 to 300) have their one event from the first run;
	// the others two each, under the new rules.
	var stored, created, early int
	f.st.Pool().QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE event_type = 'user.created'),
			count(*) FILTER (WHERE (convert_from(body, 'UTF8')::jsonb #>> '{data,user_id}')::int <= $2 AND event_type = 'user.created')
		FROM relay.events WHERE commit_lsn = $1`,
		int64(tx.CommitLSN), 3*chunk).Scan(&stored, &created, &early)
	if rest := n - 1 - 3*chunk; stored != 3*chunk+2*rest || created != rest || early != 0 {
		t.Fatalf("%d events of the transaction (%d user.created, %d of them for the parts' users), want %d (%d, 0)",
			stored, created, early, 3*chunk+2*rest, rest)
	}
	if parts, err := f.st.Parts(ctx, "s"); err != nil || len(parts) != 0 {
		t.Fatalf("parts left after the commit: %v, %v", parts, err)
	}
	// The row state is the transaction's: nobody is active any more.
	f.deactivateAll(n)
	if got := f.deactivations(); got != n {
		t.Fatalf("%d user.deactivated after deactivating everyone again, want still %d", got, n)
	}
}

// A truncate in a large transaction ends its parts: what follows goes to
// the store transaction with the truncate. A replay after a lost session
// stores what the parts did not, exactly as a run without the loss does.
func TestLargeTransactionWithTruncate(t *testing.T) {
	const n, chunk = 500, 100
	run := func(lose bool) (events int, distinct int) {
		f := newFixture(t, n, chunk)
		ctx := context.Background()
		tx := event.Tx{CommitLSN: f.lsn + 10, EndLSN: f.lsn + 11, CommitTime: time.Now()}
		feed := func(upTo int) {
			if err := f.in.Begin(ctx, tx); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= upTo; i++ {
				c := &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Table: "users", Op: event.Update, New: user(i, false)}
				if i == 250 {
					c = &event.Change{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Table: "users", Op: event.Truncate}
				}
				if err := f.in.Change(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
		}
		if lose {
			feed(450) // two parts, the truncate's chunk, one more chunk, half a chunk
			f.in.Close(ctx)
			f.start()
		}
		feed(n)
		if err := f.in.Commit(ctx, tx); err != nil {
			t.Fatal(err)
		}
		f.flush()
		f.st.Pool().QueryRow(ctx, `SELECT count(*), count(DISTINCT body) FROM relay.events WHERE commit_lsn = $1`, int64(tx.CommitLSN)).Scan(&events, &distinct)
		return events, distinct
	}
	wantEvents, wantDistinct := run(false)
	if wantEvents == 0 || wantEvents != wantDistinct {
		t.Fatalf("reference run: %d events, %d distinct", wantEvents, wantDistinct)
	}
	if got, distinct := run(true); got != wantEvents || distinct != wantDistinct {
		t.Fatalf("after a lost session: %d events (%d distinct), want %d (%d)", got, distinct, wantEvents, wantDistinct)
	}
}

// Full says a group is to be stored once the deliveries it will make reach
// GroupDeliveries, counting as many per event as the last write made.
func TestFullCountsTheDeliveriesAGroupWillMake(t *testing.T) {
	f := newFixture(t, 10, 1000)
	f.in = ingest.New(f.st, f.m, ingest.Options{Slot: "s", Tables: []string{"users"}, GroupDeliveries: 7})
	f.start()
	if _, err := f.st.Pool().Exec(context.Background(), `DELETE FROM relay.webhooks WHERE name = 'all'`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := f.st.Pool().Exec(context.Background(), `INSERT INTO relay.webhooks (company_id, name, url, events, created_at)
			VALUES (1, $1, 'https://example.com/hook', '{user.deactivated}', now() - interval '1 day')`, fmt.Sprint("hook", i)); err != nil {
			t.Fatal(err)
		}
	}
	f.tx(set{1, false})
	if f.in.Full() {
		t.Fatal("one event, one delivery before any write: the group of 7 is full")
	}
	f.flush() // three deliveries: three per event from now on
	f.tx(set{2, false})
	f.tx(set{3, false})
	if f.in.Full() {
		t.Fatal("two events, six deliveries: the group of 7 is full")
	}
	f.tx(set{4, false})
	if !f.in.Full() {
		t.Fatal("three events, nine deliveries: the group of 7 is not full")
	}
	f.flush()
	if f.in.Full() {
		t.Fatal("an empty group is full")
	}
	var n int
	if err := f.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 12 {
		t.Fatalf("%d deliveries stored, want 12", n)
	}
}
