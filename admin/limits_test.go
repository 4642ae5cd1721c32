package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestInputLimits: what the API refuses in a webhook's fields, on create
// and on update: control characters and bidi overrides in name and
// description, NUL anywhere, out-of-range ports, oversized host names,
// names, descriptions, secrets, URLs and headers. Each is a 422 naming the
// field; none is a 500, and nothing is saved.
func TestInputLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := func(change map[string]any) map[string]any {
		m := map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"}, "secret": "sixteen-bytes-ok!"}
		for k, v := range change {
			m[k] = v
		}
		return m
	}
	host := strings.TrimPrefix(e.recv.URL, "http://127.0.0.1")
	tests := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"NUL in name", good(map[string]any{"name": "a\x00b"}), "name"},
		{"NUL in description", good(map[string]any{"description": "a\x00b"}), "description"},
		{"NUL in secret", good(map[string]any{"secret": "sixteen-bytes-ok!\x00"}), "secret"},
		{"newline in name", good(map[string]any{"name": "ok\nforged-row  https://evil.example"}), "name"},
		{"ESC in name", good(map[string]any{"name": "\x1b[2J\x1b[Hcleared"}), "name"},
		{"C1 CSI in name", good(map[string]any{"name": "a\u009b31mb"}), "name"},
		{"bidi override in name", good(map[string]any{"name": "gpj.\u202eexe"}), "name"},
		{"bidi isolate in description", good(map[string]any{"description": "x\u2067y"}), "description"},
		{"newline in description", good(map[string]any{"description": "a\nb"}), "description"},
		{"100 KB name", good(map[string]any{"name": strings.Repeat("n", 100<<10)}), "name"},
		{"description too long", good(map[string]any{"description": strings.Repeat("d", 2001)}), "description"},
		{"secret too long", good(map[string]any{"secret": strings.Repeat("s", 1025)}), "secret"},
		{"port 0", good(map[string]any{"url": "http://127.0.0.1:0/h"}), "url"},
		{"port 99999", good(map[string]any{"url": "http://127.0.0.1:99999/h"}), "url"},
		{"300-character label", good(map[string]any{"url": "https://" + strings.Repeat("a", 300) + ".example" + host}), "url"},
		{"host name over 253", good(map[string]any{"url": "https://" + strings.Repeat("abcdefgh.", 30) + "example/"}), "url"},
		{"URL too long", good(map[string]any{"url": e.recv.URL + "/" + strings.Repeat("p", 2048)}), "url"},
		{"NUL in header value", good(map[string]any{"headers": map[string]string{"X-A": "a\x00"}}), "headers[X-A]"},
		{"header value too long", good(map[string]any{"headers": map[string]string{"X-A": strings.Repeat("v", 8193)}}), "headers[X-A]"},
		{"NUL in header name", good(map[string]any{"headers": map[string]string{"X-\x00": "v"}}), `headers["X-\x00"]`},
		{"too many headers", good(map[string]any{"headers": func() map[string]string {
			h := map[string]string{}
			for i := range 51 {
				h[fmt.Sprintf("X-H%d", i)] = "v"
			}
			return h
		}()}), "headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.call(tokenA, "POST", "/v1/webhooks", tt.body)
			if r.status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %.300s", r.status, r.body)
			}
			if er := r.errorOf(t); er["code"] != "invalid_webhook" || er["field"] != tt.field {
				t.Errorf("error %.300v, want field %s", er, tt.field)
			}
		})
	}
	// Updates are checked the same way.
	id, _ := e.create(tokenA, good(nil))
	for _, tt := range tests {
		body := map[string]any{}
		for k, v := range tt.body {
			if fmt.Sprint(v) != fmt.Sprint(good(nil)[k]) {
				body[k] = v
			}
		}
		r := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), body)
		if r.status != http.StatusUnprocessableEntity || r.errorOf(t)["field"] != tt.field {
			t.Errorf("PATCH %s: %d %.300s, want 422 naming %s", tt.name, r.status, r.body, tt.field)
		}
	}
	hooks, _ := e.st.ListWebhooks(context.Background(), 1)
	if len(hooks) != 1 || hooks[0].Name != "x" || hooks[0].Description != "" {
		t.Errorf("webhooks after refused input: %+v", hooks)
	}
	if strings.Contains(e.logs.String(), "status=500") {
		t.Errorf("a request answered 500:\n%s", e.logs.String())
	}
}

// TestBodyLimit: a body over 1 MiB is refused with 413 too_large, without
// reading it whole, and nothing is saved.
func TestBodyLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := `{"name": "big", "url": "` + e.recv.URL + `", "events": ["task.completed"], "description": "` +
		strings.Repeat("d", 2<<20) + `"}`
	r := e.call(tokenA, "POST", "/v1/webhooks", body)
	if r.status != http.StatusRequestEntityTooLarge || r.errorOf(t)["code"] != "too_large" {
		t.Fatalf("2 MiB body: %d %.300s", r.status, r.body)
	}
	if hooks, _ := e.st.ListWebhooks(context.Background(), 1); len(hooks) != 0 {
		t.Errorf("saved %d webhooks", len(hooks))
	}
}

// TestWebhookLimitPerCompany: a company cannot create more webhooks than
// admin.max_webhooks_per_company, also when the creations race; deleting
// one makes room; another company is not affected.
func TestWebhookLimitPerCompany(t *testing.T) {
	const limit = 5
	e := newEnv(t, envOptions{maxWebhooks: limit})
	var wg sync.WaitGroup
	statuses := make([]int, 12)
	for i := range statuses {
		wg.Go(func() {
			r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": fmt.Sprintf("h%d", i), "url": e.recv.URL,
				"events": []string{"task.completed"}})
			statuses[i] = r.status
			if r.status == http.StatusConflict {
				if er := r.errorOf(t); er["code"] != "too_many_webhooks" || !strings.Contains(er["message"].(string), "5 webhooks") {
					t.Errorf("refusal: %s", r.body)
				}
			}
		})
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Errorf("status %d", s)
		}
	}
	hooks, _ := e.st.ListWebhooks(context.Background(), 1)
	if created != limit || len(hooks) != limit {
		t.Fatalf("%d created (%d stored), want %d: %v", created, len(hooks), limit, statuses)
	}
	r := e.call(tokenA, "POST", "/v1/webhooks", map[string]any{"name": "one more", "url": e.recv.URL, "events": []string{"task.completed"}})
	if r.status != http.StatusConflict {
		t.Errorf("one more: %d %s", r.status, r.body)
	}
	// Another company has its own count.
	e.create(tokenB, map[string]any{"name": "b", "url": e.recv.URL, "events": []string{"task.completed"}})
	// Deleting one makes room for one.
	if r := e.call(tokenA, "DELETE", fmt.Sprintf("/v1/webhooks/%d", hooks[0].ID), nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e.create(tokenA, map[string]any{"name": "after delete", "url": e.recv.URL, "events": []string{"task.completed"}})
}

// openFiles counts the process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}

// TestConcurrentTestFiresBounded: with admin.max_concurrent_tests N, N test
// events held open by a receiver that does not answer take every slot of
// their company: further ones answer 429 with Retry-After at once, and the
// open files stay bounded. Another company still tests; a slot freed is
// usable again.
func TestConcurrentTestFiresBounded(t *testing.T) {
	const n = 3
	e := newEnv(t, envOptions{maxTests: n, timeout: 30 * time.Second})
	release := make(chan struct{})
	var inFlight atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
	}))
	var releaseOnce sync.Once
	stop := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(hang.Close)
	t.Cleanup(stop)
	id, _ := e.create(tokenA, map[string]any{"name": "hang", "url": hang.URL, "events": []string{"task.completed"}})
	idB, _ := e.create(tokenB, map[string]any{"name": "b", "url": e.recv.URL, "events": []string{"task.completed"}})
	path := fmt.Sprintf("/v1/webhooks/%d/test", id)
	body := `{"event_type": "task.completed"}`

	before := openFiles(t)
	var held sync.WaitGroup
	heldStatus := make([]int, n)
	for i := range n {
		held.Go(func() { heldStatus[i] = e.call(tokenA, "POST", path, body).status })
	}
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d test events reached the receiver, want %d", inFlight.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Many more at once: each is refused at once, not held.
	client := &http.Client{Timeout: 5 * time.Second}
	const extra = 40
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range extra {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tokenA)
			res, err := client.Do(req)
			if err != nil {
				t.Errorf("extra test event: %v", err)
				return
			}
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests && res.Header.Get("Retry-After") != "" {
				refused.Add(1)
			} else {
				t.Errorf("extra test event: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
			}
		})
	}
	wg.Wait()
	if refused.Load() != extra {
		t.Errorf("%d of %d extra test events refused", refused.Load(), extra)
	}
	if got := inFlight.Load(); got != n {
		t.Errorf("the receiver got %d requests, want %d", got, n)
	}
	// Each held test event holds about four descriptors (the API's
	// connection at both ends, the sender's at both ends); the refused ones
	// hold none once answered.
	if now := openFiles(t); now-before > 4*n+12 {
		t.Errorf("open files grew from %d to %d with %d test events held", before, now, n)
	}
	// Another company is not affected.
	if r := e.call(tokenB, "POST", fmt.Sprintf("/v1/webhooks/%d/test", idB), body); r.status != http.StatusOK {
		t.Errorf("company 2's test event: %d %s", r.status, r.body)
	}
	stop()
	held.Wait()
	for i, s := range heldStatus {
		if s != http.StatusOK {
			t.Errorf("held test event %d: %d", i, s)
		}
	}
	// The slots are free again.
	if r := e.call(tokenA, "POST", path, body); r.status != http.StatusOK || r.json(t)["ok"] != true {
		t.Errorf("test event after the others finished: %d %s", r.status, r.body)
	}
}
