package relay

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/secrets"
	"github.com/smartmaintenance/relay/store"
)

// TestEgressBlocksLoopback: without an allowlist the relay refuses its own
// loopback receiver at connect time, records a failed attempt that says so,
// and sends nothing.
func TestEgressBlocksLoopback(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	// The receiver's host name resolves to loopback; only the dialled
	// address can be judged.
	url := strings.Replace(rc.URL, "127.0.0.1", "localhost", 1)
	wh := e.webhook(url, "", nil)
	id := e.delivery(wh, body)
	none, _ := egress.NewPolicy(nil)
	e.start(fast(Options{Schedule: Schedule{}, Egress: none}))
	d := e.waitStatus(id, store.StatusFailed, 10*time.Second)
	if !strings.HasPrefix(d.LastError, "blocked: ") || !strings.Contains(d.LastError, "loopback") {
		t.Errorf("last error %q, want a clear blocked message", d.LastError)
	}
	if as := e.attempts(id); len(as) != 1 || as[0].StatusCode != 0 || !strings.Contains(as[0].Error, "delivery.allow_networks") {
		t.Errorf("attempts %+v, want one failed attempt naming delivery.allow_networks", as)
	}
	if rc.count() != 0 {
		t.Errorf("receiver got %d requests, want none", rc.count())
	}
}

// TestEgressAllowlistOpensTarget: the same loopback receiver is reached
// when the allowlist names its network.
func TestEgressAllowlistOpensTarget(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	wh := e.webhook(strings.Replace(rc.URL, "127.0.0.1", "localhost", 1), "", nil)
	id := e.delivery(wh, body)
	allow, _ := egress.NewPolicy([]string{"127.0.0.0/8", "::1/128"})
	e.start(fast(Options{Egress: allow}))
	e.waitStatus(id, store.StatusDelivered, 10*time.Second)
	if rc.count() != 1 {
		t.Errorf("receiver got %d requests, want 1", rc.count())
	}
}

// TestUndecryptableSecret: a secret sealed with a key the relay no longer
// has fails that webhook's attempts with a clear error and sends nothing
// unsigned, while another webhook keeps being delivered.
func TestUndecryptableSecret(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	oldKey, _ := secrets.New(bytes.Repeat([]byte{7}, secrets.KeyBytes))
	sealed, _ := oldKey.Seal("secret-under-the-old-key")
	newKey, _ := secrets.New(bytes.Repeat([]byte{8}, secrets.KeyBytes))
	e.st.UseSecrets(newKey)
	bad := e.webhook(rc.URL+"/bad", sealed, nil)
	good := e.webhook(rc.URL+"/good", "", nil)
	goodSealed, _ := newKey.Seal("secret-under-the-new-key")
	e.exec(`UPDATE {{schema}}.webhooks SET secret = $1 WHERE id = $2`, goodSealed, good)
	badID := e.delivery(bad, body)
	goodID := e.delivery(good, body)
	e.start(fast(Options{Schedule: Schedule{}}))
	d := e.waitStatus(badID, store.StatusFailed, 10*time.Second)
	if !strings.Contains(d.LastError, "cannot decrypt") || !strings.Contains(d.LastError, secrets.KeyID(bytes.Repeat([]byte{7}, secrets.KeyBytes))) {
		t.Errorf("last error %q, want it to say the secret cannot be decrypted and name the key", d.LastError)
	}
	e.waitStatus(goodID, store.StatusDelivered, 10*time.Second)
	if got := rc.receipts(badID); len(got) != 0 {
		t.Errorf("the webhook with the unreadable secret got %d requests", len(got))
	}
	r := rc.receipts(goodID)
	if len(r) != 1 || r[0].header.Get("X-SMTM-Signature") != wantSignature("secret-under-the-new-key", body) {
		t.Errorf("good webhook: %d requests, signature %q", len(r), r[0].header.Get("X-SMTM-Signature"))
	}
}

// TestHTTPSOnlyRefusesPlainHTTP: with production's HTTPSOnly, a webhook
// saved with an http:// URL before the setting was on gets no request: its
// attempt fails with the reason. An https:// one is delivered, and so is
// the plain one without the setting.
func TestHTTPSOnlyRefusesPlainHTTP(t *testing.T) {
	e := newEnv(t)
	plain := newReceiver(t, nil)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(tlsSrv.Close)
	refused := e.delivery(e.webhook(plain.URL, "", nil), body)
	secure := e.delivery(e.webhook(tlsSrv.URL, "", nil), body)
	e.start(fast(Options{Schedule: Schedule{}, HTTPSOnly: true, Client: tlsSrv.Client()}))
	d := e.waitStatus(refused, store.StatusFailed, 10*time.Second)
	if d.LastError != errPlainHTTP.Error() || plain.count() != 0 {
		t.Errorf("plain http: last error %q, %d requests; want the refusal and none", d.LastError, plain.count())
	}
	e.waitStatus(secure, store.StatusDelivered, 10*time.Second)

	s := NewSender(SenderOptions{HTTPSOnly: true, Egress: loopback})
	defer s.Close()
	if r := s.Send(context.Background(), Message{URL: plain.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body}); r.Error != errPlainHTTP.Error() || r.Sent != nil {
		t.Errorf("a test send to plain http: %+v", r)
	}
	s = NewSender(SenderOptions{Egress: loopback})
	defer s.Close()
	if r := s.Send(context.Background(), Message{URL: plain.URL, EventType: "task.completed", DeliveryID: uuid.New(), Body: body}); r.StatusCode != 200 {
		t.Errorf("without HTTPSOnly: %+v", r)
	}
}
