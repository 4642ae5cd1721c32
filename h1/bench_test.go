package h1_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkRoundTrip sends a webhook-sized POST to a receiver on loopback
// and reads its answer, as an attempt does, through the Transport and
// through net/http's transport alone.
func BenchmarkRoundTrip(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	body := bytes.Repeat([]byte("x"), 400)
	header := http.Header{
		"Content-Type":     {"application/json"},
		"User-Agent":       {"SMTM-Webhooks/1.0"},
		"X-Smtm-Event":     {"task.assigned"},
		"X-Smtm-Delivery":  {"3f1c2a9e-0000-4000-8000-000000000001"},
		"X-Smtm-Signature": {"sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	}
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"h1", newTransport(nil)},
		{"net-http", newTransport(nil).Fallback()},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/hook", bytes.NewReader(body))
				req.Header = header
				resp, err := c.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
