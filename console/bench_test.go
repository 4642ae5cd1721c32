package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/store"
)

// benchEnv is a company with 200 webhooks, one of which has 10,000
// deliveries, each with an attempt, and a signed-in session.
func benchEnv(b *testing.B) (e *env, br *browser, busy int64) {
	b.Helper()
	e = newEnv(b)
	ctx := context.Background()
	for i := range 200 {
		w, err := e.st.CreateWebhook(ctx, "bench", store.Webhook{CompanyID: 1, Name: fmt.Sprintf("Webhook %03d", i),
			URL: fmt.Sprintf("https://hooks.example.com/%d", i), Events: []string{"task.completed", "shutdown.reported"},
			Secret: "s", Headers: map[string]string{"Authorization": "Bearer x"}, Description: "Benchmark webhook", Active: i%7 != 0})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			busy = w.ID
		}
	}
	sql := strings.ReplaceAll(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body, created_at)
			SELECT 'bench', g, 0, 'task.completed', 1, 'tasks', 'update', now(),
				convert_to('{"event":"task.completed","company_id":1,"data":{"task_id":' || g || '}}', 'UTF8'),
				now() - g * interval '7 seconds'
			FROM generate_series(1, 10000) g
			RETURNING id, created_at),
		d AS (
			INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, status, attempts,
				last_status_code, created_at, finished_at)
			SELECT gen_random_uuid(), ev.id, $1, 1, 'task.completed',
				CASE WHEN ev.id % 10 = 0 THEN 'failed' ELSE 'delivered' END, 1,
				CASE WHEN ev.id % 10 = 0 THEN 500 ELSE 200 END, ev.created_at, ev.created_at
			FROM ev RETURNING id, created_at, last_status_code)
		INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, response_snippet)
		SELECT d.id, $1, 1, d.created_at, 12.5, d.last_status_code, 'ok' FROM d`, "{{schema}}", e.st.Schema())
	if _, err := e.st.Pool().Exec(ctx, sql, busy); err != nil {
		b.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	br = e.browser()
	br.signIn(tokenA)
	return e, br, busy
}

func benchPage(b *testing.B, br *browser, path, want string) {
	b.Helper()
	p := br.get(path)
	if p.status != 200 || !strings.Contains(p.body, want) {
		b.Fatalf("%s: %d, want %q in the page", path, p.status, want)
	}
	req, _ := http.NewRequest("GET", br.e.srv.URL+path, nil)
	b.ResetTimer()
	for b.Loop() {
		res, err := br.c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("%s: %d", path, res.StatusCode)
		}
	}
}

// BenchmarkPages: the list of 200 webhooks and the detail page of a webhook
// with 10,000 deliveries (its first page, a page deep in the history, and
// the failed filter), each a whole request through the server.
func BenchmarkPages(b *testing.B) {
	_, br, busy := benchEnv(b)
	detail := fmt.Sprintf("/ui/webhooks/%d", busy)
	first := br.get(detail)
	// A cursor 200 pages deep, taken from the page's "Older" links.
	next := regexp.MustCompile(`cursor=([A-Za-z0-9_-]+)`)
	cursor := next.FindStringSubmatch(first.body)[1]
	for range 200 {
		p := br.get(detail + "?cursor=" + cursor)
		m := next.FindStringSubmatch(p.body)
		if m == nil {
			break
		}
		cursor = m[1]
	}
	b.Run("list-200-webhooks", func(b *testing.B) { benchPage(b, br, "/ui/webhooks", "Webhook 199") })
	b.Run("detail-10000-deliveries", func(b *testing.B) { benchPage(b, br, detail, "Older") })
	b.Run("detail-10000-deliveries-deep-page", func(b *testing.B) { benchPage(b, br, detail+"?cursor="+cursor, "Newest") })
	b.Run("detail-10000-deliveries-failed", func(b *testing.B) { benchPage(b, br, detail+"?status=failed", "Older") })
}
