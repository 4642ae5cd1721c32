package admin_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/store"
)

// TestDeliveriesRefireAndStats: deliveries and their attempts as the
// dispatcher recorded them against a real receiver; the list's last fired
// and success rate follow the attempts; a re-fire keeps the delivery id and
// then succeeds; a bulk re-fire takes the failed deliveries of a time range.
func TestDeliveriesRefireAndStats(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, _ := e.create(tokenA, map[string]any{"name": "cmms", "url": e.recv.URL + "/cmms", "events": []string{"task.completed"},
		"secret": "stats-secret-0123456789"})
	e.recv.setStatus(503)
	now := time.Now()
	old := e.delivery(id, 1, now.Add(-3*time.Hour))
	mid := e.delivery(id, 1, now.Add(-2*time.Hour))
	recent := e.delivery(id, 1, now.Add(-1*time.Hour))
	e.dispatch()
	for _, d := range []uuid.UUID{old, mid, recent} {
		e.waitStatus(d, store.StatusFailed)
	}

	get := func() map[string]any {
		return e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d", id), nil).json(t)["webhook"].(map[string]any)
	}
	w := get()
	if w["last_fired_at"] == nil || w["success_rate_24h"].(float64) != 0 || w["attempts_24h"].(float64) != 3 {
		t.Errorf("after 3 failed attempts: %v", w)
	}

	// History: newest first, filtered, every attempt.
	page := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries?status=failed", id), nil).json(t)
	ds := page["deliveries"].([]any)
	if len(ds) != 3 || ds[0].(map[string]any)["id"] != recent.String() || ds[2].(map[string]any)["id"] != old.String() {
		t.Fatalf("failed deliveries, newest first: %v", ds)
	}
	first := ds[0].(map[string]any)
	at := first["attempts"].([]any)
	if len(at) != 1 || first["last_status_code"].(float64) != 503 {
		t.Fatalf("delivery: %v", first)
	}
	a := at[0].(map[string]any)
	if a["status_code"].(float64) != 503 || a["error"] != "HTTP 503" || a["response_snippet"] != "receiver says Service Unavailable" ||
		a["duration_ms"].(float64) <= 0 || a["started_at"] == "" {
		t.Errorf("attempt: %v", a)
	}
	if n := len(e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries?status=delivered,pending", id), nil).json(t)["deliveries"].([]any)); n != 0 {
		t.Errorf("%d delivered or pending, want 0", n)
	}
	q := url.Values{"from": {now.Add(-150 * time.Minute).UTC().Format(time.RFC3339)}, "to": {now.Add(-90 * time.Minute).UTC().Format(time.RFC3339)}}
	inRange := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries?%s", id, q.Encode()), nil).json(t)["deliveries"].([]any)
	if len(inRange) != 1 || inRange[0].(map[string]any)["id"] != mid.String() {
		t.Errorf("time filter: %v", inRange)
	}

	// Keyset pagination: one per page, in order, then no cursor.
	var seen []string
	cursor := ""
	for range 5 {
		p := fmt.Sprintf("/v1/webhooks/%d/deliveries?limit=1", id)
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		pg := e.call(tokenA, "GET", p, nil).json(t)
		for _, d := range pg["deliveries"].([]any) {
			seen = append(seen, d.(map[string]any)["id"].(string))
		}
		next, _ := pg["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(seen) != fmt.Sprint([]string{recent.String(), mid.String(), old.String()}) {
		t.Errorf("pages gave %v", seen)
	}

	// Re-fire one: same X-SMTM-Delivery, delivered, attempt 2.
	e.recv.setStatus(200)
	r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/deliveries/%s/refire", id, recent), nil)
	if r.status != 202 {
		t.Fatalf("refire: %d %s", r.status, r.body)
	}
	e.waitStatus(recent, store.StatusDelivered)
	var ids []string
	for _, rq := range e.recv.requests() {
		ids = append(ids, rq.header.Get("X-SMTM-Delivery"))
	}
	if ids[len(ids)-1] != recent.String() || strings.Count(strings.Join(ids, " "), recent.String()) != 2 {
		t.Errorf("X-SMTM-Delivery of the requests: %v", ids)
	}
	one := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries/%s", id, recent), nil).json(t)["delivery"].(map[string]any)
	if one["status"] != "delivered" || len(one["attempts"].([]any)) != 2 || one["attempt_count"].(float64) != 2 {
		t.Errorf("re-fired delivery: %v", one)
	}
	// A delivered one can be re-fired again, a pending one cannot; an
	// unknown one is 404.
	for _, p := range []string{fmt.Sprintf("/v1/webhooks/%d/deliveries/%s/refire", id, uuid.New()), fmt.Sprintf("/v1/webhooks/%d/deliveries/not-a-uuid", id)} {
		method := map[bool]string{true: "POST", false: "GET"}[strings.HasSuffix(p, "/refire")]
		if r := e.call(tokenA, method, p, nil); r.status != 404 || r.errorOf(t)["message"] != "no such delivery for this webhook" {
			t.Errorf("%s %s: %d %s", method, p, r.status, r.body)
		}
	}
	// Another webhook's delivery is not this webhook's.
	otherID, _ := e.create(tokenA, map[string]any{"name": "other", "url": e.recv.URL, "events": []string{"task.completed"}})
	if r := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries/%s", otherID, old), nil); r.status != 404 {
		t.Errorf("delivery through another webhook: %d %s", r.status, r.body)
	}
	// Disabled first, so the new delivery stays pending: a dispatcher
	// would otherwise send it at once.
	e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/disable", id), nil)
	pending := e.delivery(id, 1, now)
	if r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/deliveries/%s/refire", id, pending), nil); r.status != 409 || r.errorOf(t)["code"] != "not_finished" {
		t.Errorf("refire pending: %d %s", r.status, r.body)
	}
	e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/enable", id), nil)
	e.waitStatus(pending, store.StatusDelivered)

	w = get()
	if w["attempts_24h"].(float64) != 5 || w["succeeded_24h"].(float64) != 2 || w["success_rate_24h"].(float64) != 0.4 {
		t.Errorf("after 2 successes in 5 attempts: %v", w)
	}

	// Bulk: the failed deliveries between 4 and 1.5 hours ago.
	body := map[string]any{"from": now.Add(-4 * time.Hour).Format(time.RFC3339Nano), "to": now.Add(-90 * time.Minute).Format(time.RFC3339Nano)}
	bulk := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/refire", id), body).json(t)
	if bulk["refired"].(float64) != 2 {
		t.Fatalf("bulk refire: %v", bulk)
	}
	e.waitStatus(old, store.StatusDelivered)
	e.waitStatus(mid, store.StatusDelivered)
	w = get()
	if w["success_rate_24h"].(float64) != 4.0/7.0 {
		t.Errorf("after 4 successes in 7 attempts: %v", w["success_rate_24h"])
	}
	last, _ := time.Parse(time.RFC3339Nano, w["last_fired_at"].(string))
	if time.Since(last) > time.Minute {
		t.Errorf("last fired %v", last)
	}
	// The re-fires are audited.
	au := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil).json(t)["audit"].([]any)
	if au[0].(map[string]any)["action"] != "delivery.refire_bulk" {
		t.Errorf("latest audit entry: %v", au[0])
	}
	assertNoSecrets(t, e, []string{"stats-secret-0123456789"})
}

// TestDisableEnableDelete: disabled webhooks get no new events and hold
// their deliveries; deleting ends pending deliveries as failed and keeps the
// history and the audit trail.
func TestDisableEnableDelete(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, _ := e.create(tokenA, map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"}})
	e.dispatch()
	r := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/disable", id), nil)
	if r.status != 200 || r.json(t)["webhook"].(map[string]any)["active"] != false {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	held := e.delivery(id, 1, time.Now())
	time.Sleep(200 * time.Millisecond)
	if e.status(held) != store.StatusPending || len(e.recv.requests()) != 0 {
		t.Fatalf("a disabled webhook was called")
	}
	e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/enable", id), nil)
	e.waitStatus(held, store.StatusDelivered)

	e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/disable", id), nil)
	pending := e.delivery(id, 1, time.Now())
	if r := e.call(tokenA, "DELETE", fmt.Sprintf("/v1/webhooks/%d", id), nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d", id), nil); r.status != 404 {
		t.Errorf("GET after delete: %d", r.status)
	}
	if r := e.call(tokenA, "DELETE", fmt.Sprintf("/v1/webhooks/%d", id), nil); r.status != 404 {
		t.Errorf("second delete: %d", r.status)
	}
	d, err := e.st.DeliveryByID(context.Background(), pending)
	if err != nil || d.Status != store.StatusFailed || d.LastError != "webhook deleted" {
		t.Errorf("pending delivery after delete: %+v %v", d, err)
	}
	if _, err := e.st.DeliveryByID(context.Background(), held); err != nil {
		t.Errorf("history lost: %v", err)
	}
	au := e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil)
	var actions []string
	for _, en := range au.json(t)["audit"].([]any) {
		actions = append(actions, en.(map[string]any)["action"].(string))
	}
	if fmt.Sprint(actions) != "[webhook.delete webhook.disable webhook.enable webhook.disable webhook.create]" {
		t.Errorf("audit trail after delete: %v", actions)
	}
	if r := e.call(tokenB, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil); r.status != 404 {
		t.Errorf("company B reads A's audit trail: %d", r.status)
	}
	// The name is free again.
	e.create(tokenA, map[string]any{"name": "x", "url": e.recv.URL, "events": []string{"task.completed"}})
}

// TestFileManagedReadOnly: with webhooks.source: file, the file's webhooks
// are shown and can be test-fired, but not changed through the API.
func TestFileManagedReadOnly(t *testing.T) {
	e := newEnv(t, envOptions{key: true})
	_, _, _, err := e.st.SyncFileWebhooks(context.Background(), []store.Webhook{{CompanyID: 1, Name: "from file",
		URL: e.recv.URL, Events: []string{"task.completed"}, Secret: "file-secret-0123456789", Active: true}})
	if err != nil {
		t.Fatal(err)
	}
	hooks := e.call(tokenA, "GET", "/v1/webhooks", nil).json(t)["webhooks"].([]any)
	h := hooks[0].(map[string]any)
	if h["managed_by"] != "file" || h["has_secret"] != true {
		t.Fatalf("file webhook: %v", h)
	}
	id := int64(h["id"].(float64))
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", fmt.Sprintf("/v1/webhooks/%d", id), `{"name": "renamed"}`},
		{"POST", fmt.Sprintf("/v1/webhooks/%d/disable", id), ``},
		{"DELETE", fmt.Sprintf("/v1/webhooks/%d", id), ``},
	} {
		r := e.call(tokenA, c.method, c.path, c.body)
		if r.status != 409 || r.errorOf(t)["code"] != "file_managed" {
			t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	res := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "task.completed"}).json(t)
	if res["ok"] != true {
		t.Errorf("test of a file webhook: %v", res)
	}
	// The file's secret is encrypted at rest, and a second sync with the
	// same file changes nothing.
	var raw string
	e.st.Pool().QueryRow(context.Background(), `SELECT secret FROM relay.webhooks WHERE id = $1`, id).Scan(&raw)
	if !strings.HasPrefix(raw, "enc:v1:") {
		t.Errorf("file secret stored as %q", raw)
	}
	_, updated, _, err := e.st.SyncFileWebhooks(context.Background(), []store.Webhook{{CompanyID: 1, Name: "from file",
		URL: e.recv.URL, Events: []string{"task.completed"}, Secret: "file-secret-0123456789", Active: true}})
	if err != nil || updated != 0 {
		t.Errorf("resync of an unchanged file: updated %d, %v", updated, err)
	}
	assertNoSecrets(t, e, []string{"file-secret-0123456789"})
}
