package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// fast are options for tests: quick polls, quick retries.
func fast(o Options) Options {
	if o.PollInterval == 0 {
		o.PollInterval = 10 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 200 * time.Millisecond
	}
	return o
}

// body is a payload whose bytes a re-encoding would change: odd spacing,
// key order, escapes and non-ASCII text.
var body = []byte(`{"event":"task.completed",  "timestamp":"2026-04-24T09:15:30+07:00","company_id":1,` +
	`"data":{"z":1,"a":"caf\u00e9 ☕ \"q\"","n":1.50}}` + "\n")

func wantSignature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestHeadersAndSignature(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	const secret = "whsec_0123456789abcdef"
	wh := e.webhook(rc.URL+"/hook?x=1", secret, map[string]string{
		"Authorization":    "Bearer abc",
		"x-custom":         "one",
		"content-type":     "text/plain",
		"USER-AGENT":       "evil/1.0",
		"x-smtm-event":     "spoofed.event",
		"X-Smtm-Delivery":  "00000000-0000-0000-0000-000000000000",
		"X-SMTM-SIGNATURE": "sha256=0000",
		"X-SMTM-Other":     "nope",
	})
	id := e.delivery(wh, body)
	e.start(fast(Options{}))
	e.waitStatus(id, store.StatusDelivered, 5*time.Second)

	got := rc.receipts(id)
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	r := got[0]
	if !bytes.Equal(r.body, body) {
		t.Fatalf("body changed:\n got %q\nwant %q", r.body, body)
	}
	want := map[string]string{
		"Content-Type":     "application/json",
		"User-Agent":       "SmartMaintenance/1.0",
		"X-Smtm-Event":     "task.completed",
		"X-Smtm-Delivery":  id.String(),
		"X-Smtm-Signature": wantSignature(secret, body),
		"Authorization":    "Bearer abc",
		"X-Custom":         "one",
		"Content-Length":   fmt.Sprint(len(body)),
	}
	for k, v := range want {
		if vals := r.header.Values(k); len(vals) != 1 || vals[0] != v {
			t.Errorf("header %s = %q, want [%q]", k, vals, v)
		}
	}
	for k := range r.header {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected header %s: %q", k, r.header[k])
		}
	}
	// Verify as a receiver would, independently of the relay's code.
	sig, _ := strings.CutPrefix(r.header.Get("X-SMTM-Signature"), "sha256=")
	mac, err := hex.DecodeString(sig)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(r.body)
	if err != nil || !hmac.Equal(mac, m.Sum(nil)) {
		t.Fatalf("signature %q does not verify", r.header.Get("X-SMTM-Signature"))
	}
}

// TestSignatureFollowsANewSecret checks that the signers kept per secret
// never sign with a secret the webhook no longer has.
func TestSignatureFollowsANewSecret(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "whsec_first_0123456789", nil)
	e.start(fast(Options{}))
	for _, secret := range []string{"whsec_first_0123456789", "whsec_second_0123456789"} {
		e.exec("UPDATE {{schema}}.webhooks SET secret = $1", secret)
		id := e.delivery(wh, body)
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		got := rc.receipts(id)
		if len(got) != 1 {
			t.Fatalf("secret %s: %d requests, want 1", secret, len(got))
		}
		if sig := got[0].header.Get("X-SMTM-Signature"); sig != wantSignature(secret, body) {
			t.Fatalf("secret %s: signature %q, want %q", secret, sig, wantSignature(secret, body))
		}
	}
}

func TestNoSignatureWithoutSecret(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	nullSecret := e.webhook(rc.URL, "", map[string]string{"X-SMTM-Signature": "sha256=forged"})
	emptySecret := e.webhook(rc.URL, "", nil)
	e.exec(`UPDATE {{schema}}.webhooks SET secret = '' WHERE id = $1`, emptySecret)
	ids := []uuid.UUID{e.delivery(nullSecret, body), e.delivery(emptySecret, body)}
	e.start(fast(Options{UserAgent: "Custom/2"}))
	for _, id := range ids {
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		r := rc.receipts(id)[0]
		if v, ok := r.header["X-Smtm-Signature"]; ok {
			t.Errorf("delivery %s signed without a secret: %q", id, v)
		}
		if ua := r.header.Get("User-Agent"); ua != "Custom/2" {
			t.Errorf("User-Agent %q, want Custom/2", ua)
		}
	}
}

func TestRetriesFollowScheduleToFailure(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "  down for maintenance\n")
	})
	const secret = "topsecret-value-1234"
	wh := e.webhook(rc.URL, secret, map[string]string{"Authorization": "Bearer hidden-token"})
	id := e.delivery(wh, body)
	ms := time.Millisecond
	sched := Schedule{20 * ms, 40 * ms, 60 * ms, 80 * ms, 100 * ms}
	var logs logBuffer
	// A long poll: retries must be sent when due, not at the next poll.
	e.start(fast(Options{Schedule: sched, PollInterval: time.Hour, SnippetBytes: 1024,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}))
	d := e.waitStatus(id, store.StatusFailed, 10*time.Second)

	if d.Attempts != 6 || d.LastStatusCode != 500 || d.LastError != "HTTP 500" || d.FinishedAt.IsZero() || d.LeaseOwner != "" {
		t.Fatalf("failed delivery: %+v", d)
	}
	as := e.attempts(id)
	if len(as) != 6 {
		t.Fatalf("%d attempt rows, want 6", len(as))
	}
	for i, a := range as {
		if a.Attempt != i+1 || a.StatusCode != 500 || a.Error != "HTTP 500" || a.Snippet != "down for maintenance" {
			t.Errorf("attempt row %d: %+v", i, a)
		}
	}
	got := rc.receipts(id)
	if len(got) != 6 {
		t.Fatalf("%d requests, want 6", len(got))
	}
	for i, r := range got {
		if !bytes.Equal(r.body, body) || r.header.Get("X-SMTM-Delivery") != id.String() ||
			r.header.Get("X-SMTM-Signature") != wantSignature(secret, body) {
			t.Errorf("request %d differs: body %q, headers %v", i+1, r.body, r.header)
		}
		if i == 0 {
			continue
		}
		gap, want := r.at.Sub(got[i-1].at), sched[i-1]
		if gap < want {
			t.Errorf("gap before attempt %d: %v, want at least %v", i+1, gap, want)
		}
		if gap > want+time.Second {
			t.Errorf("gap before attempt %d: %v, want about %v (the retry waited for a poll?)", i+1, gap, want)
		}
	}
	time.Sleep(50 * time.Millisecond) // no seventh attempt
	if n := len(rc.receipts(id)); n != 6 {
		t.Fatalf("%d requests after permanent failure, want 6", n)
	}

	out := logs.String()
	var failLines []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, "failed permanently") {
			failLines = append(failLines, line)
		}
	}
	if len(failLines) != 1 {
		t.Fatalf("want one permanent-failure line, got %d:\n%s", len(failLines), out)
	}
	for _, want := range []string{"level=WARN", "delivery_id=" + id.String(), fmt.Sprintf("webhook_id=%d", wh),
		"event_type=task.completed", "attempts=6", `error="HTTP 500"`} {
		if !strings.Contains(failLines[0], want) {
			t.Errorf("failure line lacks %q: %s", want, failLines[0])
		}
	}
	// The signature's hex, not a fragment of it: a fragment may stand in
	// the delivery's random id, which the logs rightly carry.
	sig := strings.TrimPrefix(wantSignature(secret, body), "sha256=")
	for _, secretish := range []string{secret, "hidden-token", "sha256=", sig, "maintenance"} {
		if strings.Contains(out, secretish) {
			t.Errorf("logs contain %q:\n%s", secretish, out)
		}
	}
}

func TestRetryThenDelivered(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	e.start(fast(Options{Schedule: Schedule{20 * time.Millisecond}}))
	d := e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	if d.Attempts != 2 || d.LastStatusCode != 202 || d.LastError != "" {
		t.Fatalf("delivered: %+v", d)
	}
	as := e.attempts(id)
	if len(as) != 2 || as[0].StatusCode != 500 || as[1].StatusCode != 202 || as[1].Error != "" {
		t.Fatalf("attempts: %+v", as)
	}
	got := rc.receipts(id)
	if len(got) != 2 || got[0].header.Get("X-SMTM-Delivery") != id.String() || got[1].header.Get("X-SMTM-Delivery") != id.String() ||
		!bytes.Equal(got[0].body, got[1].body) {
		t.Fatalf("requests: %+v", got)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	e := newEnv(t)
	target := newReceiver(t, nil)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	e.start(fast(Options{Schedule: Schedule{}}))
	d := e.waitStatus(id, store.StatusFailed, 5*time.Second)
	as := e.attempts(id)
	if d.Attempts != 1 || len(as) != 1 || as[0].StatusCode != 302 || !strings.Contains(as[0].Error, "redirect") {
		t.Fatalf("delivery %+v, attempts %+v", d, as)
	}
	if n := target.count(); n != 0 {
		t.Fatalf("redirect target called %d times", n)
	}
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	e.start(fast(Options{Schedule: Schedule{}, Timeout: 150 * time.Millisecond}))
	d := e.waitStatus(id, store.StatusFailed, 5*time.Second)
	as := e.attempts(id)
	if len(as) != 1 || as[0].StatusCode != 0 || !strings.Contains(as[0].Error, "timeout") ||
		as[0].Duration < 150*time.Millisecond || as[0].Duration > 2*time.Second {
		t.Fatalf("delivery %+v, attempts %+v", d, as)
	}
}

// rawServer accepts TCP connections and hands each to serve.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	return "http://" + l.Addr().String() + "/"
}

func TestBrokenEndpoints(t *testing.T) {
	e := newEnv(t)
	readRequest := func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(time.Second))
		c.Read(make([]byte, 64<<10))
	}
	garbage := rawServer(t, func(c net.Conn) {
		readRequest(c)
		c.Write([]byte("\x00\xffnot http at all\r\n\r\n"))
	})
	hangup := rawServer(t, func(c net.Conn) { readRequest(c) })
	refused := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/"
	}()
	big := bytes.Repeat([]byte("é"), 100<<10)
	junk := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("\n ok\x00\xff\xfe "))
		w.Write(big)
	})
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(tlsSrv.Close)
	cases := map[string]struct {
		url     string
		status  store.Status
		code    int
		errPart string
	}{
		"garbage":  {garbage, store.StatusFailed, 0, `the answer is not HTTP (it begins "\x00\xffnot http at all")`},
		"hangup":   {hangup, store.StatusFailed, 0, "connection closed"},
		"refused":  {refused, store.StatusFailed, 0, "refused"},
		"bad url":  {"http://[::1", store.StatusFailed, 0, "invalid webhook URL"},
		"dns":      {"http://does-not-exist.invalid/", store.StatusFailed, 0, "dns"},
		"tls":      {tlsSrv.URL, store.StatusFailed, 0, "certificate"},
		"junk 200": {junk.URL, store.StatusDelivered, 200, ""},
	}
	ids := map[string]uuid.UUID{}
	for name, c := range cases {
		ids[name] = e.delivery(e.webhook(c.url, "", nil), body)
	}
	e.start(fast(Options{Schedule: Schedule{}, SnippetBytes: 10}))
	for name, c := range cases {
		d := e.waitStatus(ids[name], c.status, 10*time.Second)
		as := e.attempts(ids[name])
		if len(as) != 1 || as[0].StatusCode != c.code || d.LastStatusCode != c.code {
			t.Errorf("%s: delivery %+v, attempts %+v", name, d, as)
			continue
		}
		if !strings.Contains(as[0].Error, c.errPart) || strings.ContainsAny(as[0].Error, "\r\n") || (c.errPart == "") != (as[0].Error == "") {
			t.Errorf("%s: error %q, want one line containing %q", name, as[0].Error, c.errPart)
		}
	}
	if a := e.attempts(ids["junk 200"]); a[0].Snippet != "ok \u00e9" {
		// "\n ok" NUL, invalid bytes and a cut rune are dropped, spaces trimmed.
		t.Errorf("snippet %q", a[0].Snippet)
	}
}

func TestHangingEndpointDoesNotDelayOthers(t *testing.T) {
	e := newEnv(t)
	hanging := newReceiver(t, hang)
	stuck := e.webhook(hanging.URL, "", nil)
	var stuckIDs []uuid.UUID
	for range 10 {
		stuckIDs = append(stuckIDs, e.delivery(stuck, body))
	}
	healthy := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		time.Sleep(5 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	var ids []uuid.UUID
	for range 3 {
		wh := e.webhook(healthy.URL, "", nil)
		for range 10 {
			ids = append(ids, e.delivery(wh, body))
		}
	}
	e.start(fast(Options{Workers: 6, PerWebhook: 2, Timeout: 30 * time.Second}))
	start := time.Now()
	for _, id := range ids {
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	}
	took := time.Since(start)
	if n := hanging.active(); n != 2 {
		t.Errorf("%d requests hanging, want PerWebhook = 2", n)
	}
	if n := hanging.count(); n != 2 {
		t.Errorf("hanging endpoint got %d requests, want 2", n)
	}
	for _, id := range stuckIDs {
		if as := e.attempts(id); len(as) != 0 {
			t.Fatalf("hanging delivery has attempts %+v", as)
		}
	}
	t.Logf("30 healthy deliveries in %v beside a hanging endpoint", took)
}

func TestTwoDispatchersNeverSendOneAttemptTwice(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	opts := fast(Options{Workers: 8, PerWebhook: 2, Schedule: Schedule{5 * time.Millisecond}, PollInterval: 5 * time.Millisecond, Logger: logger})
	a, b := opts, opts
	a.Owner, b.Owner = "relay-a", "relay-b"
	a.UserAgent, b.UserAgent = "A/1", "B/1"
	e.start(a)
	e.start(b)
	// In waves, a poll interval apart: either dispatcher can claim a
	// whole wave, so one wave would often go to one of them only.
	var ids []uuid.UUID
	for i := range 200 {
		ids = append(ids, e.delivery(e.webhook(fmt.Sprintf("%s/%d", rc.URL, i%5), "", nil), body))
		if i%20 == 19 {
			time.Sleep(opts.PollInterval)
		}
	}
	for _, id := range ids {
		e.waitStatus(id, store.StatusDelivered, 20*time.Second)
	}
	sentBy := map[string]int{}
	for _, id := range ids {
		got := rc.receipts(id)
		as := e.attempts(id)
		if len(got) != 2 || len(as) != 2 {
			t.Fatalf("delivery %s: %d requests and %d attempt rows, want 2 and 2", id, len(got), len(as))
		}
		for _, r := range got {
			sentBy[r.header.Get("User-Agent")]++
		}
	}
	if sentBy["A/1"] == 0 || sentBy["B/1"] == 0 {
		t.Fatalf("requests per dispatcher: %v; want both to send", sentBy)
	}
	if out := logs.String(); strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Fatalf("unexpected warnings:\n%s", out)
	}
}

func TestExpiredLeaseIsTakenOver(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	e.exec(`UPDATE {{schema}}.deliveries SET lease_owner = 'dead-relay', lease_until = now() + interval '400 milliseconds' WHERE id = $1`, id)
	leaseUntil := e.get(id).LeaseUntil
	e.start(fast(Options{}))
	time.Sleep(200 * time.Millisecond)
	if n := rc.count(); n != 0 {
		t.Fatalf("sent while another owner's lease held: %d requests", n)
	}
	e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	if got := rc.receipts(id); len(got) != 1 || got[0].at.Before(leaseUntil) {
		t.Fatalf("requests %v, lease until %v", got, leaseUntil)
	}
}

func TestRefire(t *testing.T) {
	e := newEnv(t)
	var healthy atomic.Bool
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		// After the re-fire: one more failure, then success.
		if healthy.Load() && n >= 4 {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	d, _ := e.start(fast(Options{Schedule: Schedule{10 * time.Millisecond}, PollInterval: time.Hour}))
	e.waitStatus(id, store.StatusFailed, 5*time.Second)
	if n := len(e.attempts(id)); n != 2 {
		t.Fatalf("%d attempts before re-fire, want 2", n)
	}

	healthy.Store(true)
	if err := e.st.Refire(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	d.Notify()
	got := e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	as := e.attempts(id)
	if got.Attempts != 4 || len(as) != 4 {
		t.Fatalf("delivery %+v, %d attempts; want 4 (the schedule starts over after a re-fire)", got, len(as))
	}
	for i, a := range as {
		if a.Attempt != i+1 {
			t.Fatalf("attempt numbers %+v", as)
		}
	}
	for i, r := range rc.receipts(id) {
		if r.header.Get("X-SMTM-Delivery") != id.String() || !bytes.Equal(r.body, body) {
			t.Fatalf("request %d: %v %q", i+1, r.header, r.body)
		}
	}
}

func TestNotifySendsAtOnce(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: time.Hour}))
	id := e.delivery(wh, body)
	d.Notify()
	e.waitStatus(id, store.StatusDelivered, 2*time.Second)
}

func TestInactiveWebhookWaits(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	e.exec(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`, wh)
	id := e.delivery(wh, body)
	d, _ := e.start(fast(Options{}))
	time.Sleep(300 * time.Millisecond)
	if n := rc.count(); n != 0 {
		t.Fatalf("inactive webhook got %d requests", n)
	}
	if got := e.get(id); got.Status != store.StatusPending || got.Attempts != 0 || got.LeaseOwner != "" {
		t.Fatalf("delivery of an inactive webhook: %+v", got)
	}
	e.exec(`UPDATE {{schema}}.webhooks SET active = true WHERE id = $1`, wh)
	d.Notify()
	e.waitStatus(id, store.StatusDelivered, 2*time.Second)
}

func TestDrainTimeoutReleasesClaims(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, hang)
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	var logs logBuffer
	_, stop := e.start(fast(Options{Timeout: 30 * time.Second, DrainTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "request never arrived" })
	err, took := stop()
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN msg=\"drain timed out") || !strings.Contains(out, "attempts=1") {
		t.Errorf("no drain warning:\n%s", out)
	}
	if took < 300*time.Millisecond || took > 300*time.Millisecond+time.Second {
		t.Errorf("Run returned %v after the cancel, want about the 300ms drain timeout", took)
	}
	d := e.get(id)
	if d.LeaseOwner != "" || !d.LeaseUntil.IsZero() || d.Status != store.StatusPending || d.Attempts != 1 || d.RetryBase != 1 {
		t.Fatalf("after the drain: %+v", d)
	}
	if as := e.attempts(id); len(as) != 1 || as[0].Error != store.AbortedError || as[0].StatusCode != 0 {
		t.Fatalf("attempts after the drain: %+v, want one, aborted", as)
	}
}

// TestAbortedAttemptIsInTheHistory: an attempt cut short by the drain
// timeout reached the receiver, so it is in the delivery's history, as
// aborted. It is no failure: the delivery stays pending, the next relay
// sends it under the same id at once, the retry schedule does not count
// it, and neither does the success rate.
func TestAbortedAttemptIsInTheHistory(t *testing.T) {
	e := newEnv(t)
	// The first request hangs until the relay gives up on it; the second
	// fails; the third succeeds.
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 1:
			hang(w, r, n)
		case 2:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	hook := e.webhook(rc.URL, "", nil)
	id := e.delivery(hook, body)
	// One retry: had the aborted attempt counted, the failure of the second
	// would be the last one allowed.
	schedule := Schedule{10 * time.Millisecond}
	_, stop := e.start(fast(Options{Timeout: 30 * time.Second, DrainTimeout: 100 * time.Millisecond, Schedule: schedule}))
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "request never arrived" })
	if err, _ := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	d := e.get(id)
	as := e.attempts(id)
	if d.Status != store.StatusPending || d.Attempts != 1 || d.LeaseOwner != "" || len(as) != 1 ||
		as[0].Attempt != 1 || as[0].Error != store.AbortedError || as[0].StatusCode != 0 || as[0].SentBy == "" {
		t.Fatalf("after the stop: delivery %+v, attempts %+v; want one aborted attempt, pending", d, as)
	}

	_, stop2 := e.start(fast(Options{Schedule: schedule}))
	d = e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	stop2()
	as = e.attempts(id)
	if d.Attempts != 3 || len(as) != 3 || as[0].Error != store.AbortedError || as[1].StatusCode != 500 || as[2].StatusCode != 200 {
		t.Fatalf("delivery %+v, attempts %+v; want aborted, HTTP 500, 200", d, as)
	}
	got := rc.receipts(id)
	if len(got) != 3 {
		t.Fatalf("receiver saw %d requests of the delivery, want 3", len(got))
	}
	for _, r := range got {
		if r.header.Get("X-SMTM-Delivery") != id.String() {
			t.Errorf("X-SMTM-Delivery %q, want %s", r.header.Get("X-SMTM-Delivery"), id)
		}
	}
	rates, err := e.st.SuccessRates(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rates {
		if r.WebhookID == hook && (r.Attempts != 2 || r.Succeeded != 1) {
			t.Errorf("success rate counts %d of %d attempts, want 1 of 2 (the aborted one left out)", r.Succeeded, r.Attempts)
		}
	}
}

func TestDrainWaitsForAttemptsInFlight(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	_, stop := e.start(fast(Options{DrainTimeout: 5 * time.Second}))
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "request never arrived" })
	if err, _ := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := e.get(id); d.Status != store.StatusDelivered || d.LeaseOwner != "" {
		t.Fatalf("after the drain: %+v", d)
	}
}

func TestRunLeavesNoGoroutines(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	for range 20 {
		e.delivery(wh, body)
	}
	base := runtime.NumGoroutine()
	_, stop := e.start(fast(Options{}))
	eventually(t, 5*time.Second, func() bool { return rc.count() == 20 }, func() string { return "not all sent" })
	if err, _ := stop(); err != nil {
		t.Fatal(err)
	}
	rc.CloseClientConnections()
	eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= base }, func() string {
		buf := make([]byte, 1<<20)
		return fmt.Sprintf("%d goroutines after Run, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
	})
}

func TestRunTwiceAtOnce(t *testing.T) {
	e := newEnv(t)
	d, _ := e.start(fast(Options{}))
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestReservedHeaders(t *testing.T) {
	for _, h := range []string{"content-type", "Content-Type", "USER-AGENT", "x-smtm-event", "X-SMTM-Delivery", "x-SmTm-signature", "X-SMTM-Future"} {
		if !reserved(h) {
			t.Errorf("%q not reserved", h)
		}
	}
	for _, h := range []string{"Authorization", "X-Custom", "X-SMTM", "Content-Language"} {
		if reserved(h) {
			t.Errorf("%q reserved", h)
		}
	}
}

func TestSnippet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"  hello  ", 100, "hello"},
		{"hello world", 5, "hello"},
		{"héllo", 2, "h"}, // the cut rune is dropped
		{"a\x00b\xffc", 10, "abc"},
		{"abc", 0, ""},
		{"abc", -1, ""},
	} {
		if got := snippet([]byte(tc.in), tc.n); got != tc.want {
			t.Errorf("snippet(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	if got := oneLine("a\nb\r\n  c" + strings.Repeat("x", 400)); strings.ContainsAny(got, "\r\n") || len(got) > maxErrorLen+len("…") {
		t.Errorf("oneLine: %q", got)
	}
}

func TestZeroDrainTimeoutAbortsAtOnce(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, hang)
	id := e.delivery(e.webhook(rc.URL, "", nil), body)
	_, stop := e.start(Options{PollInterval: 10 * time.Millisecond})
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "request never arrived" })
	if err, took := stop(); err != nil || took > time.Second {
		t.Fatalf("Run returned %v after %v", err, took)
	}
	if d := e.get(id); d.LeaseOwner != "" || d.Attempts != 1 || d.RetryBase != 1 {
		t.Fatalf("after the drain: %+v, want one aborted attempt", d)
	}
}

// TestQueuedClaimsAreGivenBack covers the deliveries claimed ahead of a
// busy webhook's slots: they wait in memory and are given back unsent when
// the dispatcher stops.
func TestQueuedClaimsAreGivenBack(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, hang)
	hook := e.webhook(rc.URL, "", nil)
	var ids []uuid.UUID
	for range 5 {
		ids = append(ids, e.delivery(hook, body))
	}
	_, stop := e.start(fast(Options{PerWebhook: 1, Timeout: 30 * time.Second, DrainTimeout: 200 * time.Millisecond}))
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "request never arrived" })
	time.Sleep(100 * time.Millisecond)
	if n := rc.active(); n != 1 {
		t.Fatalf("%d attempts in flight to a webhook limited to 1", n)
	}
	if err, _ := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The one in flight has an aborted attempt; the queued ones none.
	aborted := 0
	for _, id := range ids {
		d := e.get(id)
		if d.LeaseOwner != "" || d.Status != store.StatusPending || d.Attempts > 1 {
			t.Fatalf("after the stop: %+v", d)
		}
		aborted += d.Attempts
	}
	if aborted != 1 {
		t.Fatalf("%d aborted attempts recorded, want the one in flight", aborted)
	}
}

// TestQueuedClaimTooOldForItsLeaseIsNotSent: a claimed delivery that waited
// so long for a slot that its lease could end during the attempt is not
// sent: by then another dispatcher may hold it.
func TestQueuedClaimTooOldForItsLeaseIsNotSent(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			select { // the first attempt holds the only slot
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	hook := e.webhook(rc.URL, "", nil)
	e.delivery(hook, body)
	// Timeout 2s, lease 7.5s: a queued claim may wait at most 500ms, and
	// the first attempt holds the slot for up to 2s.
	_, stop := e.start(fast(Options{PerWebhook: 1, Timeout: 2 * time.Second, Lease: 7500 * time.Millisecond}))
	defer stop()
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "first request never arrived" })
	second := e.delivery(hook, body)
	eventually(t, 5*time.Second, func() bool { return e.get(second).LeaseOwner != "" }, func() string { return "second delivery not claimed ahead" })
	time.Sleep(700 * time.Millisecond) // older than the lease allows
	// As if its lease had run out and another dispatcher had claimed it.
	e.exec(`UPDATE relay.deliveries SET lease_owner = 'another-dispatcher', lease_until = now() + interval '1 hour' WHERE id = $1`, second)
	close(release)
	time.Sleep(500 * time.Millisecond)
	if n := len(rc.receipts(second)); n != 0 {
		t.Fatalf("the stale claim was sent %d times", n)
	}
	if d := e.get(second); d.LeaseOwner != "another-dispatcher" || d.Attempts != 0 {
		t.Fatalf("second delivery: %+v", d)
	}
}

// TestStaleCopyLeavesTheLeaseOfALiveOne: a queued claim that waited past
// its lease is claimed again by the same dispatcher, so that two copies of
// it wait in the queue; the stale one is dropped without giving back the
// lease the fresh one holds (which would let any sender, this one
// included, send the delivery again beside it), and the delivery is sent
// once and recorded.
func TestStaleCopyLeavesTheLeaseOfALiveOne(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var busy atomic.Bool
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if busy.CompareAndSwap(false, true) { // the first request holds the only worker
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	slow := e.webhook(rc.URL+"/slow", "", nil)
	other := e.webhook(rc.URL+"/other", "", nil)
	e.delivery(slow, body)
	// Timeout 2s, lease 7.5s: a queued claim may wait at most 500ms.
	var logs logBuffer
	_, stop := e.start(fast(Options{Workers: 1, PerWebhook: 4, Timeout: 2 * time.Second, Lease: 7500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	defer stop()
	eventually(t, 5*time.Second, func() bool { return rc.active() == 1 }, func() string { return "first request never arrived" })
	d := e.delivery(other, body)
	eventually(t, 5*time.Second, func() bool { return e.get(d).LeaseOwner != "" }, func() string { return "the delivery not claimed" })
	time.Sleep(700 * time.Millisecond) // older than its lease allows
	// Its lease runs out: the dispatcher claims it again, queued behind
	// the stale copy.
	e.exec(`UPDATE relay.deliveries SET lease_until = now() - interval '1 second' WHERE id = $1`, d)
	eventually(t, 5*time.Second, func() bool { return e.get(d).LeaseUntil.After(time.Now()) }, func() string { return "the delivery not claimed again" })
	close(release)
	e.waitStatus(d, store.StatusDelivered, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := len(rc.receipts(d)); n != 1 {
		t.Errorf("sent %d times, want once", n)
	}
	if got := e.get(d); got.Attempts != 1 || got.LeaseOwner != "" {
		t.Errorf("delivery after its attempt: %+v", got)
	}
	if out := logs.String(); strings.Contains(out, "lease was lost") || strings.Contains(out, "appears twice") {
		t.Errorf("the log:\n%s", out)
	}
}

// TestSlowCompanyLeavesWorkersToOthers: one company's receivers hold every
// worker until their timeout, with many more of its deliveries queued;
// another company's delivery gets the next worker that frees, not the
// slow company's next queued delivery.
func TestSlowCompanyLeavesWorkersToOthers(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			<-r.Context().Done() // until the relay's timeout
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	slow := []int64{e.webhook(rc.URL+"/slow1", "", nil), e.webhook(rc.URL+"/slow2", "", nil)}
	e.deliveries(slow, 24)
	other := e.webhook(rc.URL+"/other", "", nil)
	e.exec(`UPDATE relay.webhooks SET company_id = 2 WHERE id = $1`, other)
	// Timeout 1s: 24 attempts on 4 workers take 6 s in turns.
	_, stop := e.start(fast(Options{Workers: 4, PerWebhook: 4, Timeout: time.Second, Lease: time.Minute}))
	defer stop()
	eventually(t, 5*time.Second, func() bool { return rc.active() == 4 }, func() string { return "the slow receivers never took every worker" })
	d := e.delivery(other, body)
	e.exec(`UPDATE relay.deliveries SET company_id = 2 WHERE id = $1`, d)
	queued := time.Now()
	e.waitStatus(d, store.StatusDelivered, 10*time.Second)
	// The next worker frees within a timeout of the first attempts.
	if took := time.Since(queued); took > 2500*time.Millisecond {
		t.Errorf("the other company's delivery waited %v for a worker, behind the slow company's queue", took)
	}
}

// leasedOf returns how many deliveries of webhook were leased ready and
// held.
func leasedOf(l store.Leased, webhook int64) (ready, held int) {
	for _, c := range l.Ready {
		if c.WebhookID == webhook {
			ready++
		}
	}
	for _, h := range l.Held {
		if h.WebhookID == webhook {
			held++
		}
	}
	return ready, held
}

// handoffWrite stores n events for webhook in one store transaction,
// leasing what d reserves, and returns the leased deliveries.
func (e *env) handoffWrite(d *Dispatcher, lsn event.LSN, n int) store.Leased {
	e.t.Helper()
	ctx := context.Background()
	events := make([]event.Event, n)
	for i := range events {
		events[i] = event.Event{Type: "task.completed", CompanyID: 1, CommitLSN: lsn, Seq: i, CommitTime: time.Now(),
			Table: "tasks", Op: event.Update, Body: body}
	}
	w, err := e.st.BeginWrite(ctx, "s")
	if err != nil {
		e.t.Fatal(err)
	}
	req, ok := d.Reserve(nil)
	if !ok {
		e.t.Fatal("a running dispatcher reserves nothing")
	}
	_, leased, err := w.Write(ctx, store.Batch{Events: events, Lease: req})
	if err != nil {
		e.t.Fatal(err)
	}
	from, _, err := e.st.Position(ctx, "s")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Commit(ctx, from, lsn+1); err != nil {
		e.t.Fatal(err)
	}
	return leased
}

// leasedIDs returns the ids of leased deliveries, ready and held, to be
// read after they are handed over.
func leasedIDs(l store.Leased) []uuid.UUID {
	ids := make([]uuid.UUID, 0, l.Len())
	for _, c := range l.Ready {
		ids = append(ids, c.ID)
	}
	for _, h := range l.Held {
		ids = append(ids, h.ID)
	}
	return ids
}

func (e *env) ready() {
	e.t.Helper()
	ctx := context.Background()
	if err := e.st.MarkSeeding(ctx, "s"); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.Seed(ctx, "s", 1, func(func(store.StateRow) error) error { return nil }); err != nil {
		e.t.Fatal(err)
	}
}

// Deliveries leased when they are stored are sent on Handoff, without a
// poll: those that fit the dispatcher's room at once, the rest held as ids
// and read as slots free. None is claimed.
func TestHandoffSendsWithoutClaiming(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc := newReceiver(t, nil)
	e.webhook(rc.URL, "handoff-secret-0123", nil)
	// Polls never come; Notify is never called.
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: time.Hour, Workers: 2, PerWebhook: 2}))
	const n = 2*prefetch + 24
	leased := e.handoffWrite(d, 100, n)
	// Workers 2 × prefetch: the dispatcher takes 2*prefetch with payloads
	// at most; the rest are held.
	if len(leased.Ready) != 2*prefetch || len(leased.Held) != n-2*prefetch {
		t.Fatalf("%d leased and %d held, want %d and %d", len(leased.Ready), len(leased.Held), 2*prefetch, n-2*prefetch)
	}
	ids := leasedIDs(leased)
	d.Handoff(leased) // the dispatcher owns them now
	for _, id := range ids {
		got := e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		if got.Attempts != 1 {
			t.Fatalf("delivery %s: %d attempts", id, got.Attempts)
		}
		r := rc.receipts(id)
		if len(r) != 1 || r[0].header.Get("X-SMTM-Signature") != wantSignature("handoff-secret-0123", body) {
			t.Fatalf("delivery %s received %d times, headers %v", id, len(r), r)
		}
	}
	if rc.count() != n {
		t.Fatalf("the receiver got %d requests, want %d", rc.count(), n)
	}
	if counts(d).loads.Load() == 0 {
		t.Fatal("the held deliveries were sent without being read")
	}
	// Nothing is left behind.
	if n := e.countDeliveries(`status <> 'delivered'`); n != 0 {
		t.Fatalf("%d deliveries not delivered", n)
	}
}

// While a webhook's held deliveries drain, claims look for what is due
// before them once per poll interval, not in every round (each such look
// walks the webhook's sent deliveries in the index), and the claims that
// leave them out follow one that found nothing only after quietClaimGap.
func TestHeldDeliveriesLookedBeforeOncePerPoll(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc := newReceiver(t, nil)
	e.webhook(rc.URL, "", nil)
	const poll = 300 * time.Millisecond
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: poll, Workers: 2, PerWebhook: 2}))
	leased := e.handoffWrite(d, 100, 2000)
	ids := leasedIDs(leased)
	looks, loads, claims := counts(d).looks.Load(), counts(d).loads.Load(), counts(d).claims.Load()
	began := time.Now()
	d.Handoff(leased)
	for _, id := range ids {
		e.waitStatus(id, store.StatusDelivered, 20*time.Second)
	}
	took := time.Since(began)
	looks, loads, claims = counts(d).looks.Load()-looks, counts(d).loads.Load()-loads, counts(d).claims.Load()-claims
	if max := int64(took/poll) + 2; looks > max || loads < 10 {
		t.Fatalf("%d claims looked before held deliveries, want at most %d; %d reads of held ones, want 10 or more", looks, max, loads)
	}
	// Besides: a claim per round once nothing is held any more.
	if max := looks + int64(took/quietClaimGap) + 5; claims > max {
		t.Fatalf("%d claims in %v with %d reads of held deliveries, want at most %d", claims, took, loads, max)
	}
}

// A claim that found nothing while a webhook's held deliveries wait does
// not keep the next notice from claiming: what a write left to be claimed
// for another webhook (its window was full) is claimed as the write
// notifies, not after the quiet gap or the next poll.
func TestNoticeClaimsBesideHeldDeliveries(t *testing.T) {
	e := newEnv(t)
	e.ready()
	stuck, _ := heldReceiver(t) // its window stays full: the rest is held
	e.webhook(stuck.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: time.Hour, Workers: 4, PerWebhook: 2}))
	leased := e.handoffWrite(d, 100, 4*prefetch)
	if len(leased.Held) == 0 {
		t.Fatal("nothing held")
	}
	d.Handoff(leased)
	rc := newReceiver(t, nil)
	other := e.webhook(rc.URL, "", nil)
	for i := range 5 {
		claims := counts(d).claims.Load()
		// A notice with nothing to claim: the claim finds nothing.
		d.Notify()
		eventually(t, 2*time.Second, func() bool { return counts(d).claims.Load() > claims }, func() string { return "no claim after a notice" })
		id := e.delivery(other, body)
		d.Notify()
		e.waitStatus(id, store.StatusDelivered, 2*time.Second)
		if i == 0 && counts(d).looks.Load() == 0 {
			t.Fatal("no claim looked before the held deliveries")
		}
	}
}

// While a webhook has held deliveries, claims still find its deliveries
// due before them (a retry, a backlog from before), and those are sent
// too; deliveries written beyond what may be held are claimed once the
// held ones are sent.
func TestHeldDeliveriesLeaveOlderOnesClaimable(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc := newReceiver(t, nil)
	wh := e.webhook(rc.URL, "", nil)
	// Polls never come: only the hand-off wakes the dispatcher.
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: time.Hour, Workers: 2, PerWebhook: 2}))
	older := e.delivery(wh, body) // due before the write, not leased
	leased := e.handoffWrite(d, 100, 3*prefetch)
	if len(leased.Held) == 0 {
		t.Fatal("nothing held")
	}
	ids := leasedIDs(leased) // read before the dispatcher owns them
	d.Handoff(leased)
	for _, id := range append(ids, older) {
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		if n := len(rc.receipts(id)); n != 1 {
			t.Fatalf("delivery %s received %d times", id, n)
		}
	}
}

// Held deliveries that wait longer than their leases allow are given back,
// not sent late, and then claimed and sent like any other; those of a
// webhook disabled while they were held are given back unsent. Stopping
// gives back the ones still held, with those queued and in flight.
func TestHeldDeliveriesGivenBack(t *testing.T) {
	t.Run("stale", func(t *testing.T) {
		e := newEnv(t)
		e.ready()
		rc := newReceiver(t, nil)
		e.webhook(rc.URL, "", nil)
		// A lease that allows no wait at all: every held delivery is stale
		// by the time a slot frees.
		opts := fast(Options{PollInterval: 50 * time.Millisecond, Workers: 2, PerWebhook: 2})
		opts.Lease = opts.Timeout + 5*time.Second
		d, _ := e.start(opts)
		time.Sleep(20 * time.Millisecond)
		leased := e.handoffWrite(d, 100, 2*prefetch+10)
		ids := leasedIDs(leased)
		d.Handoff(leased)
		for _, id := range ids {
			got := e.waitStatus(id, store.StatusDelivered, 10*time.Second)
			if got.Attempts != 1 || len(rc.receipts(id)) != 1 {
				t.Fatalf("delivery %s: %d attempts, received %d times", id, got.Attempts, len(rc.receipts(id)))
			}
		}
		if counts(d).loads.Load() != 0 {
			t.Fatalf("%d reads of held deliveries that were stale", counts(d).loads.Load())
		}
	})
	t.Run("disabled webhook", func(t *testing.T) {
		e := newEnv(t)
		e.ready()
		rc, release := heldReceiver(t)
		wh := e.webhook(rc.URL, "", nil)
		other := e.webhook(rc.URL+"/other", "", nil)
		d, stop := e.start(fast(Options{PollInterval: 50 * time.Millisecond, Workers: 4, PerWebhook: 2}))
		time.Sleep(20 * time.Millisecond)
		leased := e.handoffWrite(d, 100, 2*prefetch+10)
		ready, held := leasedOf(leased, wh)
		if ready == 0 || held == 0 {
			t.Fatalf("webhook: %d ready, %d held", ready, held)
		}
		ids := leasedIDs(leased) // read before the dispatcher owns them
		d.Handoff(leased)
		e.exec(`UPDATE {{schema}}.webhooks SET active = false WHERE id = $1`, wh)
		release()
		// Webhook wh's ready deliveries are sent; its held ones are given
		// back when their turn comes, unsent.
		for _, h := range leased.Held {
			if h.WebhookID != wh {
				continue
			}
			eventually(t, 5*time.Second, func() bool { return e.get(h.ID).LeaseOwner == "" },
				func() string { return "held delivery of a disabled webhook still leased" })
			if got := e.get(h.ID); got.Status != store.StatusPending || len(rc.receipts(h.ID)) != 0 {
				t.Fatalf("held delivery of a disabled webhook: %+v, sent %d times", got, len(rc.receipts(h.ID)))
			}
		}
		// The other webhook's are all sent.
		for _, id := range ids {
			if got := e.get(id); got.WebhookID == other {
				e.waitStatus(id, store.StatusDelivered, 5*time.Second)
			}
		}
		if err, _ := stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stop", func(t *testing.T) {
		e := newEnv(t)
		e.ready()
		rc, _ := heldReceiver(t)
		e.webhook(rc.URL, "", nil)
		d, stop := e.start(fast(Options{PollInterval: 50 * time.Millisecond, Workers: 2, PerWebhook: 2, DrainTimeout: 100 * time.Millisecond}))
		time.Sleep(20 * time.Millisecond)
		leased := e.handoffWrite(d, 100, 2*prefetch+10)
		if len(leased.Held) == 0 {
			t.Fatal("nothing held")
		}
		d.Handoff(leased)
		eventually(t, 5*time.Second, func() bool { return rc.count() == 2 }, func() string { return "the first attempts never came" })
		if err, _ := stop(); err != nil {
			t.Fatal(err)
		}
		if n := e.countDeliveries(`lease_owner IS NOT NULL OR status <> 'pending'`); n != 0 {
			t.Fatalf("%d deliveries still leased or not pending after the stop", n)
		}
	})
}

// A dispatcher that has stopped gives handed-off deliveries back, due at
// once for any sender, instead of holding them until their leases expire.
func TestHandoffAfterStopGivesBack(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc := newReceiver(t, nil)
	e.webhook(rc.URL, "", nil)
	d, stop := e.startAfterFirstRound(fast(Options{PollInterval: time.Hour, Workers: 1, PerWebhook: 1}))
	leased := e.handoffWrite(d, 100, prefetch+3)
	if len(leased.Ready) != prefetch || len(leased.Held) != 3 {
		t.Fatalf("%d leased, %d held", len(leased.Ready), len(leased.Held))
	}
	if err, _ := stop(); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Reserve(nil); ok {
		t.Fatal("a stopped dispatcher still reserves")
	}
	ids := leasedIDs(leased)
	d.Handoff(leased)
	for _, id := range ids {
		if got := e.get(id); got.LeaseOwner != "" || got.Status != store.StatusPending {
			t.Fatalf("delivery %s after the hand-off to a stopped dispatcher: %+v", id, got)
		}
	}
	if rc.count() != 0 {
		t.Fatalf("a stopped dispatcher sent %d requests", rc.count())
	}
}

// A webhook with a backlog is claimed for in batches as its window drains,
// not once per finished attempt: claims are the dispatcher's most costly
// statement.
func TestBacklogIsClaimedInBatches(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	wh := e.webhook(rc.URL, "", nil)
	const n = 120
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.delivery(wh, body)
	}
	d, _ := e.start(fast(Options{PollInterval: time.Hour, Workers: 2, PerWebhook: 2}))
	for _, id := range ids {
		e.waitStatus(id, store.StatusDelivered, 30*time.Second)
	}
	// The window is 2*prefetch; a claim round comes each time a quarter of
	// it is free, and takes two queries (the second finds nothing more).
	// A claim per finished attempt made about 130.
	window := 2 * prefetch
	if got, most := counts(d).claims.Load(), int64(3*n/(window-claimAt(window))); got > most {
		t.Fatalf("%d claim queries for %d deliveries, want at most %d", got, n, most)
	}
}

// Batches that fill several webhooks' windows are all sent without a poll:
// a webhook left out of a claim because its window was full is claimed for
// again as soon as its window drains, even when it drained while that claim
// ran (the attempts that drained it could not know to ask).
func TestWindowsDrainedDuringAClaimAreClaimedAgain(t *testing.T) {
	const rounds, perRound = 15, 2000
	e := newEnv(t)
	rc := newReceiver(t, nil)
	var hooks []int64
	for range 10 {
		hooks = append(hooks, e.webhook(rc.URL, "a-secret-of-16-bytes", nil))
	}
	d, _ := e.start(Options{PollInterval: time.Hour, Timeout: 5 * time.Second})
	sent := 0
	for round := range rounds {
		e.deliveries(hooks, perRound)
		d.Notify()
		sent += perRound
		delivered := 0
		eventually(t, 20*time.Second, func() bool {
			if err := e.st.Pool().QueryRow(context.Background(),
				"SELECT count(*) FROM "+e.st.Schema()+".deliveries WHERE status = 'delivered'").Scan(&delivered); err != nil {
				t.Fatal(err)
			}
			return delivered == sent
		}, func() string {
			return fmt.Sprintf("round %d: %d of %d deliveries arrived, %d recorded, and the poll is an hour away", round+1, rc.count(), sent, delivered)
		})
	}
}

// A slow endpoint's window holds about aheadFor of its traffic, not
// prefetch per slot: what the dispatcher holds ahead for it is sent before
// its lease runs short, instead of waiting, being given back and claimed
// again.
func TestSlowWebhookHoldsLessAhead(t *testing.T) {
	e := newEnv(t)
	const took = 500 * time.Millisecond
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(took)
		w.WriteHeader(http.StatusOK)
	})
	wh := e.webhook(rc.URL, "", nil)
	d, _ := e.start(fast(Options{PollInterval: 50 * time.Millisecond, Workers: 8, PerWebhook: 2}))
	// The first attempts tell the dispatcher the endpoint's pace.
	first := e.delivery(wh, body)
	e.waitStatus(first, store.StatusDelivered, 10*time.Second)
	d.mu.Lock()
	window := d.windowLocked(wh)
	d.mu.Unlock()
	// Two slots, 0.5 s an attempt: aheadFor holds 2 × 5 s / 0.5 s.
	// (An attempt takes a little longer than the endpoint's sleep.)
	if want := int(2 * aheadFor / took); window < want/2 || window > want {
		t.Fatalf("window %d, want about %d", window, want)
	}
	if most := 2 * prefetch; window >= most {
		t.Fatalf("window %d, not below the most a webhook may hold (%d)", window, most)
	}
	e.deliveries([]int64{wh}, 200)
	d.Notify()
	time.Sleep(time.Second)
	var leased int
	e.st.Pool().QueryRow(context.Background(), strings.ReplaceAll(`SELECT count(*) FROM {{schema}}.deliveries
		WHERE lease_owner IS NOT NULL AND status = 'pending'`, "{{schema}}", e.st.Schema())).Scan(&leased)
	if leased == 0 || leased > window {
		t.Fatalf("%d deliveries held for the slow webhook, want 1 to %d", leased, window)
	}
}

// How many deliveries a webhook may have held follows its pace too: all
// that the dispatcher may hold while its pace is unknown, what its slots
// send in holdFor (or half of what a lease allows) when it is fast, and
// nothing beyond its window when it is slow, so that what it cannot send
// soon is left for claims by any relay. A write leases accordingly.
func TestHoldWindowFollowsPace(t *testing.T) {
	d := New(nil, Options{Workers: 8, PerWebhook: 4, Timeout: 30 * time.Second})
	d.mu.Lock()
	defer d.mu.Unlock()
	d.run = &runState{} // running, for Reserve
	if got := d.holdWindowLocked(1); got != maxHeld {
		t.Fatalf("unknown pace: hold window %d, want %d", got, maxHeld)
	}
	for range 50 {
		d.notePaceLocked(1, time.Millisecond)
		d.notePaceLocked(2, time.Second)
	}
	if got, want := d.holdWindowLocked(1), int(4*holdFor/time.Millisecond); got != want {
		t.Errorf("1 ms attempts: hold window %d, want %d", got, want)
	}
	if got, want := d.holdWindowLocked(2), d.windowLocked(2); got != want || want >= 4*prefetch {
		t.Errorf("1 s attempts: hold window %d, want the window %d", got, want)
	}
	// A short lease allows less.
	d.opts.Lease = d.opts.Timeout + 5*time.Second + 4*time.Second
	if got, want := d.holdWindowLocked(1), int(4*2*time.Second/time.Millisecond); got != want {
		t.Errorf("1 ms attempts, 4 s a held delivery may wait: hold window %d, want %d", got, want)
	}
	d.mu.Unlock()
	req, ok := d.Reserve(nil)
	d.mu.Lock()
	if !ok || req.HeldLimit <= 0 {
		t.Fatalf("reserve: %+v %v", req, ok)
	}
	if req.Webhooks[2].Hold != 0 || req.Webhooks[1].Hold == 0 {
		t.Errorf("hold room: slow webhook %d (want 0), fast webhook %d", req.Webhooks[2].Hold, req.Webhooks[1].Hold)
	}
	// With another relay sharing the store, nothing is held beyond the
	// windows: the others claim it.
	d.peers.Store(1)
	if got, want := d.holdWindowLocked(1), d.windowLocked(1); got != want {
		t.Errorf("with a peer: hold window %d, want the window %d", got, want)
	}
	d.mu.Unlock()
	req, _ = d.Reserve(nil)
	d.mu.Lock()
	if req.HeldLimit != 0 || req.Webhooks[1].Hold != 0 {
		t.Errorf("with a peer: hold %d, hold room %d; want none", req.HeldLimit, req.Webhooks[1].Hold)
	}
}

// A webhook's window follows the pace of its attempts, between two per
// slot and prefetch per slot.
func TestWindowFollowsPace(t *testing.T) {
	d := New(nil, Options{Workers: 8, PerWebhook: 4})
	d.mu.Lock()
	defer d.mu.Unlock()
	if got := d.windowLocked(1); got != 4*prefetch {
		t.Fatalf("unknown pace: window %d, want %d", got, 4*prefetch)
	}
	for _, c := range []struct {
		took time.Duration
		want int
	}{
		{time.Millisecond, 4 * prefetch},
		{time.Second, 4 * int(aheadFor/time.Second)},
		{time.Minute, 2 * 4},
	} {
		d.pace = map[int64]time.Duration{}
		for range 50 {
			d.notePaceLocked(1, c.took)
		}
		if got := d.windowLocked(1); got != c.want {
			t.Errorf("attempts of %v: window %d, want %d", c.took, got, c.want)
		}
	}
	// The pace moves with the latest attempts, not at once.
	d.pace = map[int64]time.Duration{}
	d.notePaceLocked(1, time.Millisecond)
	d.notePaceLocked(1, 2*time.Second)
	if got := d.windowLocked(1); got <= 2*4 || got >= 4*prefetch {
		t.Errorf("one 2 s attempt after a 1 ms one: window %d, want between %d and %d", got, 2*4, 4*prefetch)
	}
	_, busy, _ := d.capacityLocked()
	if got, want := busy[1], 4*prefetch-d.windowLocked(1); got != want {
		t.Errorf("a slow webhook with nothing held counts %d as busy, want %d", got, want)
	}
}

// Large payloads hold fewer deliveries ahead: what the dispatcher holds is
// bounded in bytes too, never below one delivery per worker.
func TestRoomFollowsPayloadSize(t *testing.T) {
	d := New(nil, Options{Workers: 8, PerWebhook: 4})
	d.mu.Lock()
	defer d.mu.Unlock()
	if got := d.roomLocked(); got != minTaken {
		t.Fatalf("no payload seen: room %d, want %d", got, minTaken)
	}
	held := func(size, n int) {
		claims := make([]store.Claimed, n)
		for i := range claims {
			claims[i].Body = make([]byte, size)
		}
		d.noteBodiesLocked(claims)
	}
	held(500, 100)
	if got := d.roomLocked(); got != minTaken {
		t.Fatalf("500-byte payloads: room %d, want %d", got, minTaken)
	}
	held(64<<10, 100)
	if got, want := d.roomLocked(), takenBytes/(64<<10); got < want*9/10 || got > want*11/10 {
		t.Fatalf("64 KiB payloads: room %d, want about %d", got, want)
	}
	held(16<<20, 100)
	if got := d.roomLocked(); got != 8 {
		t.Fatalf("16 MiB payloads: room %d, want one per worker (8)", got)
	}
}

// A dispatcher that learns another relay shares the store gives back what
// it holds as ids, so that the other can claim it, and holds nothing more
// beyond its windows.
func TestPeerTakesHeldDeliveries(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc, release := heldReceiver(t)
	e.webhook(rc.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{PollInterval: 50 * time.Millisecond, Workers: 2, PerWebhook: 2}))
	if d.peers.Load() != 0 {
		t.Fatal("a lone dispatcher sees peers")
	}
	leased := e.handoffWrite(d, 100, 2*prefetch+50)
	if len(leased.Held) != 50 {
		t.Fatalf("%d held, want 50", len(leased.Held))
	}
	held := leasedIDs(store.Leased{Held: leased.Held})
	d.Handoff(leased)
	// Another relay starts sending.
	ctx := context.Background()
	eventually(t, 5*time.Second, func() bool {
		if _, err := e.st.Heartbeat(ctx, "peer", time.Minute); err != nil {
			t.Fatal(err)
		}
		for _, id := range held {
			if e.get(id).LeaseOwner != "" {
				return false
			}
		}
		return true
	}, func() string { return "held deliveries still leased with a peer" })
	if req, ok := d.Reserve(nil); !ok || req.HeldLimit != 0 {
		t.Fatalf("with a peer the dispatcher still holds: %+v", req)
	}
	release()
	for _, id := range held {
		e.waitStatus(id, store.StatusDelivered, 5*time.Second)
		if n := len(rc.receipts(id)); n != 1 {
			t.Fatalf("delivery %s received %d times", id, n)
		}
	}
}

// A batch of results that names a delivery twice is recorded in two
// statements, each naming it once, in the order the results came.
func TestSplitRepeated(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	res := func(id uuid.UUID, attempt int) finished {
		return finished{result: store.AttemptResult{DeliveryID: id, Attempt: attempt}}
	}
	batch := []finished{res(a, 1), res(b, 1), res(a, 2), res(a, 3)}
	later := splitRepeated(&batch)
	if len(batch) != 2 || batch[0].result.DeliveryID != a || batch[1].result.DeliveryID != b {
		t.Errorf("first statement: %+v", batch)
	}
	if len(later) != 2 || later[0].result.Attempt != 2 || later[1].result.Attempt != 3 {
		t.Errorf("later: %+v", later)
	}
	if again := splitRepeated(&later); len(later) != 1 || len(again) != 1 || again[0].result.Attempt != 3 {
		t.Errorf("second split: %+v then %+v", later, again)
	}
}
