package cdc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// memHandler keeps its position in memory and records what it is given.
type memHandler struct {
	mu        sync.Mutex
	pos       event.LSN
	state     cdc.State
	seeded    map[string][]event.Row
	open      []*event.Change
	staged    []*event.Change
	stagedTx  []event.Tx
	changes   []*event.Change
	txs       []event.Tx
	idles     int
	failAfter int // fail Commit when len(txs) reaches this (0 = never)
	// synced is the position the last Sync made durable; failSync makes
	// Sync fail.
	synced   event.LSN
	syncs    int
	failSync bool
	// fullAt makes Full true once this many transactions are staged (0:
	// never).
	fullAt int
	// seedColumns are the columns Seed reads (default id and status).
	seedColumns []string
}

func (h *memHandler) MarkSeeding(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state = cdc.StateSeeding
	return nil
}

func (h *memHandler) Seed(ctx context.Context, snap *cdc.Snapshot, start event.LSN) error {
	seeded := map[string][]event.Row{}
	cols := h.seedColumns
	if cols == nil {
		cols = []string{"id", "status"}
	}
	err := snap.Scan(ctx, "items", cols, func(r event.Row) error {
		seeded["items"] = append(seeded["items"], r)
		return nil
	})
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seeded, h.pos, h.state = seeded, start, cdc.StateReady
	return nil
}

func (h *memHandler) Begin(context.Context, event.Tx) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open = nil
	return nil
}

func (h *memHandler) Position(context.Context) (event.LSN, cdc.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.staged, h.stagedTx, h.open = nil, nil, nil // a new session starts from what is durable
	return h.pos, h.state, nil
}

func (h *memHandler) Change(_ context.Context, c *event.Change) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open = append(h.open, c)
	return nil
}

func (h *memHandler) Commit(_ context.Context, tx event.Tx) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.staged = append(h.staged, h.open...)
	h.open = nil
	h.stagedTx = append(h.stagedTx, tx)
	return nil
}

func (h *memHandler) Flush(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failAfter > 0 && len(h.txs) >= h.failAfter {
		h.staged, h.stagedTx = nil, nil // lost with the store transaction
		return errors.New("store unavailable")
	}
	h.changes = append(h.changes, h.staged...)
	h.txs = append(h.txs, h.stagedTx...)
	if n := len(h.stagedTx); n > 0 {
		h.pos = h.stagedTx[n-1].EndLSN
	}
	h.staged, h.stagedTx = nil, nil
	return nil
}

func (h *memHandler) Idle(_ context.Context, lsn event.LSN) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pos = lsn
	h.idles++
	return nil
}

func (h *memHandler) Waiting() bool { return true }

func (h *memHandler) Message(context.Context, string, []byte) error { return nil }

func (h *memHandler) Full() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fullAt > 0 && len(h.stagedTx) >= h.fullAt
}

func (h *memHandler) Sync(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failSync {
		return errors.New("store cannot sync")
	}
	h.synced = h.pos
	h.syncs++
	return nil
}

func (h *memHandler) snapshot() ([]*event.Change, []event.Tx, event.LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*event.Change(nil), h.changes...), append([]event.Tx(nil), h.txs...), h.pos
}

const schema = `
CREATE TABLE items (id bigint PRIMARY KEY, status text NOT NULL, note text, qty int, price numeric(10,2),
	due timestamptz, tags text[], meta jsonb, flag boolean);
CREATE TABLE other (id bigint PRIMARY KEY, v text);
INSERT INTO items (id, status) VALUES (1, 'open'), (2, 'done');`

type env struct {
	t    *testing.T
	url  string
	conn *pgx.Conn
	h    *memHandler
	slot string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := pgtest.NewDatabase(t, schema)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &env{t: t, url: url, conn: conn, h: &memHandler{}, slot: "test_slot"}
}

func (e *env) config() cdc.Config {
	return cdc.Config{URL: e.url, Slot: e.slot, Publication: "test_pub", Tables: []string{"items"},
		StatusInterval: 100 * time.Millisecond, IdleInterval: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
}

// start runs a Source until the returned stop function is called.
func (e *env) start(h cdc.Handler) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel) // also if it never streams
	done := e.run(ctx, e.config(), h)
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	e.t.Cleanup(func() { stop() })
	return stop
}

// run runs a Source with cfg until ctx ends, and returns once it streams;
// Run's error comes on the channel returned.
func (e *env) run(ctx context.Context, cfg cdc.Config, h cdc.Handler) <-chan error {
	done := make(chan error, 1)
	go func() { done <- cdc.New(cfg).Run(ctx, h) }()
	// Changes committed before the slot exists are, rightly, not streamed:
	// wait until it is being streamed.
	// The slot is active already while it is being created, before its
	// consistent point: wait until the handler recorded that point too.
	waitFor(e.t, "slot streaming", func() bool {
		st, err := cdc.Slot(context.Background(), e.conn, e.slot)
		return err == nil && st.Active && e.h.ready()
	})
	return done
}

// outage stops the shared server for d, calls during (when not nil) just
// before starting it again, and reconnects e.conn.
func (e *env) outage(d time.Duration, during func()) {
	e.t.Helper()
	e.conn.Close(context.Background())
	srv := pgtest.Shared(e.t)
	if err := srv.StopServer(context.Background(), "fast"); err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(d)
	if during != nil {
		during()
	}
	if err := srv.StartServer(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.conn = conn
}

// logged returns e's config with a logger that keeps what it logs, and a
// function that reads that.
func (e *env) logged() (cdc.Config, func() string) {
	var buf bytes.Buffer
	var mu sync.Mutex
	cfg := e.config()
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	return cfg, func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.conn.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) waitChanges(n int) []*event.Change {
	e.t.Helper()
	var got []*event.Change
	waitFor(e.t, "changes", func() bool {
		got, _, _ = e.h.snapshot()
		return len(got) >= n
	})
	return got
}

func (e *env) confirmed() event.LSN {
	e.t.Helper()
	st, err := cdc.Slot(context.Background(), e.conn, e.slot)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.ConfirmedFlush
}

func TestSeedAndDecode(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	waitFor(t, "slot ready", func() bool { return e.h.ready() })
	if got := len(e.h.seeded["items"]); got != 2 {
		t.Fatalf("seeded %d rows, want 2", got)
	}
	if e.h.seeded["items"][0]["id"] != int64(1) || e.h.seeded["items"][0]["status"] != "open" {
		t.Fatalf("seeded row = %v", e.h.seeded["items"][0])
	}

	e.exec(`INSERT INTO items (id, status, note, qty, price, due, tags, meta, flag)
		VALUES (3, 'open', NULL, 7, 12.50, '2026-04-24 09:15:30+07', '{a,b}', '{"k": [1, "x"]}', true)`)
	e.exec(`UPDATE items SET status = 'done' WHERE id = 3`)
	e.exec(`DELETE FROM items WHERE id = 3`)
	e.exec(`INSERT INTO other VALUES (1, 'not published')`)
	got := e.waitChanges(3)

	ins := got[0]
	if ins.Op != event.Insert || ins.Table != "items" || ins.Schema != "public" || ins.Seq != 0 {
		t.Fatalf("insert = %+v", ins)
	}
	want := event.Row{"id": int64(3), "status": "open", "note": nil, "qty": int64(7), "price": "12.50",
		"due": "2026-04-24T02:15:30Z", "tags": []any{"a", "b"}, "meta": map[string]any{"k": []any{float64(1), "x"}}, "flag": true}
	for k, v := range want {
		if !equal(ins.New[k], v) {
			t.Errorf("insert %s = %#v, want %#v", k, ins.New[k], v)
		}
	}
	if ins.CommitLSN == 0 || ins.CommitTime.IsZero() {
		t.Errorf("insert lacks commit position: %+v", ins)
	}
	upd := got[1]
	if upd.Op != event.Update || upd.New["status"] != "done" || upd.Old != nil {
		t.Fatalf("update = %+v (default replica identity sends no old row)", upd)
	}
	del := got[2]
	if del.Op != event.Delete || len(del.Old) != 1 || del.Old["id"] != int64(3) {
		t.Fatalf("delete = %+v, want key-only old row", del)
	}
	if !(ins.CommitLSN < upd.CommitLSN && upd.CommitLSN < del.CommitLSN) {
		t.Fatalf("commit LSNs not increasing: %s %s %s", ins.CommitLSN, upd.CommitLSN, del.CommitLSN)
	}
	changes, txs, _ := e.h.snapshot()
	if len(changes) != 3 {
		t.Fatalf("got %d changes, want 3 (unpublished table must not appear)", len(changes))
	}
	// The server's send time comes with each transaction, after its commit
	// and before the relay read it (the server runs on this machine's clock).
	for _, tx := range txs {
		if tx.SentAt.IsZero() || tx.SentAt.Before(tx.CommitTime) || tx.SentAt.After(time.Now()) {
			t.Errorf("transaction %s: committed %s, sent %s", tx.CommitLSN, tx.CommitTime, tx.SentAt)
		}
	}
}

func equal(a, b any) bool {
	switch x := a.(type) {
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k := range x {
			if !equal(x[k], y[k]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func TestUnchangedToastIsNotNull(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE items ALTER COLUMN note SET STORAGE EXTERNAL`)
	e.start(e.h)
	big := strings.Repeat("x", 100_000)
	e.exec(`INSERT INTO items (id, status, note) VALUES (10, 'open', $1)`, big)
	e.exec(`UPDATE items SET status = 'done' WHERE id = 10`)
	got := e.waitChanges(2)
	if got[0].New["note"] != big {
		t.Fatalf("insert note has %d bytes", len(got[0].New["note"].(string)))
	}
	upd := got[1]
	if _, present := upd.New["note"]; present {
		t.Fatalf("unchanged TOAST value reported as %#v", upd.New["note"])
	}
	if !upd.IsUnchanged("note") || upd.IsUnchanged("status") {
		t.Fatalf("Unchanged = %v, want [note]", upd.Unchanged)
	}
}

func TestReplicaIdentityFullSendsOldRow(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE items REPLICA IDENTITY FULL`)
	e.start(e.h)
	e.exec(`UPDATE items SET status = 'closed' WHERE id = 1`)
	got := e.waitChanges(1)
	if got[0].Old["status"] != "open" || got[0].New["status"] != "closed" {
		t.Fatalf("old=%v new=%v", got[0].Old, got[0].New)
	}
}

func TestAlterTableWhileRunning(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	e.exec(`INSERT INTO items (id, status) VALUES (20, 'open')`)
	e.waitChanges(1)
	e.exec(`ALTER TABLE items ADD COLUMN severity text DEFAULT 'low'`)
	e.exec(`INSERT INTO items (id, status, severity) VALUES (21, 'open', 'high')`)
	e.exec(`ALTER TABLE items DROP COLUMN note`)
	e.exec(`UPDATE items SET status = 'done' WHERE id = 21`)
	got := e.waitChanges(3)
	if got[1].New["severity"] != "high" {
		t.Fatalf("row after ADD COLUMN = %v", got[1].New)
	}
	if _, ok := got[2].New["note"]; ok || got[2].New["status"] != "done" || got[2].New["severity"] != "high" {
		t.Fatalf("row after DROP COLUMN = %v", got[2].New)
	}
}

func TestTruncateAndMultiRowTransaction(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	e.exec(`BEGIN; INSERT INTO items (id, status) VALUES (30, 'a'), (31, 'b'); UPDATE items SET status = 'c' WHERE id = 30; COMMIT`)
	e.exec(`TRUNCATE items`)
	got := e.waitChanges(4)
	for i, c := range got[:3] {
		if c.Seq != i || c.CommitLSN != got[0].CommitLSN {
			t.Fatalf("change %d: seq %d lsn %s", i, c.Seq, c.CommitLSN)
		}
	}
	if got[3].Op != event.Truncate || got[3].Table != "items" {
		t.Fatalf("truncate = %+v", got[3])
	}
}

func TestAcksOnlyDurablePositions(t *testing.T) {
	e := newEnv(t)
	e.h.failAfter = 1
	e.start(e.h)
	e.exec(`INSERT INTO items (id, status) VALUES (40, 'open')`)
	e.waitChanges(1)
	_, txs, _ := e.h.snapshot()
	durable := txs[0].EndLSN
	waitFor(t, "first confirm", func() bool { return e.confirmed() == durable })
	// The second transaction never becomes durable: the slot must not move
	// past the first, even across status intervals and keepalives.
	e.exec(`INSERT INTO items (id, status) VALUES (41, 'open')`)
	time.Sleep(700 * time.Millisecond)
	if c := e.confirmed(); c != durable {
		t.Fatalf("slot confirmed %s, but only %s is durable", c, durable)
	}
	// Once the store recovers, the transaction is redelivered and confirmed.
	e.h.mu.Lock()
	e.h.failAfter = 0
	e.h.mu.Unlock()
	got := e.waitChanges(2)
	if got[1].New["id"] != int64(41) {
		t.Fatalf("redelivered %v", got[1].New)
	}
}

// TestConfirmsOnlySyncedPositions: a position the handler stored but could
// not make durable is never confirmed; once Sync succeeds it is.
func TestConfirmsOnlySyncedPositions(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	before := e.confirmed()
	e.h.mu.Lock()
	e.h.failSync = true
	e.h.mu.Unlock()
	e.exec(`INSERT INTO items (id, status) VALUES (50, 'open')`)
	e.waitChanges(1)
	_, txs, pos := e.h.snapshot()
	if pos < txs[0].EndLSN {
		t.Fatalf("stored position %s, want the transaction's end %s", pos, txs[0].EndLSN)
	}
	time.Sleep(700 * time.Millisecond) // seven status intervals
	if c := e.confirmed(); c >= txs[0].EndLSN || c < before {
		t.Fatalf("slot confirmed %s while nothing past %s was made durable", c, before)
	}
	e.h.mu.Lock()
	e.h.failSync = false
	e.h.mu.Unlock()
	waitFor(t, "confirm after a sync", func() bool { return e.confirmed() >= txs[0].EndLSN })
	e.h.mu.Lock()
	synced, syncs := e.h.synced, e.h.syncs
	e.h.mu.Unlock()
	if synced < e.confirmed() {
		t.Fatalf("slot confirmed %s, past the last synced position %s", e.confirmed(), synced)
	}
	if syncs == 0 {
		t.Fatal("no Sync was made")
	}
}

func TestQuietPublicationAdvancesSlot(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	waitFor(t, "slot ready", func() bool { return e.h.ready() })
	before := e.confirmed()
	for i := 0; i < 50; i++ {
		e.exec(`INSERT INTO other VALUES ($1, repeat('x', 10000))`, i)
	}
	var s string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	wal, err := event.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slot to advance past unpublished writes", func() bool { return e.confirmed() >= wal && e.confirmed() > before })
	if changes, _, _ := e.h.snapshot(); len(changes) != 0 {
		t.Fatalf("got %d changes from an unpublished table", len(changes))
	}
}

func TestResumeAfterRestartWithoutLossOrDuplicates(t *testing.T) {
	e := newEnv(t)
	stop := e.start(e.h)
	for i := 0; i < 20; i++ {
		e.exec(`INSERT INTO items (id, status) VALUES ($1, 'open')`, 100+i)
	}
	e.waitChanges(20)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 40; i++ {
		e.exec(`INSERT INTO items (id, status) VALUES ($1, 'open')`, 100+i)
	}
	e.start(e.h)
	got := e.waitChanges(40)
	time.Sleep(300 * time.Millisecond)
	got, _, _ = e.h.snapshot()
	seen := map[int64]bool{}
	for _, c := range got {
		id := c.New["id"].(int64)
		if seen[id] {
			t.Fatalf("row %d delivered twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 40 {
		t.Fatalf("got %d rows, want 40", len(seen))
	}
}

func TestDatabaseRestartReconnects(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	e.exec(`INSERT INTO items (id, status) VALUES (200, 'open')`)
	e.waitChanges(1)
	e.conn.Close(context.Background())
	if err := pgtest.Shared(t).Restart(context.Background(), "immediate"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	e.conn = conn
	e.exec(`INSERT INTO items (id, status) VALUES (201, 'open')`)
	got := e.waitChanges(2)
	if got[1].New["id"] != int64(201) {
		t.Fatalf("after restart got %v", got[1].New)
	}
}

// TestDatabaseDownIsLoggedOnce: while the database is down the feed tries
// again and again, but says so once when it begins and once when it works
// again, not at every attempt.
func TestDatabaseDownIsLoggedOnce(t *testing.T) {
	e := newEnv(t)
	cfg, logs := e.logged()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.run(ctx, cfg, e.h)
	e.outage(2*time.Second, nil) // attempts at most 200 ms apart
	e.exec(`INSERT INTO items (id, status) VALUES (210, 'open')`)
	e.waitChanges(1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs()
	if n := strings.Count(out, "replication interrupted"); n != 1 {
		t.Errorf("%d interruption lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "still interrupted"); n != 0 {
		t.Errorf("%d reminders within the first 30 s:\n%s", n, out)
	}
	works := regexp.MustCompile(`msg="replication works again" after=\d+s failed_attempts=(\d+)`).FindStringSubmatch(out)
	if works == nil {
		t.Fatalf("no line that the feed works again:\n%s", out)
	}
	if n, _ := strconv.Atoi(works[1]); n < 3 {
		t.Errorf("%s failed attempts in 2 s with attempts 200 ms apart:\n%s", works[1], out)
	}
}

func TestMissingSlotIsFatal(t *testing.T) {
	e := newEnv(t)
	e.h.state, e.h.pos = cdc.StateReady, 12345
	err := cdc.New(e.config()).Run(context.Background(), e.h)
	if !errors.Is(err, cdc.ErrSlotMissing) || !cdc.IsFatal(err) {
		t.Fatalf("err = %v, want ErrSlotMissing", err)
	}
}

// restoredPosition streams items 300 and 301 to e.h, stops, and returns
// the position e.h stored after the first: the position of a state
// database restored from a backup taken between the two, behind the slot,
// which is confirmed past the second.
func restoredPosition(t *testing.T, e *env) event.LSN {
	t.Helper()
	stop := e.start(e.h)
	e.exec(`INSERT INTO items (id, status) VALUES (300, 'open')`)
	e.waitChanges(1)
	_, _, backup := e.h.snapshot()
	e.exec(`INSERT INTO items (id, status) VALUES (301, 'open')`)
	e.waitChanges(2)
	_, txs, _ := e.h.snapshot()
	waitFor(t, "the second transaction confirmed", func() bool { return e.confirmed() >= txs[1].EndLSN })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return backup
}

// TestPositionBehindTheSlotIsFatal: a handler whose position is behind
// the one its slot was confirmed up to lost what it had made durable; the
// server would skip the changes in between without a word, so the feed
// stops instead.
func TestPositionBehindTheSlotIsFatal(t *testing.T) {
	e := newEnv(t)
	backup := restoredPosition(t, e)
	e.h.mu.Lock()
	e.h.pos = backup
	e.h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cdc.New(e.config()).Run(ctx, e.h)
	if !errors.Is(err, cdc.ErrPositionBehind) || !cdc.IsFatal(err) {
		t.Fatalf("err = %v, want ErrPositionBehind", err)
	}
	if !strings.Contains(err.Error(), backup.String()) || !strings.Contains(err.Error(), "Recovering a lost slot") {
		t.Fatalf("the error does not say the position or the way out: %v", err)
	}
}

// TestUnboundPositionBehindTheSlotResumes: a position stored by an earlier
// version of the relay, which could confirm its slot a little past it,
// proves nothing when the slot is confirmed past it: the feed warns and
// resumes from the slot's position.
func TestUnboundPositionBehindTheSlotResumes(t *testing.T) {
	e := newEnv(t)
	backup := restoredPosition(t, e)
	e.h.mu.Lock()
	e.h.pos, e.h.state = backup, cdc.StateReadyUnbound
	e.h.mu.Unlock()
	cfg, logs := e.logged()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.run(ctx, cfg, e.h)
	e.exec(`INSERT INTO items (id, status) VALUES (302, 'open')`)
	got := e.waitChanges(3)
	if id := got[2].New["id"]; id != int64(302) {
		t.Fatalf("after the resume got row %v, want 302 (301 was confirmed before)", id)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if out := logs(); !strings.Contains(out, "the slot is confirmed past the relay's position") {
		t.Fatalf("no warning logged:\n%s", out)
	}
}

func TestForeignSlotIsFatal(t *testing.T) {
	e := newEnv(t)
	e.exec(`SELECT pg_create_logical_replication_slot('test_slot', 'pgoutput')`)
	err := cdc.New(e.config()).Run(context.Background(), e.h)
	if !errors.Is(err, cdc.ErrSlotForeign) {
		t.Fatalf("err = %v, want ErrSlotForeign", err)
	}
}

func TestHalfCreatedSlotIsRecreated(t *testing.T) {
	e := newEnv(t)
	e.exec(`SELECT pg_create_logical_replication_slot('test_slot', 'pgoutput')`)
	e.h.state = cdc.StateSeeding
	e.start(e.h)
	waitFor(t, "slot ready", func() bool { return e.h.ready() })
	if len(e.h.seeded["items"]) != 2 {
		t.Fatalf("seeded %v", e.h.seeded)
	}
}

func TestOneStreamerPerSlot(t *testing.T) {
	e := newEnv(t)
	e.start(e.h)
	waitFor(t, "slot ready", func() bool { return e.h.ready() })
	// A second source on the same slot stands by instead of failing.
	second := &memHandler{}
	pos, state := e.h.durable()
	second.pos, second.state = pos, state
	stop2 := e.start(second)
	e.exec(`INSERT INTO items (id, status) VALUES (300, 'open')`)
	e.waitChanges(1)
	time.Sleep(300 * time.Millisecond)
	if c, _, _ := second.snapshot(); len(c) != 0 {
		t.Fatalf("standby received %d changes", len(c))
	}
	if err := stop2(); err != nil {
		t.Fatalf("standby returned %v", err)
	}
}

// TestStandbyWaitsOutAnOutage: a relay standing by for another found the
// server and its slot; the database going down later is an outage it
// waits out, as the streaming one does, not a misconfiguration to exit
// on.
func TestStandbyWaitsOutAnOutage(t *testing.T) {
	e := newEnv(t)
	stop1 := e.start(e.h)
	second := &memHandler{}
	pos, state := e.h.durable()
	second.pos, second.state = pos, state
	cfg, logs := e.logged()
	standby := cdc.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- standby.Run(ctx, second) }()
	waitFor(t, "the second source standing by", func() bool { return standby.State() == cdc.FeedStandby })

	e.outage(time.Second, func() { // attempts at most 200 ms apart
		select {
		case err := <-done:
			t.Errorf("the standby ended while the database was down: %v", err)
		default:
		}
	})
	// Whichever reconnects first takes the slot; the other stands by
	// again. (A takeover, which needs the position the two share in their
	// store, is the fault suite's: TestSeveralRelays.)
	e.exec(`INSERT INTO items (id, status) VALUES (310, 'open')`)
	waitFor(t, "the change streamed by either", func() bool {
		for _, h := range []*memHandler{e.h, second} {
			if c, _, _ := h.snapshot(); len(c) > 0 && c[len(c)-1].New["id"] == int64(310) {
				return true
			}
		}
		return false
	})
	// It says when the outage ended, standing by or streaming, once.
	waitFor(t, "the second source's line that it works again", func() bool {
		return strings.Contains(logs(), `msg="replication works again"`)
	})
	if st := standby.State(); st != cdc.FeedStandby && st != cdc.FeedStreaming {
		t.Errorf("the second source is %s after the outage", st)
	}
	if out := logs(); strings.Count(out, "replication interrupted") != 1 || strings.Count(out, "replication works again") != 1 ||
		!regexp.MustCompile(`msg="replication works again" after=\d+s failed_attempts=\d+ now=("standing by"|streaming)`).MatchString(out) {
		t.Errorf("the second source's log of the outage:\n%s", out)
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPreflightErrors(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE ROLE plain LOGIN`)
	t.Cleanup(func() { pgtest.Shared(t).Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS plain") })
	url := strings.Replace(e.url, "postgres@", "plain@", 1)
	cfg := e.config()
	cfg.URL = url
	err := cdc.New(cfg).Run(context.Background(), e.h)
	if !errors.Is(err, cdc.ErrNoReplication) || !strings.Contains(err.Error(), "ALTER ROLE") {
		t.Fatalf("err = %v, want ErrNoReplication with a fix", err)
	}
	cfg.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	if err := cdc.New(cfg).Run(context.Background(), e.h); err == nil {
		t.Fatal("unreachable database: want an error")
	}
}

func (h *memHandler) ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state == cdc.StateReady || h.state == cdc.StateReadyUnbound
}

func (h *memHandler) durable() (event.LSN, cdc.State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos, h.state
}

// flushCounter counts how many groups a handler was asked to make durable,
// and the largest.
type flushCounter struct {
	*memHandler
	flushes, largest int
}

func (f *flushCounter) Flush(ctx context.Context) error {
	f.mu.Lock()
	f.flushes++
	f.largest = max(f.largest, len(f.stagedTx))
	f.mu.Unlock()
	return f.memHandler.Flush(ctx)
}

func TestGroupCommit(t *testing.T) {
	e := newEnv(t)
	h := &flushCounter{memHandler: e.h}
	e.start(h)
	// Many small transactions from several connections at once: they are
	// made durable in groups, and every one of them arrives.
	const n, writers = 400, 4
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), e.url)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(context.Background())
			for i := w; i < n; i += writers {
				if _, err := conn.Exec(context.Background(), `INSERT INTO items (id, status) VALUES ($1, 'open')`, 1000+i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := e.waitChanges(n)
	seen := map[any]bool{}
	for _, c := range got {
		seen[c.New["id"]] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct rows, want %d", len(seen), n)
	}
	_, txs, pos := e.h.snapshot()
	if pos != txs[len(txs)-1].EndLSN {
		t.Fatalf("durable position %s, want the last transaction's end %s", pos, txs[len(txs)-1].EndLSN)
	}
	waitFor(t, "slot confirmed", func() bool { return e.confirmed() >= pos })
	h.mu.Lock()
	flushes := h.flushes
	h.mu.Unlock()
	t.Logf("%d transactions made durable in %d groups", len(txs), flushes)
	if len(txs) != n || flushes >= n {
		t.Fatalf("%d flushes for %d transactions: no grouping", flushes, n)
	}
}

// A handler that reports its group full has it stored at once, however
// many more transactions wait to be read: here all of them were committed
// while the feed was stopped.
func TestFullGroupIsStoredAtOnce(t *testing.T) {
	e := newEnv(t)
	if err := e.start(e.h)(); err != nil {
		t.Fatal(err)
	}
	const n, full = 60, 5
	for i := range n {
		e.exec(`INSERT INTO items (id, status) VALUES ($1, 'open')`, 1000+i)
	}
	e.h.mu.Lock()
	e.h.fullAt = full
	e.h.mu.Unlock()
	h := &flushCounter{memHandler: e.h}
	e.start(h)
	e.waitChanges(n)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.largest > full {
		t.Fatalf("a group of %d transactions was stored, want at most %d (Full)", h.largest, full)
	}
	if h.flushes < n/full {
		t.Fatalf("%d groups for %d transactions, want at least %d", h.flushes, n, n/full)
	}
}

// TestHeartbeatsAndSlotChecks: on a database where nothing is written, the
// heartbeats still move the slot; the slot's retained WAL is checked,
// logged (with a warning above the threshold) and handed to the observer.
func TestHeartbeatsAndSlotChecks(t *testing.T) {
	e := newEnv(t)
	var logBuf bytes.Buffer
	var mu sync.Mutex
	var statuses []cdc.SlotStatus
	cfg := e.config()
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.WALCheckInterval = 50 * time.Millisecond
	cfg.RetainedWALWarn = 1 // every check warns
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logBuf}, nil))
	cfg.OnSlotStatus = func(s cdc.SlotStatus) { mu.Lock(); statuses = append(statuses, s); mu.Unlock() }
	src := cdc.New(cfg)
	if got := src.RetainedWAL(); got != -1 {
		t.Fatalf("RetainedWAL before streaming = %d, want -1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, e.h) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "slot ready", func() bool { _, st, _ := e.h.Position(context.Background()); return st == cdc.StateReady })
	start := e.confirmed()
	var lsn string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	now, _ := event.ParseLSN(lsn)
	// Nothing is written by the test: only heartbeats move the WAL, and
	// they move the slot many times within seconds (the server's own
	// background records come every 15 s).
	seen := map[event.LSN]bool{}
	deadline := time.Now().Add(4 * time.Second)
	for len(seen) < 5 && time.Now().Before(deadline) {
		if c := e.confirmed(); c > start && c > now {
			seen[c] = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(seen) < 5 {
		t.Fatalf("the slot advanced to %d distinct positions in 4 s without writes, want 5 (heartbeats)", len(seen))
	}
	waitFor(t, "slot checks", func() bool { mu.Lock(); defer mu.Unlock(); return len(statuses) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	for _, s := range statuses {
		if !s.Exists || s.RetainedBytes < 0 {
			t.Fatalf("slot status %+v", s)
		}
	}
	if src.RetainedWAL() < 0 {
		t.Fatalf("RetainedWAL = %d after checks", src.RetainedWAL())
	}
	if !strings.Contains(logBuf.String(), "replication slot retains much WAL") || !strings.Contains(logBuf.String(), "retained_wal_bytes=") {
		t.Fatalf("no retained-WAL warning in the log:\n%s", logBuf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestZeroColumnTable: PostgreSQL allows a table with no columns, and
// pgoutput sends its row changes with a TupleData of zero columns (an Insert
// message of 8 bytes). The stream reads them as changes with an empty row
// rather than failing on a legal message and stalling the slot.
func TestZeroColumnTable(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE bare ()`)
	e.exec(`ALTER TABLE bare REPLICA IDENTITY FULL`)
	cfg := e.config()
	cfg.Tables = []string{"items", "bare"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cdc.New(cfg).Run(ctx, e.h) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "slot streaming", func() bool {
		st, err := cdc.Slot(context.Background(), e.conn, e.slot)
		return err == nil && st.Active && e.h.ready()
	})
	e.exec(`INSERT INTO bare DEFAULT VALUES`)
	e.exec(`DELETE FROM bare`)
	e.exec(`INSERT INTO items (id, status) VALUES (50, 'open')`)
	got := e.waitChanges(3)
	if got[0].Table != "bare" || got[0].Op != event.Insert || len(got[0].New) != 0 {
		t.Fatalf("insert = %+v", got[0])
	}
	if got[1].Table != "bare" || got[1].Op != event.Delete || len(got[1].Old) != 0 {
		t.Fatalf("delete = %+v", got[1])
	}
	if got[2].Table != "items" || got[2].New["id"] != int64(50) {
		t.Fatalf("change after the zero-column ones = %+v", got[2])
	}
}

// stopInCommit stops the feed from inside the Handler's Commit, as a stop
// that comes while a transaction is being stored, and fails the call if
// its context ended, as a store call would.
type stopInCommit struct {
	*memHandler
	stop func()
	// block makes Commit wait until its context ends (a store that hangs).
	block bool
	// stoppedAt is when Commit stopped the feed.
	stoppedAt time.Time
}

func (h *stopInCommit) Commit(ctx context.Context, tx event.Tx) error {
	h.stoppedAt = time.Now()
	h.stop()
	if h.block {
		<-ctx.Done()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.memHandler.Commit(ctx, tx)
}

// A stop does not cut short the Handler call in progress: the transaction
// being committed is stored before the feed ends (its deliveries may have
// gone out ahead of the store, and must not go out again after a restart).
// A call that hangs holds the stop up for StopGrace only.
func TestStopLetsTheCallInProgressFinish(t *testing.T) {
	for _, hang := range []bool{false, true} {
		t.Run(map[bool]string{false: "finishes", true: "hangs"}[hang], func(t *testing.T) { stopInCall(t, hang) })
	}
}

func stopInCall(t *testing.T, hang bool) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &stopInCommit{memHandler: e.h, stop: cancel, block: hang}
	cfg := e.config()
	cfg.StopGrace = 300 * time.Millisecond
	done := e.run(ctx, cfg, h)
	e.exec(`INSERT INTO items (id, status) VALUES (1000, 'open')`)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the feed did not stop")
	}
	took := time.Since(h.stoppedAt)
	_, txs, _ := e.h.snapshot()
	if hang {
		if len(txs) != 0 || took < cfg.StopGrace {
			t.Fatalf("hanging call: stop took %v with %d transactions stored, want StopGrace (%v) and none", took, len(txs), cfg.StopGrace)
		}
		return
	}
	if len(txs) != 1 {
		t.Fatalf("%d transactions stored at the stop, want the one being committed", len(txs))
	}
}

// stopInChange stops the feed at the first change of the third
// transaction, and gathers groups as a handler whose deliveries all went
// ahead of the store does (Waiting is false).
type stopInChange struct {
	*memHandler
	stop  func()
	begun int
}

func (h *stopInChange) Waiting() bool { return false }

func (h *stopInChange) Begin(ctx context.Context, tx event.Tx) error {
	h.begun++
	return h.memHandler.Begin(ctx, tx)
}

func (h *stopInChange) Change(ctx context.Context, c *event.Change) error {
	if h.begun == 3 {
		h.stop()
	}
	return h.memHandler.Change(ctx, c)
}

// A stop in the middle of a transaction, while committed ones wait to be
// stored behind it, reads on to its commit and stores all of them.
func TestStopInTheMiddleOfATransactionStoresTheGroup(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &stopInChange{memHandler: e.h, stop: cancel}
	cfg := e.config()
	cfg.SentGroupDelay = time.Minute
	// Nothing else may store the second transaction before the third
	// comes: not a status report's wake (a quiet stream stores its
	// group), nor a keepalive for WAL written elsewhere (other tests'
	// databases): the first keepalive is handled before the test starts,
	// and the next would wait for IdleInterval.
	cfg.StatusInterval, cfg.IdleInterval = time.Minute, time.Minute
	done := e.run(ctx, cfg, h)
	e.exec(`INSERT INTO other (id, v) VALUES (1, 'unpublished')`)
	waitFor(t, "a keepalive handled", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.idles > 0
	})
	// The first is stored as soon as the stream pauses (nothing was stored
	// a moment before); the second then waits for the group to fill.
	e.exec(`INSERT INTO items (id, status) VALUES (1000, 'open')`)
	waitFor(t, "first transaction stored", func() bool {
		_, txs, _ := e.h.snapshot()
		return len(txs) == 1
	})
	e.exec(`INSERT INTO items (id, status) VALUES (1001, 'open')`)
	time.Sleep(100 * time.Millisecond)
	if _, txs, _ := e.h.snapshot(); len(txs) != 1 {
		t.Fatalf("%d transactions stored, want the second to wait in its group", len(txs))
	}
	e.exec(`INSERT INTO items (id, status) VALUES (1002, 'open'), (1003, 'open')`)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the feed did not stop")
	}
	changes, txs, _ := e.h.snapshot()
	if len(txs) != 3 || len(changes) != 4 {
		t.Fatalf("%d transactions (%d changes) stored at the stop, want 3 (4)", len(txs), len(changes))
	}
}

// A stop ends the wait for the next message at once, even when nothing
// else is due for a minute.
func TestStopEndsTheWait(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := e.config()
	cfg.StatusInterval, cfg.IdleInterval = time.Minute, time.Minute
	done := e.run(ctx, cfg, e.h)
	time.Sleep(200 * time.Millisecond) // waiting for a message
	began := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) && err != nil {
			t.Fatalf("stop: %v", err)
		}
		if took := time.Since(began); took > 2*time.Second {
			t.Fatalf("the stop took %v", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the feed did not stop within 10 s of the stop")
	}
}

// The server's own DateStyle and TimeZone do not change the values the
// relay reads: dates in ISO form and timestamps with a time zone in UTC,
// in the seed from a new slot's snapshot and in the stream alike.
func TestServerDateStyleAndTimeZone(t *testing.T) {
	e := newEnv(t)
	var db string
	if err := e.conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	e.exec(`ALTER DATABASE ` + pgx.Identifier{db}.Sanitize() + ` SET datestyle = 'SQL, DMY'`)
	e.exec(`ALTER DATABASE ` + pgx.Identifier{db}.Sanitize() + ` SET timezone = 'Asia/Kolkata'`)
	e.exec(`ALTER TABLE items ADD COLUMN at timestamp, ADD COLUMN day date`)
	e.exec(`UPDATE items SET due = '2026-04-24 09:15:30.5+07', at = '2026-04-24 09:15:30.25', day = '2026-04-24' WHERE id = 1`)
	e.exec(`UPDATE items SET due = 'infinity', at = '-infinity' WHERE id = 2`)
	e.h.seedColumns = []string{"id", "due", "at", "day"}
	e.start(e.h)
	waitFor(t, "slot ready", func() bool { return e.h.ready() })
	check := func(what string, got event.Row, want event.Row) {
		t.Helper()
		for k, v := range want {
			if !equal(got[k], v) {
				t.Errorf("%s: %s = %#v, want %#v", what, k, got[k], v)
			}
		}
	}
	seeded := map[int64]event.Row{}
	for _, r := range e.h.seeded["items"] {
		seeded[r["id"].(int64)] = r
	}
	check("seeded row 1", seeded[1], event.Row{"due": "2026-04-24T02:15:30.5Z", "at": "2026-04-24T09:15:30.25", "day": "2026-04-24"})
	check("seeded row 2", seeded[2], event.Row{"due": "infinity", "at": "-infinity", "day": nil})

	e.exec(`INSERT INTO items (id, status, due, at, day) VALUES
		(3, 'open', '2028-02-29 23:59:59.123456-01', '0099-12-31 00:00:00', '2026-04-24'),
		(4, 'open', '2026-04-24 02:15:30+00', '2026-04-24 02:15:30.000001', '0099-01-01'),
		(5, 'open', '1999-12-31 23:00:00 BC', '10000-01-01 00:00:00', '2026-12-31 BC')`)
	got := e.waitChanges(3)
	check("row 3", got[0].New, event.Row{"due": "2028-03-01T00:59:59.123456Z", "at": "0099-12-31T00:00:00", "day": "2026-04-24"})
	check("row 4", got[1].New, event.Row{"due": "2026-04-24T02:15:30Z", "at": "2026-04-24T02:15:30.000001", "day": "0099-01-01"})
	// Years before 1 and past 9999 have no RFC 3339 form: they take the
	// slow road and come out as Go formats them.
	check("row 5", got[2].New, event.Row{"due": "-1998-12-31T23:00:00Z", "at": "10000-01-01T00:00:00", "day": "2026-12-31 BC"})
}
