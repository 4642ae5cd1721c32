package relay

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/internal/standardjs"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// startOn runs a dispatcher on its own store over e's database, as a
// second relay would, until the test ends.
func (e *env) startOn(opts Options) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, e.st.Pool().Config().ConnString(), "relay") // as storetest.Open
	if err != nil {
		e.t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Egress == nil {
		opts.Egress = loopback
	}
	d := New(st, opts)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
}

// TestStandardWebhooksAndRotationEndToEnd: two relays deliver to a real
// receiver for a webhook with Standard Webhooks on, before, during and
// after a secret rotation's overlap window. Every request is checked with
// package signature and, captured, with the standardwebhooks library from
// npm: before, the old secret verifies; during the window both secrets
// verify (X-SMTM-Signature holds the new one, X-SMTM-Signature-Previous
// the old one, webhook-signature both), whichever relay sent it; after,
// only the new one. webhook-id is the delivery id on every attempt of a
// delivery, webhook-timestamp the time of each attempt.
func TestStandardWebhooksAndRotationEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Every delivery's first attempt is refused: its retry must carry the
	// same webhook-id and its own timestamp.
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	const oldSecret, newSecret = "old-secret-0123456789abcdef", "new-secret-ünïcødé-0123456789"
	h, err := e.st.CreateWebhook(ctx, "admin", store.Webhook{CompanyID: 1, Name: "std", URL: rc.URL + "/hook",
		Events: []string{"task.completed"}, Secret: oldSecret, Active: true, StandardWebhooks: true,
		// A webhook's own header of these names never replaces the relay's.
		Headers: map[string]string{"webhook-signature": "v1,forged", "Webhook-Id": "forged"}})
	if err != nil {
		t.Fatal(err)
	}
	opts := fast(Options{Workers: 4, PerWebhook: 2, Schedule: Schedule{5 * time.Millisecond}, PollInterval: 5 * time.Millisecond})
	a, b := opts, opts
	a.Owner, b.Owner, a.UserAgent, b.UserAgent = "relay-a", "relay-b", "A/1", "B/1"
	e.start(a)
	e.startOn(b)

	// send delivers n events in waves and returns every request received.
	send := func(n int) (ids []uuid.UUID, got []receipt) {
		t.Helper()
		for i := range n {
			ids = append(ids, e.delivery(h.ID, []byte(`{"event":"task.completed","data":{"n":`+strconv.Itoa(i)+`,"note":"Pumpe überholt ✓"}}`)))
			if i%4 == 3 {
				time.Sleep(3 * opts.PollInterval)
			}
		}
		for _, id := range ids {
			e.waitStatus(id, store.StatusDelivered, 20*time.Second)
			rs := rc.receipts(id)
			if len(rs) != 2 {
				t.Fatalf("delivery %s: %d requests, want 2", id, len(rs))
			}
			for _, r := range rs {
				if v := r.header.Values(signature.StandardIDHeader); len(v) != 1 || v[0] != id.String() {
					t.Fatalf("delivery %s: webhook-id %q, want the delivery id on every attempt", id, v)
				}
				ts, err := strconv.ParseInt(r.header.Get(signature.StandardTimestampHeader), 10, 64)
				if err != nil || ts < r.at.Unix()-1 || ts > r.at.Unix()+1 {
					t.Fatalf("delivery %s: webhook-timestamp %q, received at %d", id, r.header.Get(signature.StandardTimestampHeader), r.at.Unix())
				}
				if v := r.header.Values(signature.StandardSignatureHeader); len(v) != 1 || strings.Contains(v[0], "forged") {
					t.Fatalf("delivery %s: webhook-signature %q", id, v)
				}
			}
			got = append(got, rs...)
		}
		return ids, got
	}
	// check verifies every request with package signature and with the
	// npm library, under the secrets that must and must not verify.
	check := func(phase string, got []receipt, valid, invalid []string) {
		t.Helper()
		reqs := make([]standardjs.Request, len(got))
		for i, r := range got {
			reqs[i] = standardjs.Request{Body: r.body, Header: r.header}
			for _, s := range valid {
				if err := signature.VerifyAny([][]byte{[]byte(s)}, r.body, r.header); err != nil {
					t.Errorf("%s: X-SMTM signatures refuse secret %q: %v", phase, s, err)
				}
				if err := signature.StandardVerify([]byte(s), r.body, r.header, 0); err != nil {
					t.Errorf("%s: webhook-signature refuses secret %q: %v", phase, s, err)
				}
			}
			for _, s := range invalid {
				if err := signature.VerifyAny([][]byte{[]byte(s)}, r.body, r.header); err == nil {
					t.Errorf("%s: X-SMTM signatures accept secret %q", phase, s)
				}
				if err := signature.StandardVerify([]byte(s), r.body, r.header, 0); err == nil {
					t.Errorf("%s: webhook-signature accepts secret %q", phase, s)
				}
			}
		}
		for _, s := range valid {
			verified, _ := standardjs.Run(t, signature.StandardKey([]byte(s)), reqs, nil)
			for i, v := range verified {
				if v != "" {
					t.Errorf("%s: the standardwebhooks library refuses request %d under %q: %s", phase, i, s, v)
				}
			}
		}
		for _, s := range invalid {
			verified, _ := standardjs.Run(t, signature.StandardKey([]byte(s)), reqs, nil)
			for i, v := range verified {
				if v == "" {
					t.Errorf("%s: the standardwebhooks library accepts request %d under %q", phase, i, s)
				}
			}
		}
	}
	// fromBoth sends waves until both relays have sent some (either may
	// claim a whole wave), at most ten.
	fromBoth := func(phase string) (got []receipt) {
		t.Helper()
		seen := map[string]int{}
		for round := 0; round < 10 && (seen["A/1"] == 0 || seen["B/1"] == 0); round++ {
			_, more := send(8)
			for _, r := range more {
				seen[r.header.Get("User-Agent")]++
			}
			got = append(got, more...)
		}
		if seen["A/1"] == 0 || seen["B/1"] == 0 {
			t.Fatalf("%s: requests per relay %v; want both relays to send", phase, seen)
		}
		return got
	}

	got := fromBoth("before the rotation") // both relays have the endpoint with the old secret
	check("before the rotation", got, []string{oldSecret}, []string{newSecret})
	for _, r := range got {
		if r.header.Get(signature.PreviousHeader) != "" || strings.Contains(r.header.Get(signature.StandardSignatureHeader), " ") {
			t.Fatalf("before the rotation: two signatures: %q", r.header)
		}
	}

	if _, err := e.st.UpdateWebhook(ctx, "admin", "webhook.rotate_secret", store.AllCompanies, h.ID, func(w *store.Webhook) error {
		w.Secret = newSecret
		return nil
	}, store.SecretOverlap(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got = fromBoth("in the overlap window")
	check("in the overlap window", got, []string{oldSecret, newSecret}, []string{"third-secret-0123456789"})
	for _, r := range got {
		if r.header.Get(signature.Header) != signature.Sign([]byte(newSecret), r.body) ||
			r.header.Get(signature.PreviousHeader) != signature.Sign([]byte(oldSecret), r.body) {
			t.Fatalf("in the window: X-SMTM-Signature must be the new secret's and -Previous the old one's: %q", r.header)
		}
		if sigs := strings.Fields(r.header.Get(signature.StandardSignatureHeader)); len(sigs) != 2 {
			t.Fatalf("in the window: webhook-signature %q, want two", sigs)
		}
	}

	// The window ends (as if an hour had passed).
	e.exec(`UPDATE {{schema}}.webhooks SET previous_secret_until = now() - interval '1 second' WHERE id = $1`, h.ID)
	got = fromBoth("after the window")
	check("after the window", got, []string{newSecret}, []string{oldSecret})
	for _, r := range got {
		if r.header.Get(signature.PreviousHeader) != "" {
			t.Fatalf("after the window: X-SMTM-Signature-Previous %q", r.header.Get(signature.PreviousHeader))
		}
	}
	if n, err := e.st.ForgetExpiredSecrets(ctx); err != nil || n != 1 {
		t.Fatalf("ForgetExpiredSecrets = %d, %v", n, err)
	}
	var left *string
	if err := e.st.Pool().QueryRow(ctx, strings.ReplaceAll(`SELECT previous_secret FROM {{schema}}.webhooks WHERE id = $1`,
		"{{schema}}", e.st.Schema()), h.ID).Scan(&left); err != nil || left != nil {
		t.Fatalf("previous secret after the window: %v, %v; want NULL", left, err)
	}
}
