package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// replayEnv is a webhook with finished deliveries, and a replay of them.
type replayEnv struct {
	t     *testing.T
	s     *Store
	ctx   context.Context
	hook  int64
	owner string
}

func newReplayEnv(t *testing.T) *replayEnv {
	s := newTestStore(t)
	return &replayEnv{t: t, s: s, ctx: context.Background(), hook: s.addWebhook(t, "http://a", "", ""), owner: "replayer"}
}

// finished adds a delivery to the webhook and records one attempt of it
// answered with code, ending it with status.
func (e *replayEnv) finished(code int, status Status) uuid.UUID {
	e.t.Helper()
	id := e.s.addDelivery(e.t, e.hook, `{}`)
	e.attempt(id, 1, code, status)
	return id
}

// attempt claims delivery id and records attempt n of it.
func (e *replayEnv) attempt(id uuid.UUID, n, code int, status Status) {
	e.t.Helper()
	got, err := e.s.Claim(e.ctx, ClaimRequest{Owner: "sender", Limit: 100, Lease: time.Minute})
	if err != nil {
		e.t.Fatal(err)
	}
	if !slices.ContainsFunc(got, func(c Claimed) bool { return c.ID == id }) {
		e.t.Fatalf("delivery %s not claimed", id)
	}
	var others []uuid.UUID
	for _, c := range got {
		if c.ID != id {
			others = append(others, c.ID)
		}
	}
	if err := e.s.ReleaseClaims(e.ctx, "sender", others); err != nil {
		e.t.Fatal(err)
	}
	res := AttemptResult{DeliveryID: id, Attempt: n, StartedAt: time.Now(), Duration: time.Millisecond, StatusCode: code, Status: status}
	if code >= 300 {
		res.Error = fmt.Sprintf("HTTP %d", code)
	}
	if status == StatusRetrying {
		res.RetryIn = time.Hour
	}
	if err := e.s.RecordAttempt(e.ctx, "sender", res); err != nil {
		e.t.Fatal(err)
	}
}

// eventOnly stores an event of the webhook's type that has no delivery.
func (e *replayEnv) eventOnly() int64 {
	e.t.Helper()
	var id int64
	err := e.s.pool.QueryRow(e.ctx, e.s.q(`INSERT INTO {{schema}}.events
			(source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
		VALUES ('test', (SELECT coalesce(max(commit_lsn), 0) + 1 FROM {{schema}}.events), 0,
		        'task.completed', 1, 'tasks', 'update', now(), '{}') RETURNING id`)).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// armAll creates a replay of the last hour and arms all of it.
func (e *replayEnv) armAll(want int) Replay {
	e.t.Helper()
	w, err := e.s.WebhookByID(e.ctx, AllCompanies, e.hook)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := e.s.CreateReplay(e.ctx, "test", w.Webhook, time.Now().Add(-time.Hour), time.Now().Add(time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.s.ClaimReplays(e.ctx, e.owner, 10, time.Minute); err != nil {
		e.t.Fatal(err)
	}
	step, err := e.s.ArmReplay(e.ctx, r.ID, ReplayBatch{Owner: e.owner, Lease: time.Minute, Limit: 100, Due: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	if step.Armed != want {
		e.t.Fatalf("armed %d, want %d", step.Armed, want)
	}
	return r
}

func (e *replayEnv) delivery(id uuid.UUID) Delivery {
	e.t.Helper()
	d, err := e.s.DeliveryByID(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *replayEnv) cancel(id int64) Replay {
	e.t.Helper()
	w, err := e.s.WebhookByID(e.ctx, AllCompanies, e.hook)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := e.s.CancelReplay(e.ctx, "test", w.Webhook, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// view is what the Webhooks page and the metrics show of the webhook.
type view struct {
	Attempts24h, Succeeded24h int
	LastFired                 time.Time
	FailedCount               int64
	FailedList                []uuid.UUID
}

func (e *replayEnv) view() view {
	e.t.Helper()
	w, err := e.s.WebhookByID(e.ctx, AllCompanies, e.hook)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.s.CountDeliveries(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	failed, err := e.s.WebhookDeliveries(e.ctx, DeliveryFilter{WebhookID: e.hook, Statuses: []Status{StatusFailed}, Limit: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	v := view{Attempts24h: w.Attempts24h, Succeeded24h: w.Succeeded24h, LastFired: w.LastFiredAt, FailedCount: c.Failed}
	for _, d := range failed {
		v.FailedList = append(v.FailedList, d.ID)
	}
	return v
}

func sameView(a, b view) bool {
	return a.Attempts24h == b.Attempts24h && a.Succeeded24h == b.Succeeded24h && a.LastFired.Equal(b.LastFired) &&
		a.FailedCount == b.FailedCount && slices.Equal(a.FailedList, b.FailedList)
}

// sameHistory: the delivery is as it was, as far as its history shows.
func sameHistory(a, b Delivery) bool {
	return a.Status == b.Status && a.Attempts == b.Attempts && a.RetryBase == b.RetryBase &&
		a.LastStatusCode == b.LastStatusCode && a.LastError == b.LastError && a.FinishedAt.Equal(b.FinishedAt) &&
		a.NextAttemptAt.Equal(b.NextAttemptAt) && a.ReplayID == b.ReplayID
}

// Cancelling a replay before it sent its deliveries gives each back the
// state it had before: a delivered one is delivered again, a failed one
// failed with its earlier error, and one the replay created is removed.
// The success rate, last fired, the failed list and count are as before.
func TestCancelReplayRestoresWhatItArmed(t *testing.T) {
	e := newReplayEnv(t)
	ok := e.finished(200, StatusDelivered)
	bad := e.finished(500, StatusFailed)
	fresh := e.eventOnly()
	okBefore, badBefore, before := e.delivery(ok), e.delivery(bad), e.view()
	if okBefore.Status != StatusDelivered || badBefore.Status != StatusFailed || len(before.FailedList) != 1 {
		t.Fatalf("setup: %+v %+v %+v", okBefore, badBefore, before)
	}

	r := e.armAll(3)
	if d := e.delivery(ok); d.Status != StatusPending || d.ReplayID != r.ID {
		t.Fatalf("armed delivery: %+v, want pending for replay %d", d, r.ID)
	}
	r = e.cancel(r.ID)
	if d := e.delivery(ok); !sameHistory(d, okBefore) {
		t.Fatalf("delivered delivery after the cancel:\n %+v\nwant as before the replay:\n %+v", d, okBefore)
	}
	if d := e.delivery(bad); !sameHistory(d, badBefore) {
		t.Fatalf("failed delivery after the cancel:\n %+v\nwant as before the replay:\n %+v", d, badBefore)
	}
	for _, id := range []uuid.UUID{ok, bad} {
		if as, err := e.s.Attempts(e.ctx, id); err != nil || len(as) != 1 {
			t.Fatalf("delivery %s has %d attempts (%v), want its one earlier attempt", id, len(as), err)
		}
	}
	var n int
	if err := e.s.pool.QueryRow(e.ctx, e.s.q(`SELECT count(*) FROM {{schema}}.deliveries WHERE event_id = $1`), fresh).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d deliveries of the event the replay added (%v), want none once cancelled", n, err)
	}
	if after := e.view(); !sameView(after, before) {
		t.Fatalf("the webhook after the cancel:\n %+v\nwant as before the replay:\n %+v", after, before)
	}
	if r.State != ReplayCancelled || r.FinishedAt.IsZero() || r.Pending != 0 || r.Delivered != 0 || r.Failed != 0 || r.Withdrawn != 3 {
		t.Fatalf("cancelled replay %+v: want finished, 3 withdrawn, with no delivery of its own left", r)
	}
}

// What a replay did send stays as it ended: a delivery it delivered keeps
// its new attempt; one whose replay attempt failed and was waiting for a
// retry ends failed, naming the cancel and the receiver's error; one a
// sender held at the cancel is taken back by the sweep once it is free. A
// later replay's cancel gives a delivery back the earlier replay's state.
func TestCancelReplayKeepsWhatItSent(t *testing.T) {
	e := newReplayEnv(t)
	a, b, c := e.finished(200, StatusDelivered), e.finished(200, StatusDelivered), e.finished(200, StatusDelivered)
	cBefore := e.delivery(c)
	r := e.armAll(3)
	got, err := e.s.Claim(e.ctx, ClaimRequest{Owner: "sender", Limit: 100, Lease: time.Minute})
	if err != nil || len(got) != 3 {
		t.Fatalf("claimed %d (%v), want the 3 armed", len(got), err)
	}
	now := time.Now()
	lost, err := e.s.RecordAttempts(e.ctx, "sender", []AttemptResult{
		{DeliveryID: a, Attempt: 2, StartedAt: now, StatusCode: 200, Status: StatusDelivered},
		{DeliveryID: b, Attempt: 2, StartedAt: now, StatusCode: 503, Error: "HTTP 503", Status: StatusRetrying, RetryIn: time.Hour},
	})
	if err != nil || len(lost) != 0 {
		t.Fatalf("record: %v %v", lost, err)
	}
	r = e.cancel(r.ID) // c is still held
	if d := e.delivery(a); d.Status != StatusDelivered || d.Attempts != 2 || d.ReplayID != r.ID {
		t.Fatalf("delivered by the replay: %+v, want delivered, 2 attempts, the replay's", d)
	}
	if d := e.delivery(b); d.Status != StatusFailed || d.Attempts != 2 || d.LastStatusCode != 503 ||
		!strings.Contains(d.LastError, "cancelled") || !strings.Contains(d.LastError, "HTTP 503") {
		t.Fatalf("retrying replay delivery: %+v, want failed naming the cancel and the 503", d)
	}
	if d := e.delivery(c); d.Status != StatusPending || d.LeaseOwner != "sender" {
		t.Fatalf("held delivery: %+v, want left to its sender", d)
	}
	if !r.FinishedAt.IsZero() || r.Withdrawn != 0 || r.Delivered != 1 || r.Failed != 1 || r.Pending != 1 {
		t.Fatalf("cancelled replay %+v: want unfinished while one is held", r)
	}
	if err := e.s.ReleaseClaims(e.ctx, "sender", []uuid.UUID{c}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.s.SweepCancelledReplays(e.ctx); err != nil || n != 1 {
		t.Fatalf("swept %d (%v), want 1", n, err)
	}
	if d := e.delivery(c); !sameHistory(d, cBefore) {
		t.Fatalf("swept delivery:\n %+v\nwant as before the replay:\n %+v", d, cBefore)
	}
	if r, err = e.s.ReplayOf(e.ctx, e.hook, r.ID); err != nil || r.FinishedAt.IsZero() || r.Withdrawn != 1 {
		t.Fatalf("swept replay %+v (%v): want finished, 1 withdrawn", r, err)
	}

	aBefore, bBefore := e.delivery(a), e.delivery(b)
	r2 := e.armAll(3)
	e.cancel(r2.ID)
	for _, want := range []Delivery{aBefore, bBefore, cBefore} {
		if d := e.delivery(want.ID); !sameHistory(d, want) {
			t.Fatalf("after a second replay's cancel:\n %+v\nwant:\n %+v", d, want)
		}
	}
}
