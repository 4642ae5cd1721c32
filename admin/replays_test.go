package admin_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A company admin replays a range of its webhook's events: the answer says
// how many the range holds; the replay is listed, read and cancelled, and
// audited. Another company's token sees none of it.
func TestReplayAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, _ := e.create(tokenA, map[string]any{"name": "warehouse", "url": e.recv.URL, "events": []string{"task.completed"}})
	for range 3 {
		e.delivery(id, 1, time.Now())
	}
	base := fmt.Sprintf("/v1/webhooks/%d/replays", id)

	r := e.call(tokenA, "POST", base, map[string]any{"since": "168h"})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	rp := r.json(t)["replay"].(map[string]any)
	if rp["events"].(float64) != 3 || rp["state"] != "queued" || rp["requested_by"] != "alice@one" {
		t.Fatalf("created replay: %v", rp)
	}
	one := fmt.Sprintf("%s/%d", base, int64(rp["id"].(float64)))
	if r := e.call(tokenA, "POST", base, map[string]any{"since": "1h"}); r.status != http.StatusConflict || r.errorOf(t)["code"] != "replay_running" {
		t.Fatalf("a second replay while one runs: %d %s", r.status, r.body)
	}

	// Tenancy: company 2 sees no such webhook, let alone its replays.
	for _, c := range []struct{ method, path string }{{"POST", base}, {"GET", base}, {"GET", one}, {"POST", one + "/cancel"}} {
		if r := e.call(tokenB, c.method, c.path, map[string]any{"since": "1h"}); r.status != http.StatusNotFound {
			t.Fatalf("company 2 %s %s: %d %s", c.method, c.path, r.status, r.body)
		}
	}

	if r := e.call(tokenA, "GET", base, nil); r.status != 200 || len(r.json(t)["replays"].([]any)) != 1 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := e.call(tokenA, "GET", one, nil); r.status != 200 || r.json(t)["replay"].(map[string]any)["events"].(float64) != 3 {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	if r := e.call(tokenA, "GET", base+"/999", nil); r.status != http.StatusNotFound {
		t.Fatalf("get an unknown replay: %d %s", r.status, r.body)
	}
	r = e.call(tokenA, "POST", one+"/cancel", nil)
	if r.status != 200 || r.json(t)["replay"].(map[string]any)["state"] != "cancelled" || r.json(t)["replay"].(map[string]any)["withdrawn"] == nil {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if r := e.call(tokenA, "POST", one+"/cancel", nil); r.status != http.StatusConflict || r.errorOf(t)["code"] != "replay_over" {
		t.Fatalf("cancel twice: %d %s", r.status, r.body)
	}
	audit := string(e.call(tokenA, "GET", fmt.Sprintf("/v1/webhooks/%d/audit", id), nil).body)
	if !strings.Contains(audit, `"webhook.replay"`) || !strings.Contains(audit, `"webhook.replay_cancel"`) {
		t.Fatalf("audit lacks the replay and its cancel: %s", audit)
	}
	// Cancelled, the webhook may be replayed again; the operator may too.
	if r := e.call(tokenOp, "POST", base, map[string]any{"from": time.Now().Add(-time.Hour)}); r.status != http.StatusCreated {
		t.Fatalf("operator replay: %d %s", r.status, r.body)
	}
}

// A range the relay cannot replay is refused with a 422 naming the field.
func TestReplayRangeRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, _ := e.create(tokenA, map[string]any{"name": "warehouse", "url": e.recv.URL, "events": []string{"task.completed"}})
	base := fmt.Sprintf("/v1/webhooks/%d/replays", id)
	now := time.Now().UTC()
	for _, c := range []struct {
		body  map[string]any
		field string
		says  string
	}{
		{map[string]any{}, "from", "required"},
		{map[string]any{"since": "7 days"}, "since", "not a duration"},
		{map[string]any{"since": "-1h"}, "since", "positive"},
		{map[string]any{"since": "1h", "from": now.Add(-time.Hour)}, "since", "not both"},
		{map[string]any{"from": now.Add(-40 * 24 * time.Hour)}, "from", "outside retention"},
		{map[string]any{"since": "1000h"}, "from", "outside retention"},
		{map[string]any{"from": now.Add(-time.Hour), "to": now.Add(time.Hour)}, "to", "in the future"},
		{map[string]any{"from": now.Add(-time.Hour), "to": now.Add(-2 * time.Hour)}, "to", "after from"},
	} {
		r := e.call(tokenA, "POST", base, c.body)
		if r.status != http.StatusUnprocessableEntity {
			t.Fatalf("%v: %d %s, want 422", c.body, r.status, r.body)
		}
		if er := r.errorOf(t); er["field"] != c.field || !strings.Contains(er["message"].(string), c.says) {
			t.Fatalf("%v: %s, want field %s saying %q", c.body, r.body, c.field, c.says)
		}
	}
	if r := e.call(tokenA, "POST", base, map[string]any{"from": "yesterday"}); r.status != http.StatusBadRequest {
		t.Fatalf("a from that is no time: %d %s", r.status, r.body)
	}
}
