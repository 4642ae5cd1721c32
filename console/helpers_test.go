package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/console"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/storetest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	tokenA  = "token-of-company-one-admin"
	tokenB  = "token-of-company-two-admin"
	tokenOp = "token-of-the-operator"
)

var allEvents = []string{"task.assigned", "task.completed", "task.approved", "task.rejected", "repair_request.created",
	"repair_request.updated", "shutdown.reported", "shutdown.resolved", "user.created", "user.deactivated", "audit.exported"}

// receiver is a real webhook endpoint whose answer a test sets.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    int
	status int
	body   string
	last   []byte // the last request's body
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{status: 200, body: "ok"}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got++
		rc.last = req
		status, body := rc.status, rc.body
		rc.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) answer(status int, body string) {
	rc.mu.Lock()
	rc.status, rc.body = status, body
	rc.mu.Unlock()
}

func (rc *receiver) lastBody() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return string(rc.last)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got
}

// clock is a test's adjustable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is the admin API and the console on one server over a real state
// database, with a real receiver.
type env struct {
	t     testing.TB
	st    *store.Store
	api   *admin.Server
	srv   *httptest.Server
	recv  *receiver
	clock *clock
	logs  *syncbuf.Buffer
}

func newEnv(t testing.TB) *env { return newEnvProduction(t, false) }

// newEnvProduction is newEnv with admin's production mode (HTTPS only).
func newEnvProduction(t testing.TB, production bool) *env {
	t.Helper()
	st := storetest.Open(t)
	policy, err := egress.NewPolicy([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sender := relay.NewSender(relay.SenderOptions{Timeout: 2 * time.Second, SnippetBytes: 200, Egress: policy})
	t.Cleanup(sender.Close)
	jakarta, _ := time.LoadLocation("Asia/Jakarta")
	api := admin.New(admin.Options{
		Store: st,
		Tokens: []config.AdminToken{
			{Name: "alice@one", CompanyID: 1, TokenSHA256: admin.TokenHash(tokenA)},
			{Name: "bob@two", CompanyID: 2, TokenSHA256: admin.TokenHash(tokenB)},
			{Name: "ops", Operator: true, TokenSHA256: admin.TokenHash(tokenOp)},
		},
		Events:     allEvents,
		Production: production,
		Egress:     policy,
		Sender:     sender,
		Company: func(_ context.Context, id int64) (admin.Company, error) {
			return admin.Company{Name: map[int64]string{1: "PT Kahatex", 2: "Nordwerk GmbH"}[id], Location: jakarta}, nil
		},
		Logger:       log,
		ReplayWindow: 30 * 24 * time.Hour,
	})
	clk := &clock{now: time.Now()}
	con, err := console.New(console.Options{Admin: api, Now: clk.Now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	api.Handle(con.Prefix(), con)
	e := &env{t: t, st: st, api: api, recv: newReceiver(t), clock: clk, logs: logs}
	e.srv = httptest.NewServer(api.Handler())
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return e
}

// actor is the admin.Actor of a token.
func (e *env) actor(token string) admin.Actor {
	a, ok := e.api.Authenticate(token)
	if !ok {
		e.t.Fatalf("unknown token %q", token)
	}
	return a
}

// create registers a webhook through the API's operation.
func (e *env) create(token, name, path string) int64 {
	e.t.Helper()
	u := e.recv.URL + path
	ev := []string{"task.completed"}
	s, err := e.api.CreateWebhook(context.Background(), e.actor(token), admin.WebhookInput{Name: &name, URL: &u, Events: &ev})
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Webhook.ID
}

// delivery records an event of company and a pending delivery of it to
// webhook, as ingest does.
func (e *env) delivery(webhook, company int64, created time.Time) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	sql := strings.ReplaceAll(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
			VALUES ('test', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0,
			        'task.completed', $3, 'tasks', 'update', now(), '{"event":"task.completed","data":{"task_id":1}}'::bytea, $4)
			RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, created_at)
		SELECT $1, ev.id, $2, $3, 'task.completed', $4 FROM ev`, "{{schema}}", e.st.Schema())
	if _, err := e.st.Pool().Exec(context.Background(), sql, id, webhook, company, created); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// browser is a plain HTTP client with a cookie jar that does not follow
// redirects.
type browser struct {
	t    testing.TB
	e    *env
	c    *http.Client
	csrf string
}

type page struct {
	status   int
	location string
	body     string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: e.t, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(method, path string, form url.Values, header map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.e.srv.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	p := page{status: res.StatusCode, location: res.Header.Get("Location"), body: string(out)}
	if m := csrfRE.FindStringSubmatch(p.body); m != nil {
		b.csrf = m[1]
	}
	return p
}

func (b *browser) get(path string) page { return b.do("GET", path, nil, nil) }

// post sends a form with the CSRF token of the last page seen.
func (b *browser) post(path string, form url.Values) page {
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	return b.do("POST", path, form, nil)
}

// signIn signs in with token and checks that it worked.
func (b *browser) signIn(token string) {
	b.t.Helper()
	b.get("/ui/signin")
	p := b.post("/ui/signin", url.Values{"token": {token}})
	if p.status != http.StatusSeeOther {
		b.t.Fatalf("sign in: %d %s", p.status, p.body)
	}
	if p := b.get("/ui/webhooks"); p.status != 200 {
		b.t.Fatalf("list after sign-in: %d", p.status)
	}
}
