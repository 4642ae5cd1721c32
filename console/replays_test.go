package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/store"
)

// replays are the replays of webhook id in the store, newest first.
func (e *env) replays(id int64) []store.Replay {
	e.t.Helper()
	rs, err := e.st.Replays(context.Background(), id, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// mustContain fails unless the page has every one of want.
func (p page) mustContain(t *testing.T, what string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(p.body, w) {
			t.Fatalf("%s lacks %q:\n%s", what, w, p.body)
		}
	}
}

// TestReplayForm: on a webhook's page an admin replays the last 24 hours
// and is told how many events the range holds; the replay is listed with
// its state and progress and can be cancelled once. A second replay while
// one is active, a range beyond retention or a malformed one answer the
// page again with the form's one-line message, never a 500.
func TestReplayForm(t *testing.T) {
	e := newEnv(t)
	id := e.create(tokenA, "Data warehouse", "/dw")
	for range 3 {
		e.delivery(id, 1, time.Now())
	}
	b := e.browser()
	b.signIn(tokenA)
	detail := fmt.Sprintf("/ui/webhooks/%d", id)
	b.get(detail).mustContain(t, "the webhook page", `id="replay"`, `action="/ui/webhooks/`+fmt.Sprint(id)+`/replays"`,
		`value="24h" checked`, "No replays yet", "Events are kept 30 days")

	p := b.post(detail+"/replays", url.Values{"since": {"24h"}})
	if p.status != http.StatusSeeOther || p.location != detail+"#replay" {
		t.Fatalf("replay: %d %s\n%s", p.status, p.location, p.body)
	}
	rs := e.replays(id)
	if len(rs) != 1 || rs[0].Total != 3 || rs[0].RequestedBy != "alice@one" || rs[0].State != store.ReplayQueued ||
		rs[0].To.Sub(rs[0].From) != 24*time.Hour {
		t.Fatalf("replays after the form: %+v", rs)
	}
	rid := rs[0].ID
	cancel := fmt.Sprintf("%s/replays/%d/cancel", detail, rid)
	b.get(detail).mustContain(t, "the page after the replay",
		fmt.Sprintf("Replay #%d queued: 3 events from", rid), fmt.Sprintf("X-SMTM-Replay: %d", rid),
		fmt.Sprintf(`id="replay-%d"`, rid), "queued", `action="`+cancel+`"`, ">Cancel<")

	// Its progress, as the replayer moves it.
	if _, err := e.st.Pool().Exec(context.Background(), `UPDATE relay.replays SET state = 'running', armed = 1 WHERE id = $1`, rid); err != nil {
		t.Fatal(err)
	}
	b.get(detail).mustContain(t, "the running replay", "running", `value="33"`, "33%")
	// A delivery it armed, and the attempt made for it, are marked.
	if _, err := e.st.Pool().Exec(context.Background(), `WITH d AS (
			UPDATE relay.deliveries SET replay_id = $1, attempts = 1
			WHERE id = (SELECT id FROM relay.deliveries WHERE webhook_id = $2 LIMIT 1) RETURNING id, webhook_id)
		INSERT INTO relay.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, replay_id)
		SELECT id, webhook_id, 1, now(), 3, 200, $1 FROM d`, rid, id); err != nil {
		t.Fatal(err)
	}
	b.get(detail).mustContain(t, "the page with a replayed delivery", fmt.Sprintf("· replay #%d</span>", rid),
		fmt.Sprintf(`<span class="badge" title="Made for replay #%d (X-SMTM-Replay)">replay #%d</span>`, rid, rid))

	// Refused forms answer the page with the form's message and keep what
	// was typed.
	for name, c := range map[string]struct {
		form url.Values
		says string
	}{
		"second replay":     {url.Values{"since": {"168h"}}, "already has a replay queued or running"},
		"beyond retention":  {url.Values{"since": {"custom"}, "from": {time.Now().AddDate(0, 0, -40).Format("2006-01-02T15:04")}}, "outside retention"},
		"to before from":    {url.Values{"since": {"custom"}, "from": {"2026-01-02T00:00"}, "to": {"2026-01-01T00:00"}}, "To: must be after from"},
		"no from":           {url.Values{"since": {"custom"}, "from": {""}}, "From: give a date and time."},
		"malformed to":      {url.Values{"since": {"custom"}, "from": {"2026-01-02T00:00"}, "to": {"yesterday"}}, "To: give a date and time"},
		"no range":          {url.Values{}, "Range: pick"},
		"a range not given": {url.Values{"since": {"99h"}}, "Range: pick"},
	} {
		p := b.post(detail+"/replays", c.form)
		if p.status != http.StatusUnprocessableEntity {
			t.Fatalf("%s: %d, want 422\n%s", name, p.status, p.body)
		}
		p.mustContain(t, name, `id="replay-error"`, c.says)
		if s := c.form.Get("since"); s != "" && replaySinceKnown(s) && !strings.Contains(p.body, `value="`+s+`" checked`) {
			t.Fatalf("%s: the form lost its range", name)
		}
	}
	if n := len(e.replays(id)); n != 1 {
		t.Fatalf("%d replays after refused forms, want 1", n)
	}

	// Cancel: once.
	if p := b.post(cancel, nil); p.status != http.StatusSeeOther || p.location != detail+"#replay" {
		t.Fatalf("cancel: %d %s", p.status, p.location)
	}
	p = b.get(detail)
	p.mustContain(t, "the page after the cancel", fmt.Sprintf("Replay #%d cancelled", rid), "cancelled")
	if strings.Contains(p.body, `action="`+cancel+`"`) {
		t.Fatal("a cancelled replay still has a Cancel button")
	}
	if rs := e.replays(id); rs[0].State != store.ReplayCancelled {
		t.Fatalf("after the cancel: %+v", rs[0])
	}
	b.post(cancel, nil)
	b.get(detail).mustContain(t, "the page after a second cancel", "Cancel refused: the replay is over already")
	b.post(fmt.Sprintf("%s/replays/%d/cancel", detail, rid+100), nil)
	b.get(detail).mustContain(t, "the page after cancelling an unknown replay", "Cancel refused: no such replay for this webhook")

	// A custom range, then the audit log.
	p = b.post(detail+"/replays", url.Values{"since": {"custom"}, "from": {time.Now().Add(-2 * time.Hour).In(jakarta(t)).Format("2006-01-02T15:04")}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("custom range: %d\n%s", p.status, p.body)
	}
	if rs := e.replays(id); len(rs) != 2 || rs[0].Total != 3 {
		t.Fatalf("custom range: %+v", rs)
	}
	b.get(fmt.Sprintf("/ui/webhooks/%d/audit", id)).mustContain(t, "the audit log", "Replayed a time range", "Cancelled a replay")
}

func replaySinceKnown(s string) bool { return s == "24h" || s == "168h" || s == "custom" }

func jakarta(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("Asia/Jakarta")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestReplayFormTenancyAndCSRF: another company's webhook and its replays
// answer 404 to the Replay forms and change nothing; a replay of another
// webhook is not found through this one's page; forms without the
// session's CSRF token are refused.
func TestReplayFormTenancyAndCSRF(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mine := e.create(tokenA, "Mine", "/a")
	theirs := e.create(tokenB, "Theirs of Nordwerk", "/b")
	e.delivery(theirs, 2, time.Now())
	w, err := e.st.WebhookByID(ctx, store.AllCompanies, theirs)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.st.CreateReplay(ctx, "bob@two", w.Webhook, time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}

	b := e.browser()
	b.signIn(tokenA)
	for path, form := range map[string]url.Values{
		fmt.Sprintf("/ui/webhooks/%d/replays", theirs):                 {"since": {"24h"}},
		fmt.Sprintf("/ui/webhooks/%d/replays/%d/cancel", theirs, r.ID): {},
	} {
		if p := b.post(path, form); p.status != http.StatusNotFound || strings.Contains(p.body, "Theirs") {
			t.Errorf("POST %s: %d, want 404 without the webhook", path, p.status)
		}
	}
	// Their replay through my webhook's page: no such replay.
	b.get(fmt.Sprintf("/ui/webhooks/%d", mine))
	if p := b.post(fmt.Sprintf("/ui/webhooks/%d/replays/%d/cancel", mine, r.ID), nil); p.status != http.StatusSeeOther {
		t.Fatalf("cancel of another webhook's replay: %d", p.status)
	}
	b.get(fmt.Sprintf("/ui/webhooks/%d", mine)).mustContain(t, "my page", "no such replay for this webhook")
	if rs := e.replays(theirs); len(rs) != 1 || rs[0].State != store.ReplayQueued {
		t.Fatalf("company B's replays changed: %+v", rs)
	}

	// CSRF: refused, nothing replayed or cancelled.
	for path, form := range map[string]url.Values{
		fmt.Sprintf("/ui/webhooks/%d/replays", mine):                     {"since": {"24h"}},
		fmt.Sprintf("/ui/webhooks/%d/replays", mine) + "?":               {"since": {"24h"}, "csrf": {"not-the-token"}},
		fmt.Sprintf("/ui/webhooks/%d/replays/%d/cancel", theirs, r.ID):   {},
		fmt.Sprintf("/ui/webhooks/%d/replays/%d/cancel", theirs, r.ID+1): {"csrf": {"not-the-token"}},
	} {
		if p := b.do("POST", path, form, nil); p.status != http.StatusForbidden {
			t.Errorf("POST %s without the CSRF token: %d, want 403", path, p.status)
		}
	}
	if rs := e.replays(mine); len(rs) != 0 {
		t.Fatalf("a refused form replayed: %+v", rs)
	}
}
