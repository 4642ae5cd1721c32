package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
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
