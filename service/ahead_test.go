package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

// statePool opens the relay's state database.
func (e *relayEnv) statePool() *pgxpool.Pool {
	e.t.Helper()
	p, err := pgxpool.New(context.Background(), e.cfg.Database.StateDatabaseURL())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(p.Close)
	return p
}

// lockTable takes a table lock (the statement lock) in a transaction of
// its own, held until it is rolled back, at the latest when the test ends.
func lockTable(t *testing.T, state *pgxpool.Pool, lock string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := state.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, lock); err != nil {
		t.Fatal(err)
	}
	return tx
}

// startAhead starts a relay that makes no position report during the test
// (each waits for the writes in flight and ends their waits for first
// attempts), and has it send and store a first event, so that it has read
// the webhooks. It returns the relay and its state database.
func startAhead(t *testing.T) (*relayEnv, *pgxpool.Pool) {
	t.Helper()
	e := newRelay(t)
	e.cfg.Replication.StatusInterval = time.Minute
	e.start()
	state := e.statePool()
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 1)`)
	e.waitEvents("/one", "audit.exported", 1)
	e.waitFor("the first delivery stored", func() bool {
		var n int
		err := state.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE status = 'delivered'`).Scan(&n)
		return err == nil && n == 1
	})
	return e, state
}

// TestFirstAttemptGoesAheadOfTheStore: a delivery's first attempt does not
// wait for the store write that records it. With the write held up (its
// events table locked), the receiver still gets the event, under the id
// the delivery is then stored under; once the write goes through, the
// attempt is recorded as the delivery's first and only one. The feed
// reads on meanwhile, and sends the next transaction's delivery ahead too.
// (The write is held up by a lock on the events table, which it inserts
// into and nothing else on the relay's road to the receiver touches.)
func TestFirstAttemptGoesAheadOfTheStore(t *testing.T) {
	e, state := startAhead(t)
	ctx := context.Background()

	lock := lockTable(t, state, `LOCK TABLE relay.events IN SHARE MODE`)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 2)`)
	got := e.waitEvents("/one", "audit.exported", 2)
	if got[1].Data["row_count"] != float64(2) {
		t.Fatalf("second event %v", got[1].Data)
	}
	// The feed reads on while that write is held up: the next transaction
	// goes out too.
	// (Within 5 s: the held-up write gives up after 10, and the session
	// that starts again reads the transaction anew.)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 3)`)
	sent := time.Now()
	got = e.waitEvents("/one", "audit.exported", 3)
	if waited := time.Since(sent); waited > 5*time.Second {
		t.Fatalf("the next transaction went out %v after its commit, behind the held-up write", waited)
	}
	if got[2].Data["row_count"] != float64(3) {
		t.Fatalf("third event %v", got[2].Data)
	}
	var ids []string
	for _, r := range e.recv.requests("/one")[1:] {
		ids = append(ids, r.Header.Get("X-SMTM-Delivery"))
	}
	var stored int
	if err := state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries WHERE id = ANY($1::uuid[])`, ids).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Fatalf("%d of deliveries %v stored while their store write was held up", stored, ids)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	for _, id := range ids {
		var status string
		var attempts, rows int
		e.waitFor("the delivery sent ahead recorded", func() bool {
			err := state.QueryRow(ctx, `SELECT d.status, d.attempts, (SELECT count(*) FROM relay.attempts a WHERE a.delivery_id = d.id)
				FROM relay.deliveries d WHERE d.id = $1`, id).Scan(&status, &attempts, &rows)
			return err == nil && status == "delivered"
		})
		if attempts != 1 || rows != 1 {
			t.Fatalf("delivery %s: %d attempts, %d attempt rows; want 1 and 1", id, attempts, rows)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.recv.requests("/one")); n != 3 {
		t.Fatalf("receiver got %d requests, want 3 (those sent ahead are not sent again once stored)", n)
	}
}

// TestWriteWaitsForTheFirstAttempt: the store write of a delivery sent
// ahead waits for its attempt (one that ends within relay's slowAttempt,
// 100 ms), so that it stores the delivery with its result, as one insert:
// while the receiver takes its time, the delivery is not in the store at
// all, and it appears there delivered, never pending.
func TestWriteWaitsForTheFirstAttempt(t *testing.T) {
	e, state := startAhead(t)
	ctx := context.Background()

	const takes = 50 * time.Millisecond
	e.recv.setRespond(func(_ request, n int) int {
		if n == 2 {
			time.Sleep(takes)
		}
		return 200
	})
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 2)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		var statuses string
		err := state.QueryRow(ctx, `SELECT count(*), string_agg(status, ',' ORDER BY status) FROM relay.deliveries`).Scan(&n, &statuses)
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			if statuses != "delivered,delivered" {
				t.Fatalf("deliveries %s: the second was stored before its attempt was over, to be updated after", statuses)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second delivery was never stored")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.recv.requests("/one"); len(got) != 2 {
		t.Fatalf("receiver got %d requests, want 2", len(got))
	}
	var attempts, rows int
	if err := state.QueryRow(ctx, `SELECT max(d.attempts), (SELECT count(*) FROM relay.attempts) FROM relay.deliveries d`).Scan(&attempts, &rows); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 || rows != 2 {
		t.Fatalf("%d attempts at most, %d attempt rows; want 1 and 2", attempts, rows)
	}
}

// TestDisabledWebhookGetsNothingAhead: a webhook disabled in the table is
// not sent an event committed after that, although the relay's copy of the
// webhooks, read for an earlier event, still had it active: with the state
// in the platform's database (the change comes in the feed) and in a
// database of its own (the relay checks the webhooks' version).
func TestDisabledWebhookGetsNothingAhead(t *testing.T) {
	for _, separate := range []bool{false, true} {
		t.Run(map[bool]string{false: "state in the platform database", true: "separate state database"}[separate], func(t *testing.T) {
			e := newRelay(t)
			if separate {
				e.cfg.Database.StateURL = pgtest.NewDatabase(t)
			}
			e.start()
			state := e.statePool()
			ctx := context.Background()

			e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 1)`)
			e.waitEvents("/one", "audit.exported", 1)
			if _, err := state.Exec(ctx, `UPDATE relay.webhooks SET active = false WHERE company_id = 1`); err != nil {
				t.Fatal(err)
			}
			e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 2)`)
			// Company 2's event, committed after, is the fence: once it is
			// in, company 1's was decided.
			e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (2, 6, 3)`)
			e.waitEvents("/two", "audit.exported", 1)
			time.Sleep(200 * time.Millisecond)
			if got := e.recv.requests("/one"); len(got) != 1 {
				t.Fatalf("the disabled webhook got %d requests, want only the one from before it was disabled", len(got))
			}
			var n int
			if err := state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.company_id = 1`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d deliveries stored for the disabled webhook, want 1", n)
			}
		})
	}
}

// TestWebhookChangesComeInTheFeed: with the relay's state in the database
// it streams, the webhooks' changes come in the change feed, so deciding
// which webhooks take an event costs no query: with the webhooks' version
// locked away, events are still sent ahead of their store write.
func TestWebhookChangesComeInTheFeed(t *testing.T) {
	e := newRelay(t)
	e.start()
	state := e.statePool()
	ctx := context.Background()
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 1)`)
	e.waitEvents("/one", "audit.exported", 1)
	e.waitFor("the session's probe back from the feed", func() bool {
		return strings.Contains(e.logs.String(), "the webhooks' changes come in the change feed")
	})
	// Its store write, which reads the version, is over: one still in
	// flight would wait for the lock, and so would the next position
	// report (it waits for the writes in flight) and the feed behind it.
	e.waitFor("the first event stored", func() bool {
		var n int
		return state.QueryRow(ctx, `SELECT count(*) FROM relay.events`).Scan(&n) == nil && n == 1
	})

	lock := lockTable(t, state, `LOCK TABLE relay.webhooks_version IN ACCESS EXCLUSIVE MODE`)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 2)`)
	e.waitEvents("/one", "audit.exported", 2)
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLargeTransactionGoesAheadOfItsParts: the deliveries of a source
// transaction too large to be read whole (stored in parts as it is read)
// go out as each chunk of it is mapped, ahead of the part that stores
// them. With the parts' writes held up (the events table locked), the
// receiver gets the first chunk's deliveries (all of them while the
// receiver's answers are quick) while none is stored; once
// the writes go through, every delivery is stored delivered after one
// attempt, and none was sent twice.
func TestLargeTransactionGoesAheadOfItsParts(t *testing.T) {
	const rows = 3000 // a chunk of 2,000 changes and the rest
	e := newRelay(t)
	e.cfg.Replication.StatusInterval = time.Minute
	e.cfg.Webhooks.Endpoints[0].Events = []string{"task.completed"}
	e.exec(`INSERT INTO tasks (company_id, title) SELECT 1, 'bulk ' || g FROM generate_series(1, $1::int) g`, rows)
	e.start()
	state := e.statePool()
	ctx := context.Background()

	lock := lockTable(t, state, `LOCK TABLE relay.events IN SHARE MODE`)
	e.exec(`UPDATE tasks SET status = 'completed'`)
	// Deliveries go ahead while the webhook's attempts are quick; when a
	// slow one (a loaded machine) makes the dispatcher leave the rest of
	// the chunk to the part's write, they wait for the lock as the part
	// does. So: the first ones arrive, then the stream stops or the whole
	// chunk is out, and none is stored yet.
	e.waitFor("the first chunk's first deliveries", func() bool { return len(e.recv.requests("/one")) > 0 })
	ahead := len(e.recv.requests("/one"))
	for deadline := time.Now().Add(30 * time.Second); ahead < 2000 && time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		n := len(e.recv.requests("/one"))
		if n == ahead {
			break
		}
		ahead = n
	}
	t.Logf("%d deliveries went out while the parts' writes were held up", ahead)
	var stored int
	if err := state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Fatalf("%d deliveries stored while the parts' writes were held up", stored)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	e.waitFor("every delivery stored delivered", func() bool {
		var n int
		err := state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries WHERE status = 'delivered'`).Scan(&n)
		return err == nil && n == rows
	})
	var other int
	if err := state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries WHERE attempts <> 1`).Scan(&other); err != nil {
		t.Fatal(err)
	}
	if other != 0 {
		t.Fatalf("%d deliveries with other than one attempt", other)
	}
	time.Sleep(300 * time.Millisecond)
	reqs := e.recv.requests("/one")
	seen := map[string]bool{}
	for _, r := range reqs {
		id := r.Header.Get("X-SMTM-Delivery")
		if seen[id] {
			t.Fatalf("delivery %s sent twice", id)
		}
		seen[id] = true
	}
	if len(reqs) != rows {
		t.Fatalf("receiver got %d requests, want %d", len(reqs), rows)
	}
}
