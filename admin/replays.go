package admin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/smartmaintenance/relay/store"
)

// replayStore is what replays ask of the store. *store.Store implements
// it.
type replayStore interface {
	CreateReplay(ctx context.Context, actor string, w store.Webhook, from, to time.Time) (store.Replay, error)
	Replays(ctx context.Context, webhookID int64, limit int) ([]store.Replay, error)
	ReplayOf(ctx context.Context, webhookID, id int64) (store.Replay, error)
	CancelReplay(ctx context.Context, actor string, w store.Webhook, id int64) (store.Replay, error)
}

var errReplayNotFound = newError(http.StatusNotFound, "not_found", "", "no such replay for this webhook")

// replayView is a replay as the API shows it.
type replayView struct {
	ID          int64     `json:"id"`
	WebhookID   int64     `json:"webhook_id"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	RequestedBy string    `json:"requested_by"`
	State       string    `json:"state"`
	// Events is how many stored events of the range the webhook was
	// subscribed to when the replay was created.
	Events  int64 `json:"events"`
	Armed   int64 `json:"armed"`
	Skipped int64 `json:"skipped"`
	// Progress is the share of Events looked at, 0 to 1.
	Progress float64 `json:"progress"`
	// Withdrawn counts the deliveries a cancel took back unsent: given
	// back the state they had before the replay, or removed.
	Withdrawn  int64      `json:"withdrawn"`
	Pending    int64      `json:"pending"`
	Delivered  int64      `json:"delivered"`
	Failed     int64      `json:"failed"`
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func replayOut(r store.Replay) replayView {
	v := replayView{ID: r.ID, WebhookID: r.WebhookID, From: r.From, To: r.To, RequestedBy: r.RequestedBy, State: string(r.State),
		Events: r.Total, Armed: r.Armed, Skipped: r.Skipped, Withdrawn: r.Withdrawn, Pending: r.Pending, Delivered: r.Delivered, Failed: r.Failed,
		Error: r.Error, CreatedAt: r.CreatedAt, Progress: 1}
	if r.Total > 0 && r.State != store.ReplayDone {
		v.Progress = min(float64(r.Armed+r.Skipped)/float64(r.Total), 1)
	}
	if !r.StartedAt.IsZero() {
		t := r.StartedAt
		v.StartedAt = &t
	}
	if !r.FinishedAt.IsZero() {
		t := r.FinishedAt
		v.FinishedAt = &t
	}
	return v
}

// ReplayRange is what an admin asks to replay: From and To (To zero:
// now), or Since, a duration before now.
type ReplayRange struct {
	From, To time.Time
	Since    string
}

// futureSlack is how far past the relay's clock a replay's end may be
// (the admin's clock may run ahead); it is then taken as now.
const futureSlack = time.Minute

// resolve checks a range against now and the replay window, and returns
// it with both ends set.
func (s *Server) resolve(in ReplayRange, now time.Time) (from, to time.Time, err error) {
	var problems []problem
	from, to = in.From, in.To
	switch {
	case in.Since != "" && (!in.From.IsZero() || !in.To.IsZero()):
		problems = append(problems, problem{"since", "give either since or from (and to), not both"})
	case in.Since != "":
		d, perr := time.ParseDuration(in.Since)
		switch {
		case perr != nil:
			problems = append(problems, problem{"since", fmt.Sprintf("%q is not a duration such as 168h", in.Since)})
		case d <= 0:
			problems = append(problems, problem{"since", "must be positive, such as 168h"})
		default:
			from, to = now.Add(-d), now
		}
	case in.From.IsZero():
		problems = append(problems, problem{"from", "required (RFC 3339), or since (a duration such as 168h)"})
	}
	if len(problems) == 0 {
		if to.IsZero() {
			to = now
		}
		switch {
		case to.After(now.Add(futureSlack)):
			problems = append(problems, problem{"to", fmt.Sprintf("%s is in the future; a replay sends events already stored", to.Format(time.RFC3339))})
		case !to.After(from):
			problems = append(problems, problem{"to", "must be after from"})
		case from.Before(now.Add(-s.o.ReplayWindow)):
			problems = append(problems, problem{"from", fmt.Sprintf(
				"%s is outside retention: events are kept %s (the longer of retention.delivered and retention.failed), so the earliest a replay may start is %s",
				from.Format(time.RFC3339), s.o.ReplayWindow, now.Add(-s.o.ReplayWindow).Format(time.RFC3339))})
		}
		to = minTime(to, now)
	}
	if len(problems) > 0 {
		return time.Time{}, time.Time{}, invalid("invalid_range", problems)
	}
	return from, to, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Replay asks for the stored events of a range to be delivered again to
// one of the actor's webhooks (see store.CreateReplay). The warnings say
// when it will wait or has nothing to send.
func (s *Server) Replay(ctx context.Context, a Actor, id int64, in ReplayRange) (store.Replay, []string, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return store.Replay{}, nil, err
	}
	return s.replay(ctx, a.p, h, in)
}

func (s *Server) replay(ctx context.Context, who principal, h store.WebhookStats, in ReplayRange) (store.Replay, []string, error) {
	from, to, err := s.resolve(in, time.Now())
	if err != nil {
		return store.Replay{}, nil, err
	}
	r, err := s.o.Store.CreateReplay(ctx, who.name, h.Webhook, from, to)
	if err != nil {
		return store.Replay{}, nil, err
	}
	s.o.Notify()
	var warnings []string
	if !h.Active {
		warnings = append(warnings, "the webhook is disabled: the replay waits until it is enabled")
	}
	if r.Total == 0 {
		warnings = append(warnings, "the range holds no stored event of the webhook's event types: the relay stores only the events some webhook took, for as long as retention keeps them")
	}
	return r, warnings, nil
}

// ReplayWindow is how far back a replay may reach (Options.ReplayWindow).
func (s *Server) ReplayWindow() time.Duration { return s.o.ReplayWindow }

// Replays lists the replays of one of the actor's webhooks, newest first.
func (s *Server) Replays(ctx context.Context, a Actor, id int64) ([]store.Replay, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return nil, err
	}
	return s.o.Store.Replays(ctx, h.ID, maxPage)
}

// CancelReplay cancels a replay of one of the actor's webhooks.
func (s *Server) CancelReplay(ctx context.Context, a Actor, id, replayID int64) (store.Replay, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return store.Replay{}, err
	}
	return s.cancelReplay(ctx, a.p, h, replayID)
}

func (s *Server) cancelReplay(ctx context.Context, who principal, h store.WebhookStats, replayID int64) (store.Replay, error) {
	r, err := s.o.Store.CancelReplay(ctx, who.name, h.Webhook, replayID)
	if err != nil {
		return store.Replay{}, replayError(err)
	}
	s.o.Notify()
	return r, nil
}

// replayError answers a replay the webhook does not have.
func replayError(err error) error {
	if isNotFound(err) {
		return errReplayNotFound
	}
	return err
}

// replayID reads the {replay_id} path value; a malformed one is simply
// not found.
// replayRoute reads a replay route's webhook, which must be the caller's
// to see, and replay id.
func (s *Server) replayRoute(r *http.Request, who principal) (store.WebhookStats, int64, error) {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return h, 0, err
	}
	id, err := replayID(r)
	return h, id, err
}

func replayID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("replay_id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, errReplayNotFound
	}
	return id, nil
}

func (s *Server) createReplay(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	var in struct {
		From  *time.Time `json:"from"`
		To    *time.Time `json:"to"`
		Since string     `json:"since"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	rng := ReplayRange{Since: in.Since}
	if in.From != nil {
		rng.From = *in.From
	}
	if in.To != nil {
		rng.To = *in.To
	}
	rp, warnings, err := s.replay(r.Context(), who, h, rng)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"replay": replayOut(rp), "warnings": s.nonNil(warnings)})
	return nil
}

func (s *Server) listReplays(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	rs, err := s.o.Store.Replays(r.Context(), h.ID, maxPage)
	if err != nil {
		return err
	}
	out := make([]replayView, len(rs))
	for i, rp := range rs {
		out[i] = replayOut(rp)
	}
	writeJSON(w, http.StatusOK, map[string]any{"replays": out})
	return nil
}

func (s *Server) getReplay(w http.ResponseWriter, r *http.Request, who principal) error {
	h, id, err := s.replayRoute(r, who)
	if err != nil {
		return err
	}
	rp, err := s.o.Store.ReplayOf(r.Context(), h.ID, id)
	if err != nil {
		return replayError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"replay": replayOut(rp)})
	return nil
}

func (s *Server) cancelReplayRoute(w http.ResponseWriter, r *http.Request, who principal) error {
	h, id, err := s.replayRoute(r, who)
	if err != nil {
		return err
	}
	rp, err := s.cancelReplay(r.Context(), who, h, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"replay": replayOut(rp)})
	return nil
}
