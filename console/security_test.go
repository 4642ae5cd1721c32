package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/store"
)

// TestCompanyIsolation: a company-A session cannot see or change company
// B's webhooks or deliveries through any page or form, ids guessed in URLs
// included; each answers 404 as for a webhook that does not exist.
func TestCompanyIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mine := e.create(tokenA, "Mine", "/a")
	theirs := e.create(tokenB, "Theirs of Nordwerk", "/b")
	theirDelivery := e.delivery(theirs, 2, time.Now())
	if _, err := e.st.Pool().Exec(ctx, `UPDATE relay.deliveries SET status = 'failed', finished_at = now() WHERE id = $1`, theirDelivery); err != nil {
		t.Fatal(err)
	}
	before, err := e.st.WebhookByID(ctx, store.AllCompanies, theirs)
	if err != nil {
		t.Fatal(err)
	}

	b := e.browser()
	b.signIn(tokenA)
	list := b.get("/ui/webhooks")
	if !strings.Contains(list.body, "Mine") || strings.Contains(list.body, "Theirs") {
		t.Fatalf("list shows another company's webhook or not its own:\n%s", list.body)
	}
	csrf := b.csrf
	id := fmt.Sprint(theirs)
	for _, path := range []string{"/ui/webhooks/" + id, "/ui/webhooks/" + id + "/edit", "/ui/webhooks/" + id + "/test",
		"/ui/webhooks/" + id + "/delete", "/ui/webhooks/" + id + "/audit", "/ui/webhooks/" + id + "?status=failed"} {
		p := b.get(path)
		if p.status != http.StatusNotFound || strings.Contains(p.body, "Theirs") || strings.Contains(p.body, e.recv.URL+"/b") {
			t.Errorf("GET %s: %d, want 404 without the webhook:\n%s", path, p.status, p.body)
		}
	}
	posts := map[string]url.Values{
		"/ui/webhooks/" + id + "/edit":                                             {"name": {"hijacked"}, "url": {e.recv.URL + "/x"}, "events": {"task.completed"}},
		"/ui/webhooks/" + id + "/active":                                           {"active": {"false"}},
		"/ui/webhooks/" + id + "/test":                                             {"event_type": {"task.completed"}},
		"/ui/webhooks/" + id + "/delete":                                           {"confirm": {"Theirs of Nordwerk"}},
		"/ui/webhooks/" + id + "/refire":                                           {"from": {"2000-01-01T00:00"}, "to": {"2100-01-01T00:00"}},
		"/ui/webhooks/" + id + "/deliveries/" + theirDelivery.String() + "/refire": {},
	}
	for path, form := range posts {
		form.Set("csrf", csrf)
		if p := b.post(path, form); p.status != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", path, p.status)
		}
	}
	// Their delivery through my webhook's URL: not found either.
	p := b.post(fmt.Sprintf("/ui/webhooks/%d/deliveries/%s/refire", mine, theirDelivery), url.Values{"csrf": {csrf}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("refire of another webhook's delivery: %d", p.status)
	}
	if p := b.get(fmt.Sprintf("/ui/webhooks/%d", mine)); !strings.Contains(p.body, "no such delivery") {
		t.Errorf("refire of another webhook's delivery was not refused:\n%s", p.body)
	}
	after, err := e.st.WebhookByID(ctx, store.AllCompanies, theirs)
	if err != nil {
		t.Fatal(err)
	}
	if after.Name != before.Name || after.URL != before.URL || !after.Active || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("company B's webhook changed: %+v", after.Webhook)
	}
	d, _ := e.st.DeliveryByID(ctx, theirDelivery)
	if d.Status != store.StatusFailed {
		t.Fatalf("company B's delivery was re-fired: %s", d.Status)
	}
	if e.recv.count() != 0 {
		t.Fatalf("a test event reached company B's receiver")
	}
	entries, _ := e.st.CompanyAuditLog(ctx, 2, 0, 100)
	if len(entries) != 1 || entries[0].Action != "webhook.create" {
		t.Fatalf("company B's audit log: %+v", entries)
	}
	// The company-wide audit log shows only the session's company.
	if p := b.get("/ui/audit"); strings.Contains(p.body, "Theirs") || strings.Contains(p.body, "bob@two") {
		t.Fatalf("audit log shows company B:\n%s", p.body)
	}
}

// TestCSRF: state-changing forms without the session's CSRF token, with a
// wrong one or sent from another site are refused and change nothing.
func TestCSRF(t *testing.T) {
	e := newEnv(t)
	id := e.create(tokenA, "Target", "/a")
	b := e.browser()
	b.signIn(tokenA)
	path := fmt.Sprintf("/ui/webhooks/%d/active", id)
	for name, tc := range map[string]struct {
		form   url.Values
		header map[string]string
	}{
		"missing":    {url.Values{"active": {"false"}}, nil},
		"wrong":      {url.Values{"active": {"false"}, "csrf": {"not-the-token"}}, nil},
		"other site": {url.Values{"active": {"false"}, "csrf": {b.csrf}}, map[string]string{"Origin": "https://evil.example"}},
		"cross-site": {url.Values{"active": {"false"}, "csrf": {b.csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		if p := b.do("POST", path, tc.form, tc.header); p.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, p.status)
		}
	}
	h, _ := e.st.WebhookByID(context.Background(), 1, id)
	if !h.Active {
		t.Fatal("a refused form disabled the webhook")
	}
	// Every POST route checks it: the delete form without a token.
	if p := b.do("POST", fmt.Sprintf("/ui/webhooks/%d/delete", id), url.Values{"confirm": {"Target"}}, nil); p.status != http.StatusForbidden {
		t.Errorf("delete without token: %d", p.status)
	}
	// The sign-in form needs the value set with it.
	fresh := e.browser()
	if p := fresh.do("POST", "/ui/signin", url.Values{"token": {tokenA}, "csrf": {"guess"}}, nil); p.status != http.StatusForbidden {
		t.Errorf("sign-in without its form: %d", p.status)
	}
	// With the right token it works.
	if p := b.post(path, url.Values{"active": {"false"}}); p.status != http.StatusSeeOther {
		t.Fatalf("valid toggle: %d %s", p.status, p.body)
	}
	h, _ = e.st.WebhookByID(context.Background(), 1, id)
	if h.Active {
		t.Fatal("the valid form did not disable the webhook")
	}
}

// TestSessionEnds: the session cookie is refused after sign-out and after
// expiry; the cookie is HttpOnly and SameSite=Strict, and a wrong token is
// told so.
func TestSessionEnds(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.get("/ui/signin")
	if p := b.post("/ui/signin", url.Values{"token": {"not-a-token"}}); p.status != http.StatusUnauthorized ||
		!strings.Contains(p.body, "not valid") {
		t.Fatalf("wrong token: %d\n%s", p.status, p.body)
	}
	b.get("/ui/signin")
	req, _ := http.NewRequest("POST", e.srv.URL+"/ui/signin", strings.NewReader(url.Values{"token": {tokenA}, "csrf": {b.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "relay_console" && c.Value != "" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.MaxAge <= 0 {
		t.Fatalf("session cookie: %+v", cookie)
	}
	if strings.Contains(cookie.Value, tokenA) {
		t.Fatal("the cookie holds the token")
	}
	// A copy of the cookie, as a thief would keep it.
	stolen := func() int {
		req, _ := http.NewRequest("GET", e.srv.URL+"/ui/webhooks", nil)
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := stolen(); s != 200 {
		t.Fatalf("live session: %d", s)
	}
	b.get("/ui/webhooks")
	if p := b.post("/ui/signout", nil); p.status != http.StatusSeeOther || p.location != "/ui/signin" {
		t.Fatalf("sign out: %d", p.status)
	}
	if s := stolen(); s != http.StatusSeeOther {
		t.Fatalf("session after sign-out: %d, want a redirect to sign-in", s)
	}

	// Expiry: 8 hours later the session is gone.
	b2 := e.browser()
	b2.signIn(tokenA)
	csrf := b2.csrf
	e.clock.add(8*time.Hour + time.Second)
	if p := b2.get("/ui/webhooks"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/ui/signin") {
		t.Fatalf("expired session: %d %s", p.status, p.location)
	}
	if p := b2.post("/ui/webhooks/new", url.Values{"csrf": {csrf}, "name": {"x"}}); p.status != http.StatusUnauthorized {
		t.Fatalf("form with an expired session: %d", p.status)
	}
}

// TestEscaping: a webhook name and a receiver's answer with markup and
// terminal escapes are shown as text.
func TestEscaping(t *testing.T) {
	e := newEnv(t)
	id := e.create(tokenA, `<script>alert("name")</script> & <b>co</b>`, "/a")
	e.recv.answer(200, "<script>alert('body')</script>\x1b[2J\x1b[31mred")
	b := e.browser()
	b.signIn(tokenA)
	p := b.testEvent(t, id)
	for _, pg := range []page{p, b.get("/ui/webhooks"), b.get(fmt.Sprintf("/ui/webhooks/%d", id)), b.get("/ui/audit")} {
		if strings.Contains(pg.body, "<script>alert") || strings.Contains(pg.body, "<b>co") || strings.Contains(pg.body, "\x1b") {
			t.Fatalf("raw markup or escape in the page:\n%s", pg.body)
		}
		if !strings.Contains(pg.body, "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;") {
			t.Fatalf("name not shown as text:\n%s", pg.body)
		}
	}
	if !strings.Contains(p.body, "&lt;script&gt;alert(&#39;body&#39;)&lt;/script&gt;␛[2J␛[31mred") {
		t.Fatalf("receiver body not shown as text:\n%s", p.body)
	}
	// Every page carries the strict policy.
	res, err := http.Get(e.srv.URL + "/ui/signin")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP: %q", csp)
	}
}

// TestEscapingC1AndBidi: a receiver's answer with a C1 control (U+009B,
// a terminal's CSI) and a bidirectional override, and a webhook whose name
// carries bidi marks and whose URL an override (stored before URLs were
// checked for them), are shown with each of those characters as its code
// point, never raw: raw, "\u202egnp.exe" reads as "exe.png". (The name's
// marks are refused since; a name saved before is shown so too.)
func TestEscapingC1AndBidi(t *testing.T) {
	e := newEnv(t)
	id := e.create(tokenA, "Invoices", "/a")
	if _, err := e.st.Pool().Exec(context.Background(), `UPDATE relay.webhooks SET name = name || $1, url = url || $2 WHERE id = $3`,
		" \u200f\u061c", "/\u202egnp.exe?\u2066x\u2069", id); err != nil {
		t.Fatal(err)
	}
	e.recv.answer(200, "csi\u009b31mred\u009b0m \u0085 invoice\u202egnp.exe \u202a\u202b\u202c\u202d\u200e\u2067\u2068")
	b := e.browser()
	b.signIn(tokenA)
	test := b.testEvent(t, id)
	if want := `csi\u009b31mred\u009b0m \u0085 invoice\u202egnp.exe \u202a\u202b\u202c\u202d\u200e\u2067\u2068`; !strings.Contains(test.body, want) {
		t.Errorf("the receiver's answer is not shown as %s:\n%s", want, test.body)
	}
	for name, p := range map[string]page{"test": test, "list": b.get("/ui/webhooks"), "detail": b.get(fmt.Sprintf("/ui/webhooks/%d", id)),
		"edit": b.get(fmt.Sprintf("/ui/webhooks/%d/edit", id)), "audit": b.get("/ui/audit")} {
		if i := strings.IndexFunc(p.body, func(r rune) bool {
			return r >= 0x80 && r <= 0x9f || r == 0x061c || r == 0x200e || r == 0x200f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
		}); i >= 0 {
			t.Errorf("%s: a raw C1 or bidi control at byte %d: %+q", name, i, p.body[max(0, i-40):min(len(p.body), i+40)])
		}
		if name != "audit" && !strings.Contains(p.body, `Invoices \u200f\u061c`) {
			t.Errorf("%s: the name is not shown with its marks escaped", name)
		}
		if name == "detail" && !strings.Contains(p.body, `/a/\u202egnp.exe?\u2066x\u2069`) {
			t.Errorf("detail: the URL is not shown with its override escaped:\n%s", p.body)
		}
	}
}

// TestRevokedTokenEndsItsSessions: a session keeps only its token's hash
// and asks the admin API on every request, so a token removed from the
// configuration (a reload calls SetTokens) ends every session it opened.
func TestRevokedTokenEndsItsSessions(t *testing.T) {
	e := newEnv(t)
	a, b := e.browser(), e.browser()
	a.signIn(tokenA)
	b.signIn(tokenB)
	if p := a.get("/ui/webhooks"); p.status != http.StatusOK {
		t.Fatalf("live session: %d", p.status)
	}
	csrf := a.csrf
	e.api.SetTokens([]config.AdminToken{
		{Name: "bob@two", CompanyID: 2, TokenSHA256: admin.TokenHash(tokenB)},
	})
	if p := a.get("/ui/webhooks"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/ui/signin") {
		t.Fatalf("session of a revoked token: %d %s, want a redirect to sign-in", p.status, p.location)
	}
	if p := a.post("/ui/webhooks/new", url.Values{"csrf": {csrf}, "name": {"x"}}); p.status != http.StatusUnauthorized {
		t.Fatalf("form with a revoked token's session: %d", p.status)
	}
	if p := b.get("/ui/webhooks"); p.status != http.StatusOK {
		t.Fatalf("another token's session after the revocation: %d", p.status)
	}
	a2 := e.browser()
	a2.get("/ui/signin")
	if p := a2.post("/ui/signin", url.Values{"token": {tokenA}}); p.status != http.StatusUnauthorized {
		t.Fatalf("sign-in with a revoked token: %d", p.status)
	}
}

// endless is a body of one repeated byte that costs its sender nothing.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// postLarge sends a form of about n bytes to path with the browser's
// cookies and CSRF token: with its length, or chunked (no length) when
// chunked is true.
func (b *browser) postLarge(path string, n int64, chunked bool) page {
	b.t.Helper()
	head := url.Values{"csrf": {b.csrf}, "name": {"x"}}.Encode() + "&token="
	req, _ := http.NewRequest("POST", b.e.srv.URL+path, io.MultiReader(strings.NewReader(head), io.LimitReader(endless('a'), n)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.ContentLength = int64(len(head)) + n
	if chunked {
		req.ContentLength = -1
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("POST %s of %d bytes: %v", path, n, err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return page{status: res.StatusCode, body: string(out)}
}

// TestBodyLimit: the console bounds every request body itself, as the
// admin API does (it is served next to the API, not through its
// handlers): a body over the bound is answered 413 with a page that says
// so, before it is parsed, signed in or not, whether it announces its
// length or not. The sign-in form, read before sign-in, is bounded to 64
// KiB; the others to the API's 1 MiB, which the largest webhook form fits.
// Twenty 9 MB sign-in forms at once cost the relay about 3 MB, not the
// 790 MB that reading them took.
func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	out := e.browser()
	out.get("/ui/signin")
	in := e.browser()
	in.signIn(tokenA)
	in.get("/ui/webhooks/new")

	// Memory: twenty 9 MB sign-in forms at once, half announcing their
	// length: at most 64 KiB of each is read.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if p := out.postLarge("/ui/signin", 9<<20, i%2 == 0); p.status != http.StatusRequestEntityTooLarge {
				t.Errorf("concurrent sign-in form: %d", p.status)
			}
		})
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("twenty 9 MB sign-in forms allocated %d MB, want under 16", alloc>>20)
	} else {
		t.Logf("twenty 9 MB sign-in forms allocated %.1f MB", float64(alloc)/(1<<20))
	}

	for _, tc := range []struct {
		who     string
		b       *browser
		path    string
		size    int64
		chunked bool
		limit   string
	}{
		{"signed out", out, "/ui/signin", 9 << 20, false, "64 KiB"},
		{"signed out", out, "/ui/signin", 9 << 20, true, "64 KiB"},
		{"signed out", out, "/ui/signin", 65 << 10, true, "64 KiB"},
		{"signed out", out, "/ui/webhooks/new", 9 << 20, false, "1 MiB"},
		{"signed out", out, "/ui/webhooks/new", 9 << 20, true, ""}, // not read: the session is checked first
		{"signed in", in, "/ui/webhooks/new", 9 << 20, false, "1 MiB"},
		{"signed in", in, "/ui/webhooks/new", 2 << 20, true, "1 MiB"},
		{"signed in", in, "/ui/webhooks/1/edit", 1<<20 + 1, true, "1 MiB"},
		{"signed in", in, "/ui/signout", 9 << 20, true, "1 MiB"},
	} {
		p := tc.b.postLarge(tc.path, tc.size, tc.chunked)
		name := fmt.Sprintf("%s, %d bytes to %s (chunked: %v)", tc.who, tc.size, tc.path, tc.chunked)
		switch {
		case tc.limit == "":
			if p.status != http.StatusUnauthorized {
				t.Errorf("%s: %d, want 401", name, p.status)
			}
		case p.status != http.StatusRequestEntityTooLarge || !strings.Contains(p.body, "The form is larger than "+tc.limit+", the most this page accepts"):
			t.Errorf("%s: %d, want 413 saying the bound (%s):\n%s", name, p.status, tc.limit, p.body)
		}
	}
	if hooks, _ := e.st.ListWebhooks(context.Background(), 1); len(hooks) != 0 {
		t.Fatalf("a refused form saved %d webhooks", len(hooks))
	}
	if p := in.get("/ui/webhooks"); p.status != http.StatusOK {
		t.Fatalf("the session after the refused forms: %d", p.status)
	}

	// The largest webhook the API accepts fits: four headers of 8 KiB of
	// "é" and a description of 2,000 "ü", percent-encoded over 100 KiB.
	form := url.Values{"name": {"Largest"}, "url": {e.recv.URL + "/big"}, "events": {"task.completed"},
		"description": {strings.Repeat("ü", config.MaxDescriptionChars)}}
	for _, h := range []string{"X-A", "X-B", "X-C", "X-D"} {
		form.Add("header_name", h)
		form.Add("header_value", strings.Repeat("é", (config.MaxHeadersTotalBytes/4-len(h))/2))
	}
	if n := len(form.Encode()); n < 100<<10 {
		t.Fatalf("the largest form is only %d bytes", n)
	}
	if p := in.post("/ui/webhooks/new", form); p.status != http.StatusOK || !strings.Contains(p.body, "registered") {
		t.Fatalf("the largest webhook form: %d\n%s", p.status, p.body)
	}
}

// testEvent sends webhook id a test event from its page and returns the
// page with the answer.
func (b *browser) testEvent(t *testing.T, id int64) page {
	t.Helper()
	p := b.post(fmt.Sprintf("/ui/webhooks/%d/test", id), url.Values{"event_type": {"task.completed"}})
	if p.status != 200 {
		t.Fatalf("test event: %d", p.status)
	}
	return p
}
