package admin_test

import (
	"fmt"
	"strings"
	"testing"
)

// A webhook's filter is checked when it is saved (a one-line 422 that
// points at the mistake), shown with the webhook, and cleared with "".
// A test event is sent whatever the filter says, and the answer says
// whether the filter would have passed it.
func TestWebhookFilter(t *testing.T) {
	e := newEnv(t, envOptions{})
	body := func(filter string) map[string]any {
		return map[string]any{"name": "critical", "url": e.recv.URL, "events": []string{"repair_request.created"},
			"secret": "sixteen-bytes-ok!", "filter": filter}
	}
	for filter, want := range map[string]string{
		`data.priorty == "critical"`: "filter: unknown field data.priorty: the subscribed events have data.",
		`priority == "critical"`:     "filter: unknown name priority (1:1)",
		`data.priority ==`:           "filter: unexpected token EOF (1:",
		`company_id + 1`:             "filter: ",
	} {
		r := e.call(tokenA, "POST", "/v1/webhooks", body(filter))
		er := r.errorOf(t)
		msg, _ := er["message"].(string)
		if r.status != 422 || er["field"] != "filter" || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Errorf("filter %q: %d %s; want a one-line 422 on filter containing %q", filter, r.status, r.body, want)
		}
	}
	id, created := e.create(tokenA, body(`data.priority == "critical"`))
	if created["webhook"].(map[string]any)["filter"] != `data.priority == "critical"` {
		t.Fatalf("created webhook: %v", created)
	}
	// A change of events that leaves the filter reading a missing field is
	// refused too.
	r := e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), `{"events": ["user.deactivated"]}`)
	if r.status != 422 || r.errorOf(t)["field"] != "filter" {
		t.Errorf("events without the filter's field: %d %s", r.status, r.body)
	}
	if w := fmt.Sprint(created["warnings"]); strings.Contains(w, "filter") {
		t.Errorf("a filter whose field every subscribed event has: warnings %v", w)
	}
	// Events of which only some have the field: saved, with a warning
	// naming those that lack it.
	r = e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), `{"events": ["repair_request.created", "shutdown.reported"]}`)
	if r.status != 200 || !strings.Contains(fmt.Sprint(r.json(t)["warnings"]), "filter: shutdown.reported events have no data.priority") {
		t.Errorf("events some of which lack the filter's field: %d %s; want a warning naming shutdown.reported", r.status, r.body)
	}
	e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), `{"events": ["repair_request.created"]}`)
	res := e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "repair_request.created"}).json(t)
	if res["ok"] != true || res["filter_passed"] != false {
		t.Errorf("test event: %v; want it sent, with filter_passed false (the test data is not critical)", res)
	}
	if n := len(e.recv.requests()); n != 1 {
		t.Errorf("the receiver got %d requests; want the test event", n)
	}
	r = e.call(tokenA, "PATCH", fmt.Sprintf("/v1/webhooks/%d", id), `{"filter": ""}`)
	if r.status != 200 || r.json(t)["webhook"].(map[string]any)["filter"] != "" {
		t.Fatalf("clearing the filter: %d %s", r.status, r.body)
	}
	res = e.call(tokenA, "POST", fmt.Sprintf("/v1/webhooks/%d/test", id), map[string]any{"event_type": "repair_request.created"}).json(t)
	if _, ok := res["filter_passed"]; !ok || res["filter_passed"] != nil {
		t.Errorf("test event without a filter: filter_passed %v; want null", res["filter_passed"])
	}
}
