package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/service"
	"github.com/smartmaintenance/relay/signature"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	secret1 = "company-one-secret-0123456789"
	secret2 = "company-two-secret-0123456789"
)

var allEvents = []string{"task.assigned", "task.completed", "task.approved", "task.rejected", "repair_request.created",
	"repair_request.updated", "shutdown.reported", "shutdown.resolved", "user.created", "user.deactivated", "audit.exported"}

// request is one request a receiver got.
type request struct {
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a real HTTP endpoint that records what it gets and answers
// with the status its respond function picks.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(r request, n int) int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{respond: func(request, int) int { return 200 }}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := request{Path: r.URL.Path, Header: r.Header.Clone(), Body: body, At: time.Now()}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, req)
		n := len(rc.reqs)
		respond := rc.respond
		rc.mu.Unlock()
		w.WriteHeader(respond(req, n))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests(path string) []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []request
	for _, r := range rc.reqs {
		if path == "" || r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (rc *receiver) setRespond(f func(request, int) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = f
}

type payload struct {
	Event       string         `json:"event"`
	Timestamp   string         `json:"timestamp"`
	CompanyID   int64          `json:"company_id"`
	CompanyName string         `json:"company_name"`
	Data        map[string]any `json:"data"`
}

func decode(t *testing.T, r request) payload {
	t.Helper()
	var p payload
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	return p
}

// events returns the payloads received on path with the given type.
func (rc *receiver) events(t *testing.T, path, typ string) []payload {
	var out []payload
	for _, r := range rc.requests(path) {
		if p := decode(t, r); p.Event == typ {
			out = append(out, p)
		}
	}
	return out
}

type relayEnv struct {
	t    *testing.T
	url  string
	pool *pgxpool.Pool
	cfg  *config.Config
	recv *receiver
	logs *syncBuffer
	stop func() error
	// tel is handed to the next start.
	tel service.Telemetry
}

// newRelay prepares a database with the reference schema, a receiver and a
// config with one webhook per company subscribed to every event.
func newRelay(t *testing.T) *relayEnv {
	t.Helper()
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	recv := newReceiver(t)
	cfg := config.Default()
	cfg.Database.URL = url
	cfg.Replication.StatusInterval = 200 * time.Millisecond
	cfg.Delivery.PollInterval = 50 * time.Millisecond
	cfg.Delivery.Timeout = 2 * time.Second
	cfg.Delivery.RetrySchedule = []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	cfg.Delivery.DrainTimeout = 2 * time.Second
	// The receivers are local: open loopback, which the relay refuses by
	// default.
	cfg.Delivery.AllowNetworks = []string{"127.0.0.0/8", "::1"}
	cfg.Webhooks.Endpoints = []config.Webhook{
		{CompanyID: 1, Name: "one", URL: recv.URL + "/one", Events: allEvents, Secret: secret1, Active: true,
			Headers: map[string]string{"Authorization": "Bearer one"}},
		{CompanyID: 2, Name: "two", URL: recv.URL + "/two", Events: allEvents, Secret: secret2, Active: true},
	}
	return &relayEnv{t: t, url: url, pool: pool, cfg: cfg, recv: recv, logs: &syncBuffer{}}
}

// start runs the relay in the background until stop or the test's end, and
// waits until it streams.
func (e *relayEnv) start() {
	e.t.Helper()
	if err := e.cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- service.RunWith(ctx, e.cfg, log, e.tel) }()
	var once sync.Once
	var runErr error
	e.stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	e.t.Cleanup(func() {
		if err := e.stop(); err != nil {
			e.t.Errorf("relay: %v", err)
		}
		if e.t.Failed() {
			e.t.Logf("relay log:\n%s", e.logs.String())
		}
	})
	// The slot is active while the relay still seeds its record from the
	// slot's snapshot too: only a ready checkpoint says that every change
	// committed from now on will be delivered.
	state, err := pgxpool.New(context.Background(), e.cfg.Database.StateDatabaseURL())
	if err != nil {
		e.t.Fatal(err)
	}
	defer state.Close()
	e.waitFor("slot streaming", func() bool {
		var active, ready bool
		_ = e.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active)`, e.cfg.Replication.Slot).Scan(&active)
		_ = state.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM relay.checkpoints WHERE slot = $1 AND state = 'ready')`, e.cfg.Replication.Slot).Scan(&ready)
		return active && ready
	})
}

func (e *relayEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *relayEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *relayEnv) waitEvents(path, typ string, n int) []payload {
	e.t.Helper()
	var got []payload
	e.waitFor(fmt.Sprintf("%d %s on %s", n, typ, path), func() bool {
		got = e.recv.events(e.t, path, typ)
		return len(got) >= n
	})
	return got
}

// platformActivity makes one change of each kind for company c and returns
// the event types it must produce.
func (e *relayEnv) platformActivity(c int64) {
	tech, sup, asset := map[int64]int64{1: 3, 2: 7}[c], map[int64]int64{1: 2, 2: 6}[c], map[int64]int64{1: 1, 2: 3}[c]
	var task, task2 int64
	e.pool.QueryRow(context.Background(), `INSERT INTO tasks (company_id, asset_id, title, priority) VALUES ($1, $2, 'Replace belt', 'high') RETURNING id`, c, asset).Scan(&task)
	e.exec(`UPDATE tasks SET technician_id = $2, assigned_by = $3, status = 'assigned' WHERE id = $1`, task, tech, sup)
	e.exec(`UPDATE tasks SET status = 'completed', completed_at = now() WHERE id = $1`, task)
	e.exec(`UPDATE tasks SET status = 'approved', reviewed_by = $2, reviewed_at = now() WHERE id = $1`, task, sup)
	e.pool.QueryRow(context.Background(), `INSERT INTO tasks (company_id, asset_id, title, status, technician_id) VALUES ($1, $2, 'Oil', 'completed', $3) RETURNING id`, c, asset, tech).Scan(&task2)
	e.exec(`UPDATE tasks SET status = 'rejected', reviewed_by = $2, rejection_reason = 'no photo' WHERE id = $1`, task2, sup)
	e.exec(`INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by) VALUES ($1, $2, 'Noise', 'critical', $3)`, c, asset, tech)
	e.exec(`UPDATE repair_requests SET status = 'in_review', updated_by = $2 WHERE company_id = $1`, c, sup)
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason, reported_by) VALUES ($1, $2, 'Overheating', $3)`, c, asset, tech)
	e.exec(`UPDATE shutdowns SET status = 'resolved', resolved_at = now(), resolved_by = $2 WHERE company_id = $1`, c, sup)
	var user int64
	e.pool.QueryRow(context.Background(), `INSERT INTO users (company_id, email, full_name, created_by) VALUES ($1, 'x@example.com', 'X', $2) RETURNING id`, c, sup).Scan(&user)
	e.exec(`UPDATE users SET active = false, deactivated_by = $2, deactivated_at = now() WHERE id = $1`, user, sup)
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES ($1, $2, 10)`, c, sup)
}

func TestEveryEventTypeEndToEnd(t *testing.T) {
	e := newRelay(t)
	e.start()
	e.platformActivity(1)
	for _, typ := range allEvents {
		e.waitEvents("/one", typ, 1)
	}
	time.Sleep(300 * time.Millisecond)
	reqs := e.recv.requests("/one")
	// The second task is inserted already completed and assigned, so
	// task.assigned and task.completed fire twice.
	if len(reqs) != len(allEvents)+2 {
		for _, r := range reqs {
			t.Logf("%s", r.Body)
		}
		t.Fatalf("got %d requests, want %d", len(reqs), len(allEvents)+2)
	}
	ids := map[string]bool{}
	for _, r := range reqs {
		p := decode(t, r)
		// Headers: exactly the guide's, plus the webhook's own.
		h := r.Header
		if h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != "SmartMaintenance/1.0" {
			t.Errorf("headers %v", h)
		}
		if h.Get("X-SMTM-Event") != p.Event {
			t.Errorf("X-SMTM-Event %q for a %s payload (a webhook header must not override it)", h.Get("X-SMTM-Event"), p.Event)
		}
		if h.Get("Authorization") != "Bearer one" {
			t.Errorf("custom header missing: %v", h)
		}
		id := h.Get("X-SMTM-Delivery")
		if len(id) != 36 || ids[id] {
			t.Errorf("delivery id %q (duplicate: %v)", id, ids[id])
		}
		ids[id] = true
		if err := signature.Verify([]byte(secret1), r.Body, h.Get("X-SMTM-Signature")); err != nil {
			t.Errorf("%s: signature: %v", p.Event, err)
		}
		// Payload shape, in the guide's key order.
		if !bytes.HasPrefix(r.Body, []byte(`{"event":"`+p.Event+`","timestamp":"`)) ||
			!bytes.Contains(r.Body, []byte(`,"company_id":1,"company_name":"PT Kahatex","data":{`)) {
			t.Errorf("payload shape: %s", r.Body)
		}
		if !strings.HasSuffix(p.Timestamp, "+07:00") {
			t.Errorf("timestamp %q lacks the company's offset", p.Timestamp)
		}
		ts, err := time.Parse(time.RFC3339, p.Timestamp)
		if err != nil || time.Since(ts) > time.Minute || time.Since(ts) < -time.Second {
			t.Errorf("timestamp %q is not the commit time: %v", p.Timestamp, err)
		}
	}
	completed := e.recv.events(t, "/one", "task.completed")[0]
	for _, k := range []string{"task_id", "asset_id", "technician_id"} {
		if _, ok := completed.Data[k]; !ok {
			t.Errorf("task.completed data lacks %s: %v", k, completed.Data)
		}
	}
	if rr := e.recv.events(t, "/one", "repair_request.created")[0]; rr.Data["priority"] != "critical" {
		t.Errorf("repair_request.created data = %v", rr.Data)
	}
	if got := e.recv.requests("/two"); len(got) != 0 {
		t.Fatalf("company 2's webhook got %d requests for company 1's changes", len(got))
	}
}

// TestTimestampsOrderTransactions: three transactions committed within a
// few milliseconds carry strictly increasing timestamps (the commit time to
// the microsecond), and two events of one transaction share theirs.
func TestTimestampsOrderTransactions(t *testing.T) {
	e := newRelay(t)
	e.start()
	started := time.Now()
	for n := 1; n <= 3; n++ {
		e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, $1)`, n)
	}
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 4), (1, 2, 5)`)
	elapsed := time.Since(started)
	got := e.waitEvents("/one", "audit.exported", 5)
	at := map[float64]string{}
	for _, p := range got {
		at[p.Data["row_count"].(float64)] = p.Timestamp
	}
	t.Logf("five events in four transactions committed within %v: %v", elapsed, at)
	for n := 1.0; n < 4; n++ {
		before, err1 := time.Parse(time.RFC3339, at[n])
		after, err2 := time.Parse(time.RFC3339, at[n+1])
		if err1 != nil || err2 != nil || !before.Before(after) || at[n] >= at[n+1] {
			t.Errorf("transaction %v at %q, the next at %q: want strictly increasing", n, at[n], at[n+1])
		}
		if len(at[n]) != len("2026-04-24T09:15:30.123456+07:00") {
			t.Errorf("timestamp %q lacks the six-digit fraction", at[n])
		}
	}
	if at[4] != at[5] {
		t.Errorf("one transaction's events at %q and %q, want the same commit time", at[4], at[5])
	}
}

func TestTenantsAreIsolated(t *testing.T) {
	e := newRelay(t)
	e.start()
	e.platformActivity(2)
	e.platformActivity(1)
	for _, typ := range allEvents {
		e.waitEvents("/one", typ, 1)
		e.waitEvents("/two", typ, 1)
	}
	time.Sleep(300 * time.Millisecond)
	for path, want := range map[string]int64{"/one": 1, "/two": 2} {
		secret := map[int64]string{1: secret1, 2: secret2}[want]
		for _, r := range e.recv.requests(path) {
			p := decode(t, r)
			if p.CompanyID != want {
				t.Fatalf("%s got an event of company %d: %s", path, p.CompanyID, r.Body)
			}
			if err := signature.Verify([]byte(secret), r.Body, r.Header.Get("X-SMTM-Signature")); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
	}
	if p := e.recv.events(t, "/two", "task.completed")[0]; !strings.HasSuffix(p.Timestamp, "+01:00") && !strings.HasSuffix(p.Timestamp, "+02:00") {
		t.Errorf("Berlin timestamp %q", p.Timestamp)
	}
}

func TestTransitionsFireOnce(t *testing.T) {
	e := newRelay(t)
	// A task that exists before the relay starts: its state comes from the
	// slot's snapshot, not from the stream.
	e.exec(`INSERT INTO tasks (id, company_id, title, status, technician_id) VALUES (500, 1, 'Old', 'completed', 3)`)
	e.exec(`INSERT INTO users (id, company_id, email, full_name, active) VALUES (500, 1, 'gone@example.com', 'Gone', false)`)
	e.start()
	e.exec(`UPDATE tasks SET title = 'Old, edited' WHERE id = 500`)                    // completed already: nothing
	e.exec(`UPDATE tasks SET technician_id = 3 WHERE id = 500`)                        // same technician: nothing
	e.exec(`UPDATE users SET full_name = 'Gone Again', active = false WHERE id = 500`) // inactive already: nothing
	var id int64
	e.pool.QueryRow(context.Background(), `INSERT INTO tasks (company_id, title) VALUES (1, 'New') RETURNING id`).Scan(&id)
	e.exec(`UPDATE tasks SET technician_id = 3 WHERE id = $1`, id)
	e.exec(`UPDATE tasks SET technician_id = 3, title = 'New!' WHERE id = $1`, id)
	e.exec(`UPDATE tasks SET technician_id = 4 WHERE id = $1`, id) // reassigned: fires
	e.exec(`UPDATE tasks SET status = 'completed' WHERE id = $1`, id)
	e.exec(`UPDATE tasks SET title = 'New, edited after completion' WHERE id = $1`, id)
	e.exec(`UPDATE tasks SET status = 'completed', priority = 'low' WHERE id = $1`, id)
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`) // marks the end
	e.waitEvents("/one", "audit.exported", 1)
	time.Sleep(200 * time.Millisecond)
	var types []string
	for _, r := range e.recv.requests("/one") {
		types = append(types, decode(t, r).Event)
	}
	want := []string{"task.assigned", "task.assigned", "task.completed", "audit.exported"}
	slices.Sort(types)
	slices.Sort(want)
	if !slices.Equal(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
}

func TestCompanyRenameAndTimeZone(t *testing.T) {
	e := newRelay(t)
	e.start()
	e.exec(`UPDATE companies SET name = 'PT Kahatex Tbk', time_zone = 'Asia/Tokyo' WHERE id = 1`)
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`)
	p := e.waitEvents("/one", "audit.exported", 1)[0]
	if p.CompanyName != "PT Kahatex Tbk" || !strings.HasSuffix(p.Timestamp, "+09:00") {
		t.Fatalf("after rename: %+v", p)
	}
}

func TestToastedColumnIsNeverNull(t *testing.T) {
	e := newRelay(t)
	e.cfg.Mapping.Rules = []mapper.Rule{{
		Event: "task.completed", Table: "tasks", On: []string{"insert", "update"},
		When: `new.status == "completed" && old.status != "completed"`,
		Data: []map[string]string{{"task_id": "new.id"}, {"description": "new.description"}},
	}}
	e.exec(`ALTER TABLE tasks ALTER COLUMN description SET STORAGE EXTERNAL`)
	e.start()
	big := strings.Repeat("long description ", 10000)
	var id int64
	e.pool.QueryRow(context.Background(), `INSERT INTO tasks (company_id, title, description, status) VALUES (1, 't', $1, 'completed') RETURNING id`, big).Scan(&id)
	var id2 int64
	e.pool.QueryRow(context.Background(), `INSERT INTO tasks (company_id, title, description) VALUES (1, 't2', $1) RETURNING id`, big).Scan(&id2)
	e.exec(`UPDATE tasks SET status = 'completed' WHERE id = $1`, id2) // description not sent: unchanged TOAST
	got := e.waitEvents("/one", "task.completed", 2)
	byID := map[float64]payload{}
	for _, p := range got {
		byID[p.Data["task_id"].(float64)] = p
	}
	if byID[float64(id)].Data["description"] != big {
		t.Fatalf("insert: description not carried")
	}
	p2 := byID[float64(id2)]
	if v, present := p2.Data["description"]; present {
		t.Fatalf("unchanged TOAST value reported as %v (must be omitted, never null)", v)
	}
}

func TestAlterTableWhileRunning(t *testing.T) {
	e := newRelay(t)
	e.start()
	e.exec(`INSERT INTO repair_requests (company_id, title) VALUES (1, 'before')`)
	e.waitEvents("/one", "repair_request.created", 1)
	e.exec(`ALTER TABLE repair_requests ADD COLUMN category text DEFAULT 'mechanical'`)
	e.exec(`INSERT INTO repair_requests (company_id, title, category) VALUES (1, 'after', 'electrical')`)
	e.exec(`UPDATE repair_requests SET status = 'approved' WHERE title = 'after'`)
	e.waitEvents("/one", "repair_request.created", 2)
	e.waitEvents("/one", "repair_request.updated", 1)
}

func TestRetryScheduleToPermanentFailure(t *testing.T) {
	e := newRelay(t)
	e.recv.setRespond(func(request, int) int { return 500 })
	e.start()
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`)
	e.waitFor("6 attempts", func() bool { return len(e.recv.requests("/one")) >= 6 })
	var status string
	var attempts int
	e.waitFor("failed status", func() bool {
		err := e.pool.QueryRow(context.Background(), `SELECT status, attempts FROM relay.deliveries`).Scan(&status, &attempts)
		return err == nil && status == "failed"
	})
	time.Sleep(300 * time.Millisecond)
	reqs := e.recv.requests("/one")
	if len(reqs) != 6 || attempts != 6 {
		t.Fatalf("%d requests, %d attempts recorded; want 6 (first + 5 retries)", len(reqs), attempts)
	}
	for i, r := range reqs {
		if r.Header.Get("X-SMTM-Delivery") != reqs[0].Header.Get("X-SMTM-Delivery") || !bytes.Equal(r.Body, reqs[0].Body) {
			t.Fatalf("attempt %d differs in id or body", i+1)
		}
		if i > 0 && r.At.Sub(reqs[i-1].At) < 50*time.Millisecond {
			t.Fatalf("attempt %d came %v after the previous, before the schedule's 50ms", i+1, r.At.Sub(reqs[i-1].At))
		}
	}
	if !strings.Contains(e.logs.String(), "permanently") {
		t.Errorf("permanent failure not logged")
	}
}

func TestRestartMidStreamLosesNothing(t *testing.T) {
	e := newRelay(t)
	e.start()
	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			if _, err := e.pool.Exec(context.Background(), `INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, $1)`, i); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	<-done
	e.start()
	got := e.waitEvents("/one", "audit.exported", n)
	time.Sleep(300 * time.Millisecond)
	got = e.recv.events(t, "/one", "audit.exported")
	seen := map[float64]bool{}
	for _, p := range got {
		rc := p.Data["row_count"].(float64)
		if seen[rc] {
			t.Fatalf("event for row_count %v delivered twice", rc)
		}
		seen[rc] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct events, want %d", len(seen), n)
	}
	var deliveries int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE webhook_id = (SELECT id FROM relay.webhooks WHERE name = 'one')`).Scan(&deliveries)
	if deliveries != n {
		t.Fatalf("%d deliveries stored, want %d", deliveries, n)
	}
}

func TestWebhookTableEditsTakeEffectWithoutRestart(t *testing.T) {
	e := newRelay(t)
	e.cfg.Webhooks.Source = config.SourceTable
	e.cfg.Webhooks.Endpoints = nil
	e.start()
	e.exec(`INSERT INTO relay.webhooks (company_id, name, url, events, secret) VALUES (1, 'admin-made', $1, '{shutdown.reported}', $2)`,
		e.recv.URL+"/table", secret1)
	saved := time.Now()
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'first')`)
	got := e.waitEvents("/table", "shutdown.reported", 1)
	if time.Since(saved) > 2*time.Second {
		t.Fatalf("new webhook took %v", time.Since(saved))
	}
	_ = got
	// Move it to another URL, then disable it.
	e.exec(`UPDATE relay.webhooks SET url = $1 WHERE name = 'admin-made'`, e.recv.URL+"/moved")
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'second')`)
	e.waitEvents("/moved", "shutdown.reported", 1)
	e.exec(`UPDATE relay.webhooks SET active = false WHERE name = 'admin-made'`)
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'third')`)
	e.exec(`INSERT INTO relay.webhooks (company_id, name, url, events) VALUES (1, 'marker', $1, '{shutdown.reported}')`, e.recv.URL+"/marker")
	e.exec(`INSERT INTO shutdowns (company_id, asset_id, reason) VALUES (1, 1, 'fourth')`)
	e.waitEvents("/marker", "shutdown.reported", 1)
	time.Sleep(200 * time.Millisecond)
	if n := len(e.recv.requests("/moved")) + len(e.recv.requests("/table")); n != 2 {
		t.Fatalf("disabled webhook was called: %d requests", n)
	}
	// Deleting a webhook (soft: its history stays) ends its pending
	// deliveries: here one waiting for a retry far in the future.
	e.exec(`UPDATE relay.deliveries SET status = 'retrying', next_attempt_at = now() + interval '1 hour'
		WHERE webhook_id = (SELECT id FROM relay.webhooks WHERE name = 'marker')`)
	e.exec(`UPDATE relay.webhooks SET deleted_at = now() WHERE name = 'marker'`)
	e.waitFor("pending delivery failed", func() bool {
		var n int
		e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id
			WHERE w.name = 'marker' AND d.status = 'failed' AND d.last_error = 'webhook deleted'`).Scan(&n)
		return n == 1
	})
	// An invalid webhook saved by an admin is reported in one clear line.
	e.exec(`INSERT INTO relay.webhooks (company_id, name, url, events) VALUES (1, 'broken', 'ftp://x', '{no.such}')`)
	e.waitFor("problem logged", func() bool { return strings.Contains(e.logs.String(), "broken") })
}

// TestLargeTransaction maps a transaction larger than one chunk: the events
// of every chunk are stored, and a row changed twice in the transaction
// fires its transition once.
func TestLargeTransaction(t *testing.T) {
	e := newRelay(t)
	e.cfg.Webhooks.Endpoints[0].Events = []string{"task.completed"}
	e.exec(`INSERT INTO tasks (company_id, title) SELECT 1, 'bulk ' || g FROM generate_series(1, 5000) g`)
	e.start()
	e.exec(`BEGIN;
		UPDATE tasks SET status = 'completed';
		UPDATE tasks SET title = title || ' (edited)' WHERE id % 2 = 0;
		UPDATE tasks SET status = 'completed', priority = 'low' WHERE id <= 10;
		COMMIT`)
	e.waitFor("5000 deliveries", func() bool { return len(e.recv.requests("/one")) >= 5000 })
	time.Sleep(300 * time.Millisecond)
	seen := map[float64]bool{}
	for _, p := range e.recv.events(t, "/one", "task.completed") {
		id := p.Data["task_id"].(float64)
		if seen[id] {
			t.Fatalf("task %v completed twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 5000 {
		t.Fatalf("%d tasks completed, want 5000", len(seen))
	}
}

// TestRetriesContinueAfterRestart stops the relay while a delivery waits
// for its retry; the restarted relay sends the retry, with the same id.
func TestRetriesContinueAfterRestart(t *testing.T) {
	e := newRelay(t)
	e.cfg.Delivery.RetrySchedule = []time.Duration{2 * time.Second, 2 * time.Second}
	e.recv.setRespond(func(_ request, n int) int {
		if n == 1 {
			return 503
		}
		return 200
	})
	e.start()
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`)
	e.waitFor("first attempt", func() bool { return len(e.recv.requests("/one")) == 1 })
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.waitFor("the retry", func() bool { return len(e.recv.requests("/one")) == 2 })
	reqs := e.recv.requests("/one")
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 2*time.Second {
		t.Fatalf("retry came %v after the failure, before its due time", gap)
	}
	if reqs[0].Header.Get("X-SMTM-Delivery") != reqs[1].Header.Get("X-SMTM-Delivery") {
		t.Fatal("the retry after a restart has a new delivery id")
	}
	e.waitFor("delivered", func() bool {
		var status string
		e.pool.QueryRow(context.Background(), `SELECT status FROM relay.deliveries`).Scan(&status)
		return status == "delivered"
	})
}

// TestSeparateStateDatabase keeps the relay's state in its own database:
// the platform database gets nothing but the publication and the slot.
func TestSeparateStateDatabase(t *testing.T) {
	e := newRelay(t)
	e.cfg.Database.StateURL = pgtest.NewDatabase(t)
	e.start()
	e.platformActivity(1)
	for _, typ := range allEvents {
		e.waitEvents("/one", typ, 1)
	}
	var inPlatform bool
	e.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'relay')`).Scan(&inPlatform)
	if inPlatform {
		t.Fatal("the relay's schema was created in the platform database")
	}
	state, err := pgxpool.New(context.Background(), e.cfg.Database.StateURL)
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	// Sent ahead of the store, they are stored within a tenth of a second.
	e.waitFor("the deliveries in the state database", func() bool {
		var n int
		state.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries`).Scan(&n)
		return n >= len(allEvents)
	})
}

// syncBuffer collects output written from many goroutines.
type syncBuffer = syncbuf.Buffer
