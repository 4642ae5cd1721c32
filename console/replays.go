package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/store"
)

// The webhook page's Replay section: ask for the stored events of a time
// range to be delivered again to the webhook (admin.Server.Replay), follow
// the webhook's replays and cancel an active one.

// replaySince are the form's ranges: a duration before now, or custom.
var replaySince = map[string]string{"24h": "the last 24 hours", "168h": "the last 7 days", "custom": ""}

// replayForm is the replay form as typed (or as first shown).
type replayForm struct {
	// Since is "24h", "168h" or "custom" (From and To).
	Since string
	// From and To are datetime-local values in the company's time zone.
	From, To string
	// Error is the one-line reason the form was refused.
	Error string
}

// replayPanel is what the Replay section shows.
type replayPanel struct {
	Form replayForm
	// Earliest is the earliest start a replay may have now; zero when
	// replays are off (no retention window).
	Earliest time.Time
	Window   string
	Replays  []replayRow
	// More is how many older replays are not shown.
	More int
}

// replayRow is a replay as the section lists it.
type replayRow struct {
	store.Replay
	Active bool
	// Percent is the share of the range's events looked at.
	Percent int
}

// shownReplays is how many replays the section lists, newest first.
const shownReplays = 10

func newReplayRow(r store.Replay) replayRow {
	row := replayRow{Replay: r, Active: r.State == store.ReplayQueued || r.State == store.ReplayRunning, Percent: 100}
	if r.Total > 0 && r.State != store.ReplayDone {
		row.Percent = int(min(100*(r.Armed+r.Skipped)/r.Total, 100))
	}
	return row
}

// replayPanel fills the Replay section of webhook h's page; form is the
// form as typed, or nil for a fresh one.
func (c *Console) replayPanel(rq *req, h store.WebhookStats, form *replayForm) (replayPanel, error) {
	now := c.o.Now().In(rq.company.Location)
	p := replayPanel{}
	if form != nil {
		p.Form = *form
	} else {
		p.Form = replayForm{Since: "24h", From: now.Add(-24 * time.Hour).Format(localInput), To: now.Format(localInput)}
	}
	if w := c.api.ReplayWindow(); w > 0 {
		p.Earliest, p.Window = now.Add(-w), days(w)
	}
	rs, err := c.api.Replays(rq.r.Context(), rq.actor, h.ID)
	if err != nil {
		return p, err
	}
	if len(rs) > shownReplays {
		p.More, rs = len(rs)-shownReplays, rs[:shownReplays]
	}
	for _, r := range rs {
		p.Replays = append(p.Replays, newReplayRow(r))
	}
	return p, nil
}

// days is a retention window as a page says it: "30 days", "36 hours".
func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return fmt.Sprintf("%d hours", max(int(d/time.Hour), 1))
}

// replayURL is the webhook page at its Replay section.
func (c *Console) replayURL(id int64) string {
	return fmt.Sprintf("%swebhooks/%d#replay", c.o.Prefix, id)
}

// readReplayForm reads the form into a range; a problem is the form's
// one-line message.
func readReplayForm(rq *req) (replayForm, admin.ReplayRange, string) {
	pf := rq.r.PostForm
	f := replayForm{Since: pf.Get("since"), From: strings.TrimSpace(pf.Get("from")), To: strings.TrimSpace(pf.Get("to"))}
	if _, ok := replaySince[f.Since]; !ok {
		return f, admin.ReplayRange{}, "Range: pick the last 24 hours, the last 7 days, or From and To."
	}
	if f.Since != "custom" {
		return f, admin.ReplayRange{Since: f.Since}, ""
	}
	loc := rq.company.Location
	from, err := time.ParseInLocation(localInput, f.From, loc)
	if err != nil {
		return f, admin.ReplayRange{}, "From: give a date and time."
	}
	rng := admin.ReplayRange{From: from}
	if f.To != "" {
		if rng.To, err = time.ParseInLocation(localInput, f.To, loc); err != nil {
			return f, admin.ReplayRange{}, "To: give a date and time, or leave it empty for now."
		}
	}
	return f, rng, ""
}

// createReplay asks for a replay. A range the API refuses, or a second
// replay while one is active, shows the page again with the form's message.
func (c *Console) createReplay(rq *req) error {
	id := pathID(rq.r)
	f, rng, problem := readReplayForm(rq)
	if problem == "" {
		r, warnings, err := c.api.Replay(rq.r.Context(), rq.actor, id, rng)
		if err == nil {
			loc := rq.company.Location
			c.addFlash(rq, "ok", fmt.Sprintf("Replay #%d queued: %s from %s to %s are sent again, under their original delivery ids, with X-SMTM-Replay: %d.",
				r.ID, eventCount(r.Total), when(loc, r.From), when(loc, r.To), r.ID))
			for _, w := range warnings {
				c.addFlash(rq, "warn", sentence(w))
			}
			c.redirect(rq, c.replayURL(id))
			return nil
		}
		p, ok := admin.Explain(err)
		if !ok || p.Status == http.StatusNotFound {
			return err
		}
		problem = sentence(p.Message)
	}
	f.Error = problem
	return c.showDetail(rq, http.StatusUnprocessableEntity, &f)
}

// cancelReplay cancels one of the webhook's replays.
func (c *Console) cancelReplay(rq *req) error {
	id := pathID(rq.r)
	rid, err := strconv.ParseInt(rq.r.PathValue("replay"), 10, 64)
	if err != nil || rid <= 0 {
		rid = -1 // no replay has it: not found
	}
	r, err := c.api.CancelReplay(rq.r.Context(), rq.actor, id, rid)
	if err != nil {
		p, ok := admin.Explain(err)
		if !ok || p.Status == http.StatusNotFound && p.Message == "no such webhook" {
			return err
		}
		c.addFlash(rq, "error", "Cancel refused: "+p.Message+".")
		c.redirect(rq, c.replayURL(id))
		return nil
	}
	msg := fmt.Sprintf("Replay #%d cancelled: nothing more is sent for it.", r.ID)
	if r.Withdrawn > 0 {
		msg += fmt.Sprintf(" %s it had not sent yet %s back as before the replay.", deliveryCount(r.Withdrawn), isAre(r.Withdrawn))
	}
	c.addFlash(rq, "ok", msg)
	c.redirect(rq, c.replayURL(id))
	return nil
}

func eventCount(n int64) string {
	if n == 1 {
		return "1 event"
	}
	return strconv.FormatInt(n, 10) + " events"
}

func deliveryCount(n int64) string {
	if n == 1 {
		return "1 delivery"
	}
	return strconv.FormatInt(n, 10) + " deliveries"
}

func isAre(n int64) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// sentence makes an API message a sentence: capitalised, with a stop.
func sentence(s string) string {
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
