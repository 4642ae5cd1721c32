package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/signature"
)

// TestLargePayloadsVerify: a payload carries its rows' text whole, so it can
// be megabytes; the sample receiver verifies all of it, and says plainly
// when a body is over its limit rather than calling it a bad signature.
func TestLargePayloadsVerify(t *testing.T) {
	const secret = "receiver-test-secret-0123456789"
	var out syncbuf.Buffer
	h := New(map[string]string{"/in": secret}, 0, &out)
	srv := httptest.NewServer(h)
	defer srv.Close()

	post := func(body []byte) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/in", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(signature.Header, signature.Sign([]byte(secret), body))
		req.Header.Set(signature.DeliveryHeader, "0193a5c0-0000-7000-8000-000000000001")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	payload := func(title int) []byte {
		return []byte(`{"event":"task.completed","timestamp":"2026-04-24T09:15:30.000000+07:00","company_id":1,"company_name":"PT Kahatex","data":{"title":"` +
			strings.Repeat("z", title) + `"}}`)
	}

	if code := post(payload(2 << 20)); code/100 != 2 {
		t.Fatalf("a 2 MiB payload: %d, want 2xx; output:\n%s", code, out.String())
	}
	if _, verified, rejected := h.Counts(); verified != 1 || rejected != 0 {
		t.Fatalf("a 2 MiB payload: verified %d, rejected %d", verified, rejected)
	}
	if code := post(payload(MaxBody)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a payload over MaxBody: %d, want 413", code)
	}
	if o := out.String(); !strings.Contains(o, "TOO LARGE /in") || strings.Contains(o, "REJECTED") {
		t.Fatalf("a payload over MaxBody is not told as too large:\n%s", o)
	}
}
