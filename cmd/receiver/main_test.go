package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/receiver"
	"github.com/smartmaintenance/relay/signature"
)

func TestReceiverVerifiesAndPrints(t *testing.T) {
	out := &syncBuf{}
	h := receiver.New(secrets{"/a": "secret-of-webhook-a"}, 2, out)
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := []byte(`{"event":"task.completed","timestamp":"2026-04-24T09:15:30+07:00","company_id":1,"company_name":"PT Kahatex","data":{"task_id":1}}`)
	post := func(path, sig, id string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set(signature.Header, sig)
		req.Header.Set(signature.DeliveryHeader, id)
		req.Header.Set("Traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := signature.Sign([]byte("secret-of-webhook-a"), body)
	if code := post("/a", good, "d1"); code != 204 {
		t.Errorf("valid request: %d", code)
	}
	if code := post("/a", good, "d2"); code != 503 {
		t.Errorf("second first attempt with --fail-every 2: %d", code)
	}
	if code := post("/a", good, "d2"); code != 204 {
		t.Errorf("retry: %d", code)
	}
	if code := post("/a", signature.Sign([]byte("another-secret-xyz"), body), "d3"); code != 401 {
		t.Errorf("wrong secret: %d", code)
	}
	if code := post("/b", good, "d4"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
	for _, want := range []string{"task.completed", "delivery d1 attempt 1 trace 0123456789abcdef0123456789abcdef", "delivery d2 attempt 2 (a retry", "REJECTED /a delivery d3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSecretsFlag(t *testing.T) {
	s := secrets{}
	if err := s.Set("/kahatex=one, /nordwerk=two"); err != nil || s["/kahatex"] != "one" || s["/nordwerk"] != "two" {
		t.Errorf("%v %v", s, err)
	}
	for _, bad := range []string{"kahatex=one", "/x=", "/x"} {
		if err := (secrets{}).Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := run(nil, func(string) string { return "" }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "no secrets") {
		t.Errorf("no secrets: %v", err)
	}
}

// syncBuf collects output written from many goroutines.
type syncBuf = syncbuf.Buffer

// TestReceiverEscapesAndSparesTests checks that what the receiver prints
// from a payload cannot draw on the terminal, that a test event is never
// answered 503 (it is not retried), and that only accepted requests count
// as delivered.
func TestReceiverEscapesAndSparesTests(t *testing.T) {
	out := &syncBuf{}
	h := receiver.New(secrets{"/a": "secret-of-webhook-a"}, 1, out)
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(body, id string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/a", strings.NewReader(body))
		req.Header.Set(signature.Header, signature.Sign([]byte("secret-of-webhook-a"), []byte(body)))
		req.Header.Set(signature.DeliveryHeader, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(`{"event":"task.completed","company_name":"Evil\u001b[31m\nForged","data":{}}`, "d1"); code != 503 {
		t.Errorf("first attempt with --fail-every 1: %d", code)
	}
	if code := post(`{"event":"task.completed","company_name":"Evil\u001b[31m\nForged","data":{}}`, "d1"); code != 204 {
		t.Errorf("retry: %d", code)
	}
	if code := post(`{"event":"task.completed","test":true,"data":{}}`, "d2"); code != 204 {
		t.Errorf("test event: %d, want 204 even with --fail-every 1", code)
	}
	if strings.Contains(out.String(), "\x1b") || !strings.Contains(out.String(), `Evil\x1b[31m\nForged`) {
		t.Errorf("company name not escaped:\n%q", out.String())
	}
	if received, _, _ := h.Counts(); received != 3 || h.Delivered() != 2 {
		t.Errorf("received %d, delivered %d; want 3 and 2", received, h.Delivered())
	}
}

// TestReceiverPrintsSlackMessages: a slack-format webhook's body is a Slack
// message; the receiver verifies it like any other and prints its text,
// with the event type from X-SMTM-Event.
func TestReceiverPrintsSlackMessages(t *testing.T) {
	out := &syncBuf{}
	srv := httptest.NewServer(receiver.New(secrets{"/slack": "secret-of-the-slack-hook"}, 0, out))
	defer srv.Close()
	body := []byte(`{"text":"Critical repair request #431 filed: Boiler 2 leaking (PT Kahatex)","blocks":[]}`)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/slack", bytes.NewReader(body))
	req.Header.Set(signature.Header, signature.Sign([]byte("secret-of-the-slack-hook"), body))
	req.Header.Set(signature.DeliveryHeader, "d1")
	req.Header.Set(signature.EventHeader, "repair_request.created")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, want := range []string{"✓ repair_request.created", "signature ok  delivery d1 attempt 1",
		"Slack message: Critical repair request #431 filed: Boiler 2 leaking (PT Kahatex)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
