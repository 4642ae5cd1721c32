package admin_test

import (
	"bytes"
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

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/storetest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/secrets"
	"github.com/smartmaintenance/relay/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Tokens: company 1, company 2, and an operator.
const (
	tokenA  = "token-of-company-one-admin"
	tokenB  = "token-of-company-two-admin"
	tokenOp = "token-of-the-operator"
)

var allEvents = []string{"task.assigned", "task.completed", "task.approved", "task.rejected", "repair_request.created",
	"repair_request.updated", "shutdown.reported", "shutdown.resolved", "user.created", "user.deactivated", "audit.exported"}

// received is one request a receiver got.
type received struct {
	path   string
	header http.Header
	body   []byte
}

// receiver is a real webhook endpoint answering with status().
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	status int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{status: 200}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{path: r.URL.Path, header: r.Header.Clone(), body: body})
		status := rc.status
		rc.mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, "receiver says "+http.StatusText(status))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setStatus(s int) {
	rc.mu.Lock()
	rc.status = s
	rc.mu.Unlock()
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// env is an admin API over a real state database, with a real receiver and
// optionally a running dispatcher.
type env struct {
	t    *testing.T
	st   *store.Store
	srv  *httptest.Server
	recv *receiver
	logs *syncBuffer
	// bodies are every response body the API sent, for leak checks.
	mu     sync.Mutex
	bodies []string
}

type envOptions struct {
	production bool
	allow      []string // nil: loopback
	key        bool     // encrypt secrets at rest
	// maxWebhooks and maxTests are the per-company limits (0: none).
	maxWebhooks, maxTests int
	// timeout bounds a test event (default 2s).
	timeout time.Duration
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	st := storetest.Open(t)
	if o.key {
		box, _ := secrets.New(bytes.Repeat([]byte{42}, secrets.KeyBytes))
		st.UseSecrets(box)
	}
	if o.allow == nil {
		o.allow = []string{"127.0.0.0/8", "::1"}
	}
	policy, err := egress.NewPolicy(o.allow)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string][]string{}
	for _, r := range mapper.DefaultRules() {
		for _, entry := range r.Data {
			for name := range entry {
				fields[r.Event] = append(fields[r.Event], name)
			}
		}
	}
	logs := &syncBuffer{}
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	sender := relay.NewSender(relay.SenderOptions{Timeout: o.timeout, SnippetBytes: 100, Egress: policy})
	t.Cleanup(sender.Close)
	s := admin.New(admin.Options{
		Store: st,
		Tokens: []config.AdminToken{
			{Name: "alice@one", CompanyID: 1, TokenSHA256: admin.TokenHash(tokenA)},
			{Name: "bob@two", CompanyID: 2, TokenSHA256: admin.TokenHash(tokenB)},
			{Name: "ops", Operator: true, TokenSHA256: admin.TokenHash(tokenOp)},
		},
		Events:     allEvents,
		Fields:     fields,
		Production: o.production,
		Egress:     policy,
		Sender:     sender,
		Company: func(_ context.Context, id int64) (admin.Company, error) {
			jakarta, _ := time.LoadLocation("Asia/Jakarta")
			return admin.Company{Name: map[int64]string{1: "PT Kahatex", 2: "Nordwerk GmbH"}[id], Location: jakarta}, nil
		},
		Logger:             slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxWebhooks:        o.maxWebhooks,
		MaxConcurrentTests: o.maxTests,
		ReplayWindow:       30 * 24 * time.Hour,
	})
	e := &env{t: t, st: st, recv: newReceiver(t), logs: logs}
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("admin log:\n%s", logs.String())
		}
	})
	return e
}

// resp is an API answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %q", r.status, r.body)
	}
	return m
}

// errorOf returns the error object of an error answer.
func (r resp) errorOf(t *testing.T) map[string]any {
	t.Helper()
	e, ok := r.json(t)["error"].(map[string]any)
	if !ok {
		t.Fatalf("answer %d has no error object: %s", r.status, r.body)
	}
	return e
}

// call sends a request with token ("" for none) and body (nil for none;
// a string is sent as it is).
func (e *env) call(token, method, path string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	e.mu.Lock()
	e.bodies = append(e.bodies, string(b))
	e.mu.Unlock()
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) responses() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.bodies, "\n")
}

// create registers a webhook for the token's company and returns its id
// and the answer.
func (e *env) create(token string, body map[string]any) (int64, map[string]any) {
	e.t.Helper()
	r := e.call(token, "POST", "/v1/webhooks", body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create: %d %s", r.status, r.body)
	}
	m := r.json(e.t)
	return int64(m["webhook"].(map[string]any)["id"].(float64)), m
}

// delivery records an event of company and a pending delivery of it to
// webhook, as ingest does, created at the given time.
func (e *env) delivery(webhook, company int64, created time.Time) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	sql := strings.ReplaceAll(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
			VALUES ('test', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0,
			        'task.completed', $3, 'tasks', 'update', now(), '{"event":"task.completed"}'::bytea, $4)
			RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, created_at)
		SELECT $1, ev.id, $2, $3, 'task.completed', $4 FROM ev`, "{{schema}}", e.st.Schema())
	if _, err := e.st.Pool().Exec(context.Background(), sql, id, webhook, company, created); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// dispatch runs a dispatcher without retries until the test ends.
func (e *env) dispatch() {
	policy, _ := egress.NewPolicy([]string{"127.0.0.0/8", "::1"})
	d := relay.New(e.st, relay.Options{Egress: policy, PollInterval: 20 * time.Millisecond, Schedule: relay.Schedule{},
		Timeout: 2 * time.Second, SnippetBytes: 100})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *env) status(id uuid.UUID) store.Status {
	d, err := e.st.DeliveryByID(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Status
}

func (e *env) waitStatus(id uuid.UUID, want store.Status) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.status(id) != want {
		if time.Now().After(deadline) {
			e.t.Fatalf("delivery %s is %s, want %s", id, e.status(id), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer collects output written from many goroutines.
type syncBuffer = syncbuf.Buffer
