package console_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/demo"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/service"
)

// chromium finds the browser. Without it the browser tests skip, except in
// CI (CI=true), where .ci/run installs it and its absence is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; in CI it is required (.ci/run installs the Debian package chromium)")
	}
	t.Skip("chromium is not installed (Debian: apt-get install chromium); skipping the browser tests")
	return ""
}

// newBrowser starts a headless Chromium with a profile of its own.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// liveRelay is the whole relay (service.Run) on a platform database with
// the reference schema, its admin API and console on a local port.
type liveRelay struct {
	t     *testing.T
	base  string
	token string
	pool  *pgxpool.Pool
	logs  *syncbuf.Buffer
}

func startRelay(t *testing.T) *liveRelay {
	t.Helper()
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	const token = "browser-test-admin-token-of-kahatex"
	cfg := config.Default()
	cfg.Database.URL = url
	cfg.Replication.StatusInterval = 200 * time.Millisecond
	cfg.Delivery.PollInterval = 50 * time.Millisecond
	cfg.Delivery.Timeout = 2 * time.Second
	cfg.Delivery.RetrySchedule = []time.Duration{300 * time.Millisecond}
	cfg.Delivery.DrainTimeout = 2 * time.Second
	cfg.Delivery.AllowNetworks = []string{"127.0.0.0/8", "::1"}
	cfg.Webhooks.Source = config.SourceTable
	cfg.Admin = config.Admin{Listen: addr, Tokens: []config.AdminToken{{Name: "alice@kahatex", CompanyID: 1, TokenSHA256: admin.TokenHash(token)}}}
	cfg.Secrets.Key = base64.StdEncoding.EncodeToString(key)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := demo.WaitForSlot(wctx, pool, cfg.Replication.Slot); err != nil {
		t.Fatalf("relay did not start streaming: %v", err)
	}
	r := &liveRelay{t: t, base: "http://" + addr, token: token, pool: pool, logs: logs}
	r.waitFor("the admin API", func() bool {
		res, err := http.Get(r.base + "/ui/signin")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return r
}

func (r *liveRelay) waitFor(what string, ok func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exportActivity commits a platform change that makes an audit.exported
// event of company 1.
func (r *liveRelay) exportActivity() {
	r.t.Helper()
	if _, err := r.pool.Exec(context.Background(),
		`INSERT INTO activity_log_exports (company_id, exported_by, format, range_from, range_to, row_count)
		 VALUES (1, 2, 'csv', now() - interval '1 day', now(), 42)`); err != nil {
		r.t.Fatal(err)
	}
}

// api calls the JSON API with the relay's token.
func (r *liveRelay) api(method, path string, body any) map[string]any {
	r.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, r.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+r.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	if res.StatusCode >= 300 {
		r.t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, out)
	}
	return m
}

// deliveryStatuses are the statuses of a webhook's deliveries, newest
// first, as the JSON API reports them.
func (r *liveRelay) deliveryStatuses(id int64) []string {
	m := r.api("GET", fmt.Sprintf("/v1/webhooks/%d/deliveries", id), nil)
	var out []string
	for _, d := range m["deliveries"].([]any) {
		out = append(out, d.(map[string]any)["status"].(string))
	}
	return out
}

// waitText waits until the element's text contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		got, err = chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		cancel()
		if err == nil && strings.Contains(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: text %q does not contain %q", sel, got, want)
}

func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action that returns a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the page into docs/img when UPDATE_SCREENSHOTS=1, so
// that the README's pictures come from this test.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	// Let a toggle's 150 ms transition end, so that the picture shows the
	// state the page settled in.
	run(t, ctx, "settle before "+name, chromedp.Sleep(300*time.Millisecond))
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join("..", "docs", "img", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserWalkthrough drives headless Chromium through the admin guide's
// Webhooks section against the whole relay, a real receiver and
// PostgreSQL: sign in, register a webhook (the HTTPS warning shows), send a
// test event and see the receiver's 200, see a failed delivery with its
// attempts, fix the receiver and re-fire it, replay the last 24 hours to
// it, toggle the webhook off in place
// (no new event arrives), delete it after confirming, and find that in the
// audit log.
func TestBrowserWalkthrough(t *testing.T) {
	ctx := newBrowser(t)
	r := startRelay(t)
	recv := newReceiver(t)
	ui := r.base + "/ui/"

	// Sign in; the empty list explains what a webhook is.
	run(t, ctx, "sign in",
		chromedp.Navigate(ui+"webhooks"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "wrong-token"),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("#token-error")),
	)
	waitText(t, ctx, "#token-error", "not valid")
	run(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), r.token),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(".empty")),
	)
	waitText(t, ctx, ".empty", "A webhook is a URL")

	// Register a webhook against the local receiver: plain http, so the
	// HTTPS warning shows as the URL is typed and after saving.
	run(t, ctx, "new webhook form",
		chromedp.Click(chromedp.CSS(`a[href="/ui/webhooks/new"]`)),
		chromedp.WaitVisible(chromedp.CSS("#name")),
		chromedp.SendKeys(chromedp.CSS("#name"), "CMMS bridge"),
		chromedp.SendKeys(chromedp.CSS("#url"), recv.URL+"/cmms"),
		chromedp.WaitVisible(chromedp.CSS("#url-http")),
		chromedp.Click(chromedp.CSS(`input[value="audit.exported"]`)),
		chromedp.Click(chromedp.CSS(`input[value="task.completed"]`)),
		chromedp.SendKeys(chromedp.CSS("#hn0"), "Authorization"),
		chromedp.SendKeys(chromedp.CSS("#hv0"), "Bearer xyz"),
		chromedp.SendKeys(chromedp.CSS("#description"), "Posts exported activity logs to the CMMS."),
	)
	screenshot(t, ctx, "console-form.png")
	run(t, ctx, "save the webhook",
		chromedp.Submit(chromedp.CSS("#name")),
		chromedp.WaitVisible(chromedp.CSS("#generated-secret")),
	)
	secret := get(t, ctx, "generated secret", chromedp.Value(chromedp.CSS("#generated-secret")))
	if len(secret) < 32 {
		t.Fatalf("generated secret %q", secret)
	}
	run(t, ctx, "to the detail page",
		chromedp.Click(chromedp.CSS(`a.btn-primary`)),
		chromedp.WaitVisible(chromedp.CSS("#deliveries")),
	)
	waitText(t, ctx, "main", "This URL is not HTTPS")
	loc := get(t, ctx, "location", chromedp.Location())
	var id int64
	if _, err := fmt.Sscanf(loc[strings.LastIndex(loc, "/")+1:], "%d", &id); err != nil {
		t.Fatalf("detail URL %q", loc)
	}
	// The secret is never shown again, nor the header's value.
	html := get(t, ctx, "detail html", chromedp.OuterHTML(chromedp.CSS("html")))
	if strings.Contains(html, secret) || strings.Contains(html, "Bearer xyz") {
		t.Fatal("the detail page shows the secret or a header value")
	}

	// Send a test event and see the receiver's 200.
	run(t, ctx, "test event",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/ui/webhooks/%d/test"]`, id))),
		chromedp.WaitVisible(chromedp.CSS("#event_type")),
		chromedp.SetValue(chromedp.CSS("#event_type"), "audit.exported"),
		chromedp.Submit(chromedp.CSS("#event_type")),
		chromedp.WaitVisible(chromedp.CSS("#test-status")),
	)
	waitText(t, ctx, "#test-status", "200")
	waitText(t, ctx, "#test-snippet", "ok")
	screenshot(t, ctx, "console-test.png")
	if recv.count() != 1 {
		t.Fatalf("receiver got %d requests, want the test event", recv.count())
	}

	// The receiver fails: the event's delivery fails after its attempts.
	recv.answer(500, "database down")
	r.exportActivity()
	r.waitFor("a failed delivery", func() bool {
		s := r.deliveryStatuses(id)
		return len(s) == 1 && s[0] == "failed"
	})
	run(t, ctx, "failed deliveries",
		chromedp.Navigate(fmt.Sprintf("%swebhooks/%d?status=failed", ui, id)),
		chromedp.WaitVisible(chromedp.CSS(".deliveries summary")),
		chromedp.Click(chromedp.CSS(".deliveries summary")),
		chromedp.WaitVisible(chromedp.CSS(".attempts")),
	)
	waitText(t, ctx, ".attempts tbody", "500")
	waitText(t, ctx, ".attempts tbody", "database down")
	rows := get(t, ctx, "attempts", chromedp.Evaluate[int](`document.querySelectorAll(".attempts tbody tr").length`))
	if rows != 2 {
		t.Fatalf("%d attempts shown, want 2 (first and one retry)", rows)
	}

	// Fixed: re-fire, and it is delivered.
	recv.answer(200, "ok")
	run(t, ctx, "re-fire",
		chromedp.Click(chromedp.CSS(".delivery-body form button")),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
	)
	waitText(t, ctx, ".flash-ok", "re-fired")
	r.waitFor("the re-fired delivery", func() bool {
		s := r.deliveryStatuses(id)
		return len(s) == 1 && s[0] == "delivered"
	})
	run(t, ctx, "delivered",
		chromedp.Navigate(fmt.Sprintf("%swebhooks/%d?status=delivered", ui, id)),
		chromedp.WaitVisible(chromedp.CSS(".deliveries .status-delivered")),
		chromedp.Click(chromedp.CSS(".deliveries summary")),
	)
	waitText(t, ctx, ".attempts tbody", "200")

	// A second webhook of the company witnesses that events still flow.
	r.api("POST", "/v1/webhooks", map[string]any{"name": "Data warehouse feed", "url": recv.URL + "/witness",
		"events": []string{"audit.exported"}, "description": "Nightly analytics"})
	r.exportActivity()
	r.waitFor("the witness's delivery", func() bool { return recv.count() >= 5 })
	run(t, ctx, "detail", chromedp.Navigate(fmt.Sprintf("%swebhooks/%d", ui, id)), chromedp.WaitVisible(chromedp.CSS("#deliveries")),
		chromedp.Click(chromedp.CSS(".deliveries li:last-child summary")),
		chromedp.WaitVisible(chromedp.CSS(".deliveries li:last-child .attempts")))
	screenshot(t, ctx, "console-detail.png")

	// Replay the last 24 hours to it: the answer says how many events the
	// range holds; the replay runs, sends them again, and is listed done.
	sent := recv.count()
	run(t, ctx, "replay",
		chromedp.Click(chromedp.CSS("#replay-submit")),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
	)
	waitText(t, ctx, ".flash-ok", "queued: 2 events from")
	r.waitFor("the replay to finish", func() bool {
		rs := r.api("GET", fmt.Sprintf("/v1/webhooks/%d/replays", id), nil)["replays"].([]any)
		return len(rs) == 1 && rs[0].(map[string]any)["state"] == "done"
	})
	run(t, ctx, "the replay done", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("table.replays")))
	waitText(t, ctx, "table.replays tbody tr:first-child", "DONE") // shown in capitals
	if got := recv.count() - sent; got != 2 {
		t.Fatalf("the replay sent %d requests, want the 2 events again", got)
	}
	screenshot(t, ctx, "console-replay.png")

	// Toggle inactive in place on the list.
	run(t, ctx, "list",
		chromedp.Navigate(ui+"webhooks"),
		chromedp.WaitVisible(chromedp.CSS("table.list")),
	)
	sw := fmt.Sprintf(`form[action="/ui/webhooks/%d/active"] button`, id)
	run(t, ctx, "toggle", chromedp.Click(chromedp.CSS(sw)),
		chromedp.WaitVisible(chromedp.CSS(sw+`[aria-checked="false"]`)))
	screenshot(t, ctx, "console-list.png")
	m := r.api("GET", fmt.Sprintf("/v1/webhooks/%d", id), nil)
	if m["webhook"].(map[string]any)["active"] != false {
		t.Fatal("the toggle did not disable the webhook")
	}
	before := recv.count()
	r.exportActivity()
	r.waitFor("the witness's next delivery", func() bool { return recv.count() > before })
	if got := recv.count(); got != before+1 {
		t.Fatalf("receiver got %d new requests, want only the witness's", got-before)
	}
	for _, s := range r.deliveryStatuses(id) {
		if s == "retrying" {
			t.Fatalf("the disabled webhook's delivery was attempted: %v", r.deliveryStatuses(id))
		}
	}

	// Delete with confirmation; the change is in the audit log.
	run(t, ctx, "delete",
		chromedp.Navigate(fmt.Sprintf("%swebhooks/%d", ui, id)),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/ui/webhooks/%d/delete"]`, id))),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.SendKeys(chromedp.CSS("#confirm"), "CMMS bridge"),
		chromedp.Submit(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
	)
	waitText(t, ctx, ".flash-ok", "deleted")
	listText := get(t, ctx, "list after delete", chromedp.Text(chromedp.CSS("table.list")))
	if strings.Contains(listText, "CMMS bridge") {
		t.Fatal("the deleted webhook is still listed")
	}
	run(t, ctx, "audit log",
		chromedp.Click(chromedp.CSS(`a[href="/ui/audit"]`)),
		chromedp.WaitVisible(chromedp.CSS("table.audit")),
	)
	waitText(t, ctx, "table.audit tbody tr:first-child", "Deleted")
	waitText(t, ctx, "table.audit tbody tr:first-child", "CMMS bridge")
	waitText(t, ctx, "table.audit tbody tr:first-child", "alice@kahatex")
	waitText(t, ctx, "table.audit", "Disabled")
	waitText(t, ctx, "table.audit", "Re-fired a delivery")
	screenshot(t, ctx, "console-audit.png")
	run(t, ctx, "the deleted webhook's trail",
		chromedp.Click(chromedp.CSS("table.audit tbody tr:first-child a")),
		chromedp.WaitVisible(chromedp.CSS("table.audit")),
	)
	waitText(t, ctx, "main", "was deleted")
}

// signInAt signs the browser in to the console served at base with token
// and waits for the list.
func signInAt(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	run(t, ctx, "sign in",
		chromedp.Navigate(base+"/ui/signin"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/webhooks/new"]`)),
	)
}

// latency serves h with each POST's answer held back by d after it was
// made, as a slow network does: the change is done when the browser may
// still act on the page it came from.
func latency(t *testing.T, h http.Handler, d time.Duration, posts *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		posts.Add(1)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		time.Sleep(d)
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBrowserDoubleSubmit: two clicks on "Save webhook" 15 ms apart, the
// first answer not back yet, post the form once: one webhook is created
// and the page shows its one-time secret (not "Not saved" from a second
// post finding the name taken). Back on the form, it can be sent again.
func TestBrowserDoubleSubmit(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t)
	var posts atomic.Int32
	srv := latency(t, e.api.Handler(), 300*time.Millisecond, &posts)
	signInAt(t, ctx, srv.URL, tokenA)
	run(t, ctx, "new webhook form",
		chromedp.Navigate(srv.URL+"/ui/webhooks/new"),
		chromedp.WaitVisible(chromedp.CSS("#name")),
		chromedp.SendKeys(chromedp.CSS("#name"), "Double click"),
		chromedp.SendKeys(chromedp.CSS("#url"), e.recv.URL+"/double"),
		chromedp.Click(chromedp.CSS(`input[value="task.completed"]`)),
	)
	const save = `form.form button[type="submit"]`
	at := get(t, ctx, "the Save button", chromedp.Evaluate[[]float64](`(() => {
		const b = document.querySelector('`+save+`'); b.scrollIntoView({block: "center"});
		const r = b.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()`))
	posts.Store(0)
	run(t, ctx, "double click on Save",
		chromedp.MouseClickXY(at[0], at[1]),
		chromedp.Sleep(15*time.Millisecond),
		chromedp.MouseClickXY(at[0], at[1]),
		chromedp.WaitVisible(chromedp.CSS("#generated-secret, form.form .flash-error")),
	)
	if n := posts.Load(); n != 1 {
		t.Errorf("the form was posted %d times, want once", n)
	}
	hooks, _ := e.st.ListWebhooks(context.Background(), 1)
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks saved, want 1", len(hooks))
	}
	shown := get(t, ctx, "the page after saving", chromedp.Evaluate[string](
		`(document.getElementById("generated-secret") || {value: document.querySelector("main").innerText.slice(0, 200)}).value`))
	if shown != hooks[0].Secret {
		t.Fatalf("the page does not show the webhook's secret; it shows %q", shown)
	}

	// Back to the form: its button works again.
	run(t, ctx, "back to the form", chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS(save)))
	if disabled := get(t, ctx, "the Save button", chromedp.Evaluate[bool](`document.querySelector('`+save+`').disabled`)); disabled {
		t.Fatal("back on the form, Save is still disabled")
	}
}

// TestBrowserLongTextsWrap: a 200-character name without a space, and a
// 2,000-character description starting with a long link, wrap: the list's
// table stays within its container with every column in view, the row
// shows two lines of the description (all of it in its title), and the
// webhook's page does not scroll sideways. The form's Description is one
// line: a line break put into it is dropped.
func TestBrowserLongTextsWrap(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t)
	ctxb := context.Background()
	name := strings.Repeat("N", config.MaxWebhookNameChars)
	desc := "See https://wiki.example.com/" + strings.Repeat("x", 400) + " "
	desc += strings.Repeat("lorem ", (config.MaxDescriptionChars-len(desc))/6)
	u, ev := e.recv.URL+"/"+strings.Repeat("p", 300), []string{"task.completed"}
	s, err := e.api.CreateWebhook(ctxb, e.actor(tokenA), admin.WebhookInput{Name: &name, URL: &u, Events: &ev, Description: &desc})
	if err != nil {
		t.Fatal(err)
	}
	e.create(tokenA, "Short", "/short")
	signInAt(t, ctx, e.srv.URL, tokenA)
	run(t, ctx, "list", chromedp.Navigate(e.srv.URL+"/ui/webhooks"), chromedp.WaitVisible(chromedp.CSS("table.list")))
	type box struct {
		Table, Wrap, ActiveRight, WrapRight, RowHeight, DescLines float64
		Title                                                     string
	}
	m := get(t, ctx, "measure the list", chromedp.Evaluate[box](`(() => {
		const wrap = document.querySelector(".table-wrap"), table = document.querySelector("table.list");
		const row = table.querySelector("tbody tr"), d = row.querySelector(".desc");
		const active = table.querySelector("thead th:last-child").getBoundingClientRect();
		const lh = parseFloat(getComputedStyle(d).lineHeight);
		return {Table: table.scrollWidth, Wrap: wrap.clientWidth, ActiveRight: active.right, WrapRight: wrap.getBoundingClientRect().right,
			RowHeight: row.getBoundingClientRect().height, DescLines: d.getBoundingClientRect().height / lh, Title: d.title};
	})()`))
	t.Logf("list: %+v", box{m.Table, m.Wrap, m.ActiveRight, m.WrapRight, m.RowHeight, m.DescLines, ""})
	if m.Table > m.Wrap || m.ActiveRight > m.WrapRight+0.5 {
		t.Errorf("the table is %.0f px wide in a container of %.0f px (Active ends at %.0f, the container at %.0f)",
			m.Table, m.Wrap, m.ActiveRight, m.WrapRight)
	}
	if m.DescLines > 2.1 || m.RowHeight > 300 {
		t.Errorf("the row is %.0f px tall, its description %.1f lines; want at most 2", m.RowHeight, m.DescLines)
	}
	if m.Title != desc {
		t.Errorf("the description's title is %q, want the whole description", m.Title)
	}
	run(t, ctx, "detail", chromedp.Navigate(fmt.Sprintf("%s/ui/webhooks/%d", e.srv.URL, s.Webhook.ID)), chromedp.WaitVisible(chromedp.CSS("#deliveries")))
	if w := get(t, ctx, "detail width", chromedp.Evaluate[[]float64](
		`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`)); w[0] > w[1] {
		t.Errorf("the webhook's page is %.0f px wide in a window of %.0f px", w[0], w[1])
	}
	run(t, ctx, "new form", chromedp.Navigate(e.srv.URL+"/ui/webhooks/new"), chromedp.WaitVisible(chromedp.CSS("#description")))
	if v := get(t, ctx, "a line break in the description", chromedp.Evaluate[string](
		`(() => { const d = document.getElementById("description"); d.value = "one\r\ntwo"; return d.value; })()`)); v != "onetwo" {
		t.Errorf("the description holds %q: a line break the relay refuses", v)
	}
}
