package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/smartmaintenance/relay/admin"
)

// TestFilterField: the form saves a webhook's filter, puts a bad one's
// error next to the field keeping what was typed, and the detail shows it.
func TestFilterField(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn(tokenA)
	b.get("/ui/webhooks/new")
	form := func(filter string) url.Values {
		return url.Values{"name": {"Critical only"}, "url": {e.recv.URL + "/critical"},
			"events": {"repair_request.created"}, "filter": {filter}}
	}
	p := b.post("/ui/webhooks/new", form(`data.priority == `))
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, `id="filter-error"`) ||
		!strings.Contains(p.body, "unexpected token EOF") || !strings.Contains(p.body, `value="data.priority == "`) {
		t.Fatalf("a bad filter: %d, error not shown next to the field with the typed value:\n%s", p.status, p.body)
	}
	if p = b.post("/ui/webhooks/new", form(`data.priority == "critical"`)); p.status != 200 {
		t.Fatalf("save: %d", p.status)
	}
	hooks, _ := e.st.ListWebhooks(context.Background(), 1)
	if len(hooks) != 1 || hooks[0].Filter != `data.priority == "critical"` {
		t.Fatalf("saved: %+v", hooks)
	}
	if d := b.get(fmt.Sprintf("/ui/webhooks/%d", hooks[0].ID)); !strings.Contains(d.body, `<code>data.priority == &#34;critical&#34;</code>`) {
		t.Errorf("the detail does not show the filter")
	}
	if ed := b.get(fmt.Sprintf("/ui/webhooks/%d/edit", hooks[0].ID)); !strings.Contains(ed.body, `id="filter" name="filter" type="text" value="data.priority == &#34;critical&#34;"`) {
		t.Errorf("the edit form does not hold the filter")
	}
}

// TestTestEventFilterNote: when the webhook's filter would not pass the
// test event, the test page says that a real event like it would not be
// sent, as the CLI does; with a filter that passes it, or none, it says
// nothing of the sort.
func TestTestEventFilterNote(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const note = "The webhook's filter would not pass this event; a real event like it would not be sent."
	b := e.browser()
	b.signIn(tokenA)
	for _, tc := range []struct {
		filter string
		want   bool
	}{{`company_id == 2`, true}, {`company_id == 1`, false}, {"", false}} {
		name, u, ev, filter := "Filtered "+tc.filter, e.recv.URL+"/f", []string{"task.completed"}, tc.filter
		s, err := e.api.CreateWebhook(ctx, e.actor(tokenA), admin.WebhookInput{Name: &name, URL: &u, Events: &ev, Filter: &filter})
		if err != nil {
			t.Fatal(err)
		}
		p := b.testEvent(t, s.Webhook.ID)
		if !strings.Contains(p.body, "It's wired up.") {
			t.Fatalf("filter %q: the test event did not go through:\n%s", tc.filter, p.body)
		}
		if got := strings.Contains(p.body, note) && strings.Contains(p.body, `id="test-filter-note"`); got != tc.want {
			t.Errorf("filter %q: note shown %v, want %v:\n%s", tc.filter, got, tc.want, p.body)
		}
	}
}
