package relay

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/storetest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is a migrated state database for one test.
type env struct {
	t  testing.TB
	st *store.Store
}

func newEnv(t testing.TB) *env {
	t.Helper()
	st := storetest.Open(t)
	return &env{t: t, st: st}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	sql = strings.ReplaceAll(sql, "{{schema}}", e.st.Schema())
	if _, err := e.st.Pool().Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// webhook inserts an active webhook; secret "" stores NULL.
func (e *env) webhook(url, secret string, headers map[string]string) int64 {
	e.t.Helper()
	var sec *string
	if secret != "" {
		sec = &secret
	}
	if headers == nil {
		headers = map[string]string{}
	}
	h, _ := json.Marshal(headers)
	var id int64
	err := e.st.Pool().QueryRow(context.Background(), strings.ReplaceAll(`INSERT INTO {{schema}}.webhooks
			(company_id, name, url, events, secret, headers)
		VALUES (1, 'hook-' || gen_random_uuid(), $1, '{task.completed}', $2, $3::jsonb) RETURNING id`, "{{schema}}", e.st.Schema()),
		url, sec, string(h)).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// delivery inserts an event with body and a pending delivery of it to
// webhook, due now, as ingest does.
func (e *env) delivery(webhook int64, body []byte) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0,
			        'task.completed', 1, 'tasks', 'update', now(), $3::bytea)
			RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type)
		SELECT $1, ev.id, $2, 1, 'task.completed' FROM ev`, id, webhook, body)
	return id
}

// deliveries stores n events, each with one pending delivery due now to
// one of hooks in turn.
func (e *env) deliveries(hooks []int64, n int) {
	e.t.Helper()
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			SELECT 'test', (SELECT coalesce(max(commit_lsn), 0) FROM {{schema}}.events) + g, 0,
			       'task.completed', 1, 'tasks', 'update', now(), $2::bytea
			FROM generate_series(1, $3::int) g RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type)
		SELECT gen_random_uuid(), ev.id, ($1::bigint[])[1 + ev.id % cardinality($1::bigint[])], 1, 'task.completed' FROM ev`,
		hooks, body, n)
}

func (e *env) get(id uuid.UUID) store.Delivery {
	e.t.Helper()
	d, err := e.st.DeliveryByID(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) attempts(id uuid.UUID) []store.Attempt {
	e.t.Helper()
	as, err := e.st.Attempts(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return as
}

// waitStatus waits until the delivery has the status, failing the test
// after timeout.
func (e *env) waitStatus(id uuid.UUID, want store.Status, timeout time.Duration) store.Delivery {
	e.t.Helper()
	var d store.Delivery
	eventually(e.t, timeout, func() bool {
		d = e.get(id)
		return d.Status == want
	}, func() string { return "delivery " + id.String() + " is " + string(d.Status) + ", want " + string(want) })
	return d
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// start runs a dispatcher until the test ends or stop is called; stop
// returns Run's error and how long Run took to return after the cancel.
func (e *env) start(opts Options) (d *Dispatcher, stop func() (error, time.Duration)) {
	e.t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Egress == nil {
		opts.Egress = loopback
	}
	d = New(&countingStore{deliveryStore: e.st}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var err error
	var took time.Duration
	stop = func() (error, time.Duration) {
		once.Do(func() {
			t0 := time.Now()
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				e.t.Error("Run did not return within a minute of the cancel")
			}
			took = time.Since(t0)
		})
		return err, took
	}
	e.t.Cleanup(func() { stop() })
	return d, stop
}

// loopback opens the tests' local receivers; without it the relay refuses
// them (see TestEgressBlocksLoopback).
var loopback, _ = egress.NewPolicy([]string{"127.0.0.0/8", "::1"})

// receipt is one request a receiver got.
type receipt struct {
	at     time.Time
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint that records what it gets. respond, if
// set, answers the n-th request (from 1) of one delivery; default 200.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	all      []receipt
	byID     map[string][]receipt
	inflight int
	respond  func(w http.ResponseWriter, r *http.Request, n int)
}

func newReceiver(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	rc := &receiver{byID: map[string][]receipt{}, respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := receipt{at: time.Now(), header: r.Header.Clone(), body: body}
		id := r.Header.Get("X-SMTM-Delivery")
		rc.mu.Lock()
		rc.all = append(rc.all, rec)
		rc.byID[id] = append(rc.byID[id], rec)
		n := len(rc.byID[id])
		rc.inflight++
		rc.mu.Unlock()
		defer func() {
			rc.mu.Lock()
			rc.inflight--
			rc.mu.Unlock()
		}()
		if rc.respond != nil {
			rc.respond(w, r, n)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) receipts(id uuid.UUID) []receipt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receipt(nil), rc.byID[id.String()]...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.all)
}

func (rc *receiver) active() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.inflight
}

// hang blocks until the client gives up on the request.
func hang(w http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() }

// logBuffer collects output written from many goroutines.
type logBuffer = syncbuf.Buffer

// heldReceiver is a receiver whose answers wait until release is called
// (at the latest when the test ends, before the receiver closes).
func heldReceiver(t testing.TB) (rc *receiver, release func()) {
	t.Helper()
	ch := make(chan struct{})
	rc = newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-ch
		w.WriteHeader(http.StatusNoContent)
	})
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return rc, release
}

// startAfterFirstRound starts a dispatcher (see start) and lets its first
// claim round pass, so that what the test writes or hands over next is not
// found by that round.
func (e *env) startAfterFirstRound(opts Options) (*Dispatcher, func() (error, time.Duration)) {
	e.t.Helper()
	d, stop := e.start(opts)
	time.Sleep(50 * time.Millisecond)
	return d, stop
}

// countDeliveries counts the deliveries that match a condition.
func (e *env) countDeliveries(where string) int {
	e.t.Helper()
	var n int
	sql := strings.ReplaceAll(`SELECT count(*) FROM {{schema}}.deliveries WHERE `+where, "{{schema}}", e.st.Schema())
	if err := e.st.Pool().QueryRow(context.Background(), sql).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}
