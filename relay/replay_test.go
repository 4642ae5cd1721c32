package relay

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// storeEvents stores events as the ingester does (WriteCommit, nothing
// leased): n of type typ and company, committed at start, start+step, ...
// It returns the position after them.
func (e *env) storeEvents(lsn event.LSN, company int64, typ string, start time.Time, step time.Duration, n int) event.LSN {
	e.t.Helper()
	ctx := context.Background()
	events := make([]event.Event, n)
	for i := range events {
		events[i] = event.Event{Type: typ, CompanyID: company, CommitLSN: lsn, Seq: i, CommitTime: start.Add(time.Duration(i) * step),
			Table: "tasks", Op: event.Update, Body: body}
	}
	from, _, err := e.st.Position(ctx, "s")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, _, err := e.st.WriteCommit(ctx, "s", store.Batch{Events: events}, from, lsn+1); err != nil {
		e.t.Fatal(err)
	}
	return lsn + 1
}

// oldWebhookOf inserts an active webhook of company subscribed to events,
// created a day ago: it takes the events the tests store as of hours ago.
func (e *env) oldWebhookOf(company int64, url string, events ...string) int64 {
	e.t.Helper()
	id := e.webhookOf(company, url, events...)
	e.exec(`UPDATE {{schema}}.webhooks SET created_at = now() - interval '1 day' WHERE id = $1`, id)
	return id
}

// webhookOf inserts an active webhook of company subscribed to events,
// created now.
func (e *env) webhookOf(company int64, url string, events ...string) int64 {
	e.t.Helper()
	var id int64
	err := e.st.Pool().QueryRow(context.Background(), strings.ReplaceAll(`INSERT INTO {{schema}}.webhooks
			(company_id, name, url, events) VALUES ($1, 'hook-' || gen_random_uuid(), $2, $3) RETURNING id`,
		"{{schema}}", e.st.Schema()), company, url, events).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) hook(id int64) store.Webhook {
	e.t.Helper()
	w, err := e.st.WebhookByID(context.Background(), store.AllCompanies, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return w.Webhook
}

// startReplayer runs a replayer on st until the test ends or stop is
// called.
func (e *env) startReplayer(st replayStore, o ReplayOptions) (stop func()) {
	e.t.Helper()
	r := NewReplayer(st, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			e.t.Error(err)
		}
	}()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	e.t.Cleanup(stop)
	return stop
}

func (e *env) replay(webhook, id int64) store.Replay {
	e.t.Helper()
	r, err := e.st.ReplayOf(context.Background(), webhook, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// replayReceipts returns the receipts carrying X-SMTM-Replay: id.
func (rc *receiver) replayReceipts(id int64) []receipt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []receipt
	for _, r := range rc.all {
		if r.header.Get("X-SMTM-Replay") == strconv.FormatInt(id, 10) {
			out = append(out, r)
		}
	}
	return out
}

// waitDelivered waits until the store has n deliveries recorded as
// delivered.
func (e *env) waitDelivered(n int) {
	e.t.Helper()
	var got int
	eventually(e.t, 10*time.Second, func() bool {
		got = e.countDeliveries(`status = 'delivered'`)
		return got == n
	}, func() string { return strconv.Itoa(got) + " recorded as delivered, want " + strconv.Itoa(n) })
}

func (e *env) waitReplay(webhook, id int64, want store.ReplayState, timeout time.Duration) store.Replay {
	e.t.Helper()
	var r store.Replay
	eventually(e.t, timeout, func() bool {
		r = e.replay(webhook, id)
		return r.State == want
	}, func() string { return "replay is " + string(r.State) + ", want " + string(want) })
	return r
}

// A replay of a range delivers exactly the range's events again to the
// webhook, under their original delivery ids, with X-SMTM-Replay; the
// history keeps the first attempts and marks the replayed ones. A webhook
// created after the events gets them under the ids their deliveries would
// have had.
func TestReplayDeliversTheRangeAgainUnderTheSameIDs(t *testing.T) {
	e := newEnv(t)
	e.ready()
	ctx := context.Background()
	rc := newReceiver(t, nil)
	hook := e.oldWebhookOf(1, rc.URL, "task.completed")
	e.oldWebhookOf(2, rc.URL, "task.completed") // another company's
	now := time.Now()
	lsn := e.storeEvents(100, 1, "task.completed", now.Add(-5*time.Hour), time.Second, 4) // before the range
	lsn = e.storeEvents(lsn, 1, "task.completed", now.Add(-2*time.Hour), time.Second, 12) // in it
	lsn = e.storeEvents(lsn, 2, "task.completed", now.Add(-2*time.Hour), time.Second, 5)  // another company
	d, _ := e.start(fast(Options{}))
	d.Notify()
	eventually(t, 10*time.Second, func() bool { return rc.count() == 21 }, func() string { return strconv.Itoa(rc.count()) + " received" })
	// A replay skips a delivery whose attempt is not recorded yet (it is
	// being sent): wait for the records, which follow the receipts.
	e.waitDelivered(21)
	first := map[string]bool{}
	rc.mu.Lock()
	for _, r := range rc.all {
		first[r.header.Get("X-SMTM-Delivery")] = true
	}
	rc.mu.Unlock()

	late := newReceiver(t, nil)
	lateHook := e.webhookOf(1, late.URL, "task.completed")
	e.startReplayer(e.st, ReplayOptions{Notify: d.Notify, Poll: 20 * time.Millisecond})
	from, to := now.Add(-3*time.Hour), now
	rp, err := e.st.CreateReplay(ctx, "test", e.hook(hook), from, to)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Total != 12 {
		t.Fatalf("the range holds %d events of the webhook, want 12", rp.Total)
	}
	lateRp, err := e.st.CreateReplay(ctx, "test", e.hook(lateHook), from, to)
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitReplay(hook, rp.ID, store.ReplayDone, 10*time.Second)
	if done.Armed != 12 || done.Skipped != 0 || done.Delivered != 12 || done.Pending != 0 {
		t.Fatalf("replay done with %+v, want 12 armed and delivered", done)
	}
	e.waitReplay(lateHook, lateRp.ID, store.ReplayDone, 10*time.Second)

	got := rc.replayReceipts(rp.ID)
	if len(got) != 12 {
		t.Fatalf("%d replayed requests, want 12", len(got))
	}
	seen := map[string]bool{}
	for _, r := range got {
		id := r.header.Get("X-SMTM-Delivery")
		if !first[id] || seen[id] {
			t.Fatalf("replayed delivery %s: not an original id, or sent twice", id)
		}
		seen[id] = true
		rec, err := e.st.DeliveryOf(ctx, hook, uuid.MustParse(id))
		if err != nil {
			t.Fatal(err)
		}
		if rec.ReplayID != rp.ID || len(rec.Attempts) != 2 || rec.Attempts[0].ReplayID != 0 || rec.Attempts[1].ReplayID != rp.ID {
			t.Fatalf("history of %s: replay %d, attempts %+v; want the first live and the second the replay's", id, rec.ReplayID, rec.Attempts)
		}
	}
	// The late webhook's deliveries carry the ids delivery_id gives.
	lateGot := late.replayReceipts(lateRp.ID)
	if len(lateGot) != 12 {
		t.Fatalf("the late webhook got %d replayed requests, want 12", len(lateGot))
	}
	for _, r := range lateGot {
		var want uuid.UUID
		err := e.st.Pool().QueryRow(ctx, strings.ReplaceAll(`SELECT {{schema}}.delivery_id(
				(SELECT delivery_key FROM {{schema}}.installation), e.source, e.commit_lsn, e.seq, $2, e.committed_at)
			FROM {{schema}}.deliveries d JOIN {{schema}}.events e ON e.id = d.event_id WHERE d.id = $1`, "{{schema}}", e.st.Schema()),
			r.header.Get("X-SMTM-Delivery"), lateHook).Scan(&want)
		if err != nil || want.String() != r.header.Get("X-SMTM-Delivery") {
			t.Fatalf("late webhook's delivery %s: want the id %s (%v)", r.header.Get("X-SMTM-Delivery"), want, err)
		}
	}
}

// crashingStore is a replayer's store whose replayer dies without giving
// its replays back.
type crashingStore struct{ *store.Store }

func (crashingStore) ReleaseReplays(context.Context, string) error { return nil }

// A replayer that dies in the middle of a replay leaves it to another once
// its lease passes; the other goes on where it stopped: every event is
// sent again, none twice.
func TestReplayResumesAfterACrash(t *testing.T) {
	e := newEnv(t)
	e.ready()
	ctx := context.Background()
	rc := newReceiver(t, nil)
	hook := e.oldWebhookOf(1, rc.URL, "task.completed")
	const n = 60
	e.storeEvents(100, 1, "task.completed", time.Now().Add(-time.Hour), time.Second, n)
	d, _ := e.start(fast(Options{}))
	d.Notify()
	eventually(t, 10*time.Second, func() bool { return rc.count() == n }, func() string { return strconv.Itoa(rc.count()) + " received" })
	e.waitDelivered(n)

	rp, err := e.st.CreateReplay(ctx, "test", e.hook(hook), time.Now().Add(-2*time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stop := e.startReplayer(crashingStore{e.st}, ReplayOptions{Owner: "first", Rate: 40, Lease: time.Second,
		Notify: d.Notify, Poll: 20 * time.Millisecond})
	eventually(t, 10*time.Second, func() bool { return e.replay(hook, rp.ID).Armed >= 10 }, func() string { return "nothing armed" })
	stop()
	mid := e.replay(hook, rp.ID)
	if mid.Armed >= n || mid.State != store.ReplayRunning {
		t.Fatalf("after the crash: %+v, want a running replay part way", mid)
	}
	e.startReplayer(e.st, ReplayOptions{Owner: "second", Rate: 1000, Notify: d.Notify, Poll: 20 * time.Millisecond})
	done := e.waitReplay(hook, rp.ID, store.ReplayDone, 15*time.Second)
	if done.Armed != n || done.Skipped != 0 || done.Delivered != n {
		t.Fatalf("replay done with %+v, want all %d armed and delivered", done, n)
	}
	got := rc.replayReceipts(rp.ID)
	seen := map[string]int{}
	for _, r := range got {
		seen[r.header.Get("X-SMTM-Delivery")]++
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("%d replayed requests for %d deliveries, want %d each once", len(got), len(seen), n)
	}
}

// A replay looks at no more than its rate of events a second (and its
// burst, a fifth of a second's worth).
func TestReplayRateIsBounded(t *testing.T) {
	e := newEnv(t)
	e.ready()
	ctx := context.Background()
	rc := newReceiver(t, nil)
	const n, rate = 50, 25
	// Stored for another webhook before this one was created: the replay
	// creates every delivery.
	e.oldWebhookOf(1, newReceiver(t, nil).URL, "task.completed")
	e.storeEvents(100, 1, "task.completed", time.Now().Add(-time.Hour), time.Second, n)
	late := e.webhookOf(1, rc.URL, "task.completed")
	d, _ := e.start(fast(Options{}))
	e.startReplayer(e.st, ReplayOptions{Rate: rate, PerWebhook: 1000, Notify: d.Notify, Poll: 20 * time.Millisecond})
	t0 := time.Now()
	rp, err := e.st.CreateReplay(ctx, "test", e.hook(late), time.Now().Add(-2*time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.waitReplay(late, rp.ID, store.ReplayDone, 20*time.Second)
	got := rc.replayReceipts(rp.ID)
	if len(got) != n {
		t.Fatalf("%d replayed requests, want %d", len(got), n)
	}
	// Rate × t + burst: n events take at least (n - burst) / rate.
	burst := rate / 5
	if took, least := got[n-1].at.Sub(t0), time.Duration(float64(n-burst)/rate*float64(time.Second)); took < least {
		t.Fatalf("%d events replayed in %v, faster than %d a second allows (%v)", n, took, rate, least)
	}
	// The replay makes deliveries due at that rate; the dispatcher sends
	// them when it claims them, a poll or a busy machine's moment later,
	// so the receiver may see one second's requests come from a little
	// more than a second of the replay's: rate × (1 s + jitter) + burst.
	const jitter = 200 * time.Millisecond
	most := int(float64(rate)*(1+jitter.Seconds())) + burst
	for i := range got {
		j := i
		for j < n && got[j].at.Sub(got[i].at) < time.Second {
			j++
		}
		if j-i > most {
			t.Fatalf("%d replayed requests within a second from %v, more than %d × (1 s + %v) + %d", j-i, got[i].at, rate, jitter, burst)
		}
	}
}

// While a large replay runs to a slow webhook, its live deliveries keep
// flowing: they queue behind no more than replay.per_webhook replayed
// ones.
func TestReplayDoesNotStarveLiveDeliveries(t *testing.T) {
	e := newEnv(t)
	e.ready()
	ctx := context.Background()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(40 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	const n = 200
	e.oldWebhookOf(1, newReceiver(t, nil).URL, "task.completed")
	lsn := e.storeEvents(100, 1, "task.completed", time.Now().Add(-time.Hour), time.Millisecond, n)
	hook := e.webhookOf(1, rc.URL, "task.completed")
	d, _ := e.start(fast(Options{Workers: 4, PerWebhook: 2}))
	e.startReplayer(e.st, ReplayOptions{Rate: 10000, PerWebhook: 1, Notify: d.Notify, Poll: 20 * time.Millisecond})
	rp, err := e.st.CreateReplay(ctx, "test", e.hook(hook), time.Now().Add(-2*time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return len(rc.replayReceipts(rp.ID)) >= 5 }, func() string { return "the replay does not run" })
	// Live events, one every 100 ms, each answered within a second.
	written := map[int]time.Time{}
	for i := range 8 {
		written[i] = time.Now()
		lsn = e.storeEvents(lsn, 1, "task.completed", time.Now(), 0, 1)
		d.Notify()
		time.Sleep(100 * time.Millisecond)
	}
	if sent := len(rc.replayReceipts(rp.ID)); sent > n-50 {
		t.Fatalf("the replay was nearly over (%d of %d sent) when the live events were written: the test proves nothing", sent, n)
	}
	eventually(t, 10*time.Second, func() bool { return rc.count()-len(rc.replayReceipts(rp.ID)) == 8 },
		func() string { return "live deliveries missing" })
	var worst time.Duration
	rc.mu.Lock()
	live := 0
	for _, r := range rc.all {
		if r.header.Get("X-SMTM-Replay") != "" {
			continue
		}
		worst = max(worst, r.at.Sub(written[live]))
		live++
	}
	rc.mu.Unlock()
	if worst > time.Second {
		t.Fatalf("a live delivery waited %v behind the replay", worst)
	}
}

// Cancelling a replay stops it: nothing more is armed, and what it armed
// whose replay attempt failed and waits for a retry ends as failed,
// naming the cancel (store tests cover the deliveries it gives back).
func TestReplayCancel(t *testing.T) {
	e := newEnv(t)
	e.ready()
	ctx := context.Background()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusServiceUnavailable) })
	e.oldWebhookOf(1, newReceiver(t, nil).URL, "task.completed")
	e.storeEvents(100, 1, "task.completed", time.Now().Add(-time.Hour), time.Second, 30)
	hook := e.webhookOf(1, rc.URL, "task.completed")
	d, _ := e.start(fast(Options{Schedule: Schedule{time.Minute}}))
	e.startReplayer(e.st, ReplayOptions{PerWebhook: 5, Notify: d.Notify, Poll: 20 * time.Millisecond})
	rp, err := e.st.CreateReplay(ctx, "test", e.hook(hook), time.Now().Add(-2*time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The receiver fails them: five wait for their retries, and the
	// replay for them.
	eventually(t, 10*time.Second, func() bool { return len(rc.replayReceipts(rp.ID)) == 5 }, func() string { return "not five sent" })
	if _, err := e.st.CancelReplay(ctx, "test", e.hook(hook), rp.ID); err != nil {
		t.Fatal(err)
	}
	var r store.Replay
	eventually(t, 10*time.Second, func() bool {
		r = e.replay(hook, rp.ID)
		return !r.FinishedAt.IsZero()
	}, func() string { return "cancelled replay not finished" })
	if r.State != store.ReplayCancelled || r.Armed != 5 || r.Failed != 5 || r.Pending != 0 {
		t.Fatalf("cancelled replay: %+v, want 5 armed, 5 failed", r)
	}
	if n := e.countDeliveries(`replay_id = ` + strconv.FormatInt(rp.ID, 10) + ` AND last_error LIKE '%cancelled%'`); n != 5 {
		t.Fatalf("%d deliveries end naming the cancel, want 5", n)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(rc.replayReceipts(rp.ID)); got != 5 {
		t.Fatalf("%d replayed requests after the cancel, want still 5", got)
	}
	if _, err := e.st.CancelReplay(ctx, "test", e.hook(hook), rp.ID); err == nil {
		t.Fatal("a second cancel succeeded")
	}
}
