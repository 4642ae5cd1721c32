package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/signature"
	"github.com/smartmaintenance/relay/store"
)

// aheadClaim is a delivery to webhook at url as the ingester offers it
// ahead of its store write.
func aheadClaim(webhook int64, url string) *store.Claimed {
	now := time.Now()
	return &store.Claimed{ID: uuid.New(), WebhookID: webhook, EventType: "task.completed", CompanyID: 1, Body: body,
		NextAttemptAt: now, LeaseUntil: now.Add(time.Minute), CreatedAt: now, CommittedAt: now, URL: url, Secret: "s3cret",
		Format: store.FormatRaw}
}

// TestAheadSendsOnceAndRecordsWhenStored: a delivery offered ahead is sent
// at once, signed; offered again (its source transaction read again after
// a failed write) it is not sent a second time; its result waits until the
// write has stored it, and is then recorded.
func TestAheadSendsOnceAndRecordsWhenStored(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	hook := e.webhook(rc.URL, "s3cret", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-test"}))
	c := aheadClaim(hook, rc.URL)
	again := *c
	if !d.Ahead(c, 100, false) {
		t.Fatal("a delivery to an idle webhook was not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 1 }, func() string { return "the delivery was not sent ahead" })
	if !d.Ahead(&again, 100, false) {
		t.Fatal("a delivery taken ahead already was refused when offered again")
	}
	release()
	time.Sleep(100 * time.Millisecond)
	if n := rc.count(); n != 1 {
		t.Fatalf("receiver got %d requests, want 1: a delivery offered twice was sent twice", n)
	}
	got := rc.receipts(c.ID)
	if err := signature.Verify([]byte("s3cret"), got[0].body, got[0].header.Get("X-SMTM-Signature")); err != nil {
		t.Fatalf("signature: %v", err)
	}

	// The write stores it, leased to this dispatcher, as store.Batch.Ahead does.
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', 100, 0, 'task.completed', 1, 'tasks', 'update', now(), $3::bytea) RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
		SELECT $1, ev.id, $2, 1, 'task.completed', 'ahead-test', now() + interval '1 minute' FROM ev`, c.ID, hook, body)
	time.Sleep(100 * time.Millisecond)
	if s := e.get(c.ID).Status; s != store.StatusPending {
		t.Fatalf("status %s before the dispatcher learnt that the delivery is stored, want pending", s)
	}
	d.Stored(event.LSN(101))
	dl := e.waitStatus(c.ID, store.StatusDelivered, 5*time.Second)
	if dl.Attempts != 1 || len(e.attempts(c.ID)) != 1 {
		t.Fatalf("%d attempts, %d attempt rows; want 1 and 1", dl.Attempts, len(e.attempts(c.ID)))
	}
}

// TestAheadQueuesForABusyWebhook: a delivery offered ahead to a webhook
// whose slots are all taken waits in memory for the next free slot, as a
// claimed one would, and is sent then; the dispatcher holds it (Finished:
// kept) until its write. Past the webhook's window it is left to the store.
func TestAheadQueuesForABusyWebhook(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	defer release()
	hook := e.webhook(rc.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-busy", PerWebhook: 1}))
	first := aheadClaim(hook, rc.URL)
	if !d.Ahead(first, 100, false) {
		t.Fatal("first delivery not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 1 }, func() string { return "the first delivery was not sent" })
	var queued []*store.Claimed
	for lsn := event.LSN(101); ; lsn++ {
		c := aheadClaim(hook, rc.URL)
		if !d.Ahead(c, lsn, false) {
			break
		}
		queued = append(queued, c)
		if len(queued) > 1000 {
			t.Fatal("deliveries queued ahead without bound")
		}
	}
	// The window is PerWebhook × prefetch while the webhook's pace is not known.
	if want := 1*prefetch - 1; len(queued) != want {
		t.Fatalf("%d deliveries queued ahead, want %d (the window less the one in flight)", len(queued), want)
	}
	if !d.HoldOff().IsZero() {
		// Its own slot is busy: the webhook holds its deliveries up, and
		// they are refused at once, for the store, so that a receiver
		// slower than its traffic holds up no one else.
		t.Fatal("Ahead waited for room for a webhook whose own slots were busy")
	}
	if _, done, kept := d.Finished(queued[0].ID); done || !kept {
		t.Fatalf("a queued delivery: done %v, kept %v; want held, not done", done, kept)
	}
	time.Sleep(100 * time.Millisecond)
	if n := rc.count(); n != 1 {
		t.Fatalf("receiver got %d requests with the only slot taken, want 1", n)
	}
	release()
	eventually(t, 10*time.Second, func() bool { return rc.count() == 1+len(queued) }, func() string {
		return "the queued deliveries were not all sent once the slot freed"
	})
	for _, c := range queued {
		if n := len(rc.receipts(c.ID)); n != 1 {
			t.Fatalf("delivery %s received %d times, want once", c.ID, n)
		}
	}
	eventually(t, 5*time.Second, func() bool {
		_, done, _ := d.Finished(queued[len(queued)-1].ID)
		return done
	}, func() string { return "no result for the last queued delivery" })
}

// TestAheadQueuedTooLongIsLeftToTheWrite: a delivery queued ahead that
// waited longer than its lease allows is not sent; the dispatcher lets it
// go (Finished: not kept), so that its write stores it for any sender to
// claim rather than leased to this one.
func TestAheadQueuedTooLongIsLeftToTheWrite(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	defer release()
	hook := e.webhook(rc.URL, "", nil)
	// The shortest lease leaves no time for an attempt to wait in a queue.
	o := fast(Options{Owner: "ahead-stale", PerWebhook: 1})
	o.Lease = o.Timeout + 5*time.Second
	d, _ := e.startAfterFirstRound(o)
	if !d.Ahead(aheadClaim(hook, rc.URL), 100, false) {
		t.Fatal("first delivery not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 1 }, func() string { return "the first delivery was not sent" })
	late := aheadClaim(hook, rc.URL)
	if !d.Ahead(late, 101, false) {
		t.Fatal("second delivery not queued ahead")
	}
	time.Sleep(10 * time.Millisecond)
	release()
	eventually(t, 5*time.Second, func() bool {
		_, _, kept := d.Finished(late.ID)
		return !kept
	}, func() string { return "a delivery queued for longer than its lease allows is still held" })
	time.Sleep(100 * time.Millisecond)
	if n := len(rc.receipts(late.ID)); n != 0 {
		t.Fatalf("a delivery queued for longer than its lease allows was sent %d times", n)
	}
}

// TestAheadResultGoesWithTheWrite: the result of a delivery taken ahead
// whose attempt is over is handed to the store write (Finished), which
// stores the delivery as the attempt left it; once stored, the dispatcher
// does not record it a second time.
func TestAheadResultGoesWithTheWrite(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	hook := e.webhook(rc.URL, "", nil)
	logs := &logBuffer{}
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-fold", Logger: slog.New(slog.NewTextHandler(logs, nil))}))
	c := aheadClaim(hook, rc.URL)
	if _, done, kept := d.Finished(c.ID); done || kept {
		t.Fatal("a result for a delivery never taken")
	}
	if !d.Ahead(c, 100, false) {
		t.Fatal("not taken ahead")
	}
	var r store.AttemptResult
	eventually(t, 5*time.Second, func() bool {
		var done bool
		r, done, _ = d.Finished(c.ID)
		return done
	}, func() string { return "no result for the delivery taken ahead" })
	if r.DeliveryID != c.ID || r.Attempt != 1 || r.Status != store.StatusDelivered || r.StatusCode != 200 {
		t.Fatalf("result %+v", r)
	}
	// The write stores it delivered, with its attempt, as store.Ahead.Result does.
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', 100, 0, 'task.completed', 1, 'tasks', 'update', now(), $3::bytea) RETURNING id),
		d AS (INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, status, attempts, finished_at)
			SELECT $1, ev.id, $2, 1, 'task.completed', 'delivered', 1, now() FROM ev)
		INSERT INTO {{schema}}.attempt_rows (delivery_id, webhook_id, attempt, started_at, duration_ms, status_code, sent_by)
		VALUES ($1, $2, 1, now(), 1, 200, 'ahead-fold')`, c.ID, hook, body)
	d.Stored(event.LSN(101))
	time.Sleep(200 * time.Millisecond)
	if n := len(e.attempts(c.ID)); n != 1 {
		t.Fatalf("%d attempt rows, want 1", n)
	}
	if strings.Contains(logs.String(), "lease was lost") {
		t.Fatalf("the result was recorded again once stored:\n%s", logs.String())
	}
	if _, done, kept := d.Finished(c.ID); done || kept {
		t.Fatal("a result still offered once its delivery is stored")
	}
}

// TestAheadResultRecordedAfterStop: a relay that stops stores what its
// feed read last after its dispatcher has drained; the results of the
// attempts it sent ahead are still recorded once stored, so that the
// history keeps every attempt.
func TestAheadResultRecordedAfterStop(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	hook := e.webhook(rc.URL, "", nil)
	d, stop := e.startAfterFirstRound(fast(Options{Owner: "ahead-stop"}))
	c := aheadClaim(hook, rc.URL)
	if !d.Ahead(c, 100, false) {
		t.Fatal("not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 1 }, func() string { return "not sent" })
	if err, _ := stop(); err != nil {
		t.Fatal(err)
	}
	// The feed's last write stores it leased, its result not yet known to it.
	e.storeAhead(c.ID, hook, 100, "ahead-stop")
	d.Stored(event.LSN(101))
	dl := e.get(c.ID)
	if dl.Status != store.StatusRetrying || dl.Attempts != 1 || len(e.attempts(c.ID)) != 1 {
		t.Fatalf("after the stop: status %s, %d attempts, %d attempt rows; want retrying, 1, 1", dl.Status, dl.Attempts, len(e.attempts(c.ID)))
	}
}

// TestAwaitAhead: a store write waits for the attempts of the deliveries
// it stores that went ahead (AwaitAhead), so that it stores them with
// their results; but not for an attempt that has run for slowAttempt, nor
// for one queued behind a webhook whose pace is not known to be quick: a
// hanging receiver does not hold its write, and the writes behind it, up.
func TestAwaitAhead(t *testing.T) {
	e := newEnv(t)
	fastRC := newReceiver(t, nil)
	quick := e.webhook(fastRC.URL, "", nil)
	slowRC, release := heldReceiver(t)
	defer release()
	slow := e.webhook(slowRC.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-await", PerWebhook: 1}))
	ctx := context.Background()
	never := make(chan struct{})

	c := aheadClaim(quick, fastRC.URL)
	if !d.Ahead(c, 100, false) {
		t.Fatal("not taken ahead")
	}
	d.AwaitAhead(ctx, []uuid.UUID{c.ID}, never)
	if _, done, _ := d.Finished(c.ID); !done {
		t.Fatal("AwaitAhead returned before the attempt of a quick receiver was over")
	}

	hanging, queued := aheadClaim(slow, slowRC.URL), aheadClaim(slow, slowRC.URL)
	if !d.Ahead(hanging, 101, false) || !d.Ahead(queued, 102, false) {
		t.Fatal("not taken ahead")
	}
	start := time.Now()
	d.AwaitAhead(ctx, []uuid.UUID{hanging.ID, queued.ID}, never)
	if took := time.Since(start); took < slowAttempt-10*time.Millisecond || took > slowAttempt+time.Second {
		t.Fatalf("AwaitAhead on a hanging attempt and one queued behind it took %v, want about %v", took, slowAttempt)
	}

	// A hurried wait ends at once.
	hurry := make(chan struct{})
	close(hurry)
	other := e.webhook(slowRC.URL, "", nil)
	more := aheadClaim(other, slowRC.URL)
	if !d.Ahead(more, 103, false) {
		t.Fatal("not taken ahead")
	}
	start = time.Now()
	d.AwaitAhead(ctx, []uuid.UUID{more.ID}, hurry)
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Fatalf("a hurried AwaitAhead took %v", took)
	}
}

// TestAheadLetGoAtStopIsGivenBackOnceStored: a delivery queued ahead when
// the dispatcher stops is let go; when a store write already in flight
// (which took it as ahead, before the stop) stores it leased to this
// sender after the stop, it is given back once that write is known to be
// stored, not left leased until its lease expires.
func TestAheadLetGoAtStopIsGivenBackOnceStored(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	defer release()
	hook := e.webhook(rc.URL, "", nil)
	d, stop := e.startAfterFirstRound(fast(Options{Owner: "ahead-letgo", PerWebhook: 1}))
	busy, queued := aheadClaim(hook, rc.URL), aheadClaim(hook, rc.URL)
	if !d.Ahead(busy, 100, false) || !d.Ahead(queued, 101, false) {
		t.Fatal("not taken ahead")
	}
	// The write in flight took it as ahead, without a result.
	if _, done, kept := d.Finished(queued.ID); !kept || done {
		t.Fatalf("queued delivery: kept %v, done %v; want kept, not done", kept, done)
	}
	if err, _ := stop(); err != nil {
		t.Fatal(err)
	}
	// A write after the stop leaves it to be decided as any other.
	if _, _, kept := d.Finished(queued.ID); kept {
		t.Fatal("a delivery let go at the stop is still taken ahead for the next write")
	}
	// The write in flight commits: it stored the delivery leased.
	e.storeAhead(queued.ID, hook, 101, "ahead-letgo")
	d.Stored(event.LSN(102))
	if dl := e.get(queued.ID); dl.LeaseOwner != "" || dl.Attempts != 0 {
		t.Fatalf("after the write: leased to %q, %d attempts; want given back, never attempted", dl.LeaseOwner, dl.Attempts)
	}
}

// storeAhead stores delivery id of webhook hook with its event, committed
// at lsn, as a store write does: leased to owner for a minute, or not
// leased when owner is empty.
func (e *env) storeAhead(id uuid.UUID, hook int64, lsn int64, owner string) {
	e.exec(`WITH ev AS (
			INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
			VALUES ('test', $4, 0, 'task.completed', 1, 'tasks', 'update', now(), $3::bytea) RETURNING id)
		INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
		SELECT $1, ev.id, $2, 1, 'task.completed', NULLIF($5, ''), CASE WHEN $5 <> '' THEN now() + interval '1 minute' END FROM ev`,
		id, hook, body, lsn, owner)
}

// letGoWhileRunning takes two deliveries ahead for one webhook with one
// slot and a lease too short for the second to wait in the queue, and
// returns once the dispatcher has let the second (late, of the source
// transaction committed at 101) go. The receiver answers the first in 50
// ms, every later request in 500 ms.
func letGoWhileRunning(t *testing.T, owner string) (e *env, d *Dispatcher, rc *receiver, hook int64, late *store.Claimed) {
	t.Helper()
	e = newEnv(t)
	rc = newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		time.Sleep(map[bool]time.Duration{true: 50 * time.Millisecond, false: 500 * time.Millisecond}[n == 1])
	})
	hook = e.webhook(rc.URL, "", nil)
	// The shortest lease leaves no time for an attempt to wait in a queue.
	o := fast(Options{Owner: owner, PerWebhook: 1})
	o.Lease = o.Timeout + 5*time.Second
	d, _ = e.startAfterFirstRound(o)
	late = aheadClaim(hook, rc.URL)
	if !d.Ahead(aheadClaim(hook, rc.URL), 100, false) || !d.Ahead(late, 101, false) {
		t.Fatal("not taken ahead")
	}
	eventually(t, 5*time.Second, func() bool {
		_, _, kept := d.Finished(late.ID)
		return !kept
	}, func() string { return "the queued delivery was not let go" })
	return e, d, rc, hook, late
}

// deliveredOnce waits for delivery id to be delivered and fails t unless
// it was attempted and received once.
func deliveredOnce(t *testing.T, e *env, rc *receiver, id uuid.UUID) {
	t.Helper()
	dl := e.waitStatus(id, store.StatusDelivered, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if dl.Attempts != 1 || len(rc.receipts(id)) != 1 {
		t.Fatalf("delivered after %d attempts, %d receipts; want 1, 1", dl.Attempts, len(rc.receipts(id)))
	}
}

// TestAheadLetGoThenLeasedIsNotGivenBack: a delivery let go while running
// (it waited in its queue too long) that the next write decides as any
// other and leases to this dispatcher is its own again: the write being
// stored does not give it back while its attempt runs.
func TestAheadLetGoThenLeasedIsNotGivenBack(t *testing.T) {
	e, d, rc, hook, late := letGoWhileRunning(t, "ahead-again")
	// The write decides it as any other and leases it to this dispatcher.
	e.storeAhead(late.ID, hook, 101, "ahead-again")
	d.Committed(1, store.Leased{Ready: []store.Claimed{*late}, At: time.Now()})
	d.Stored(event.LSN(102))
	deliveredOnce(t, e, rc, late.ID)
}

// TestAheadLetGoThenClaimedIsNotGivenBack: the same for one that the next
// write decides as any other without leasing it, and that a claim takes:
// the write being known stored after the claim does not give it back.
func TestAheadLetGoThenClaimedIsNotGivenBack(t *testing.T) {
	e, d, rc, hook, late := letGoWhileRunning(t, "ahead-claimed")
	// The write stores it unleased, due; a claim takes it.
	e.storeAhead(late.ID, hook, 101, "")
	d.Committed(1, store.Leased{})
	eventually(t, 5*time.Second, func() bool { return len(rc.receipts(late.ID)) == 1 }, func() string { return "not claimed and sent" })
	d.Stored(event.LSN(102))
	deliveredOnce(t, e, rc, late.ID)
}

// slowWebhooks is two webhooks whose receivers answer 200 after took.
func (e *env) slowWebhooks(took time.Duration) (hooks [2]int64, rcs [2]*receiver) {
	for i := range hooks {
		rcs[i] = newReceiver(e.t, func(w http.ResponseWriter, r *http.Request, _ int) {
			time.Sleep(took)
			w.WriteHeader(http.StatusOK)
		})
		hooks[i] = e.webhook(rcs[i].URL, "", nil)
	}
	return hooks, rcs
}

// TestAheadWaitsForWorkers: when a webhook's deliveries queue because the
// relay as a whole has no free worker, not because of the webhook, Ahead
// waits for room in the webhook's window instead of refusing, which holds
// the feed back: nearly every delivery is taken ahead and sent once,
// rather than left to be stored and read back.
func TestAheadWaitsForWorkers(t *testing.T) {
	e := newEnv(t)
	hooks, rcs := e.slowWebhooks(2 * time.Millisecond)
	// Two workers for two webhooks of two slots each: each webhook has a
	// slot of its own free while the relay has no worker free.
	reader := sdkmetric.NewManualReader()
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-workers", Workers: 2, PerWebhook: 2,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}))
	const n = 300 // more than a window (PerWebhook × prefetch) of each
	var refused int
	var taken [2]int
	for i := range n {
		for j, hook := range hooks {
			if !d.Ahead(aheadClaim(hook, rcs[j].URL), event.LSN(100+i), false) {
				refused++
				continue
			}
			taken[j]++
		}
	}
	// While the feed waits for one webhook, the other's queue drains and
	// the freed workers go to the one waited for, which can then have both
	// in flight, its own slots all busy: for it, the relay does not wait,
	// and some of its deliveries are refused (about one in ten). Without
	// the waits, about four in five are.
	if refused > 2*n/4 {
		t.Fatalf("%d of %d deliveries refused ahead while the relay was short of workers; want nearly every one taken", refused, 2*n)
	}
	eventually(t, 20*time.Second, func() bool { return rcs[0].count() == taken[0] && rcs[1].count() == taken[1] }, func() string {
		return fmt.Sprintf("receivers got %d and %d requests, want %d and %d", rcs[0].count(), rcs[1].count(), taken[0], taken[1])
	})
	if off := d.HoldOff(); !off.IsZero() {
		t.Fatalf("a wait for room gave up (until %v); the webhooks finished attempts all along", off)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var heldBack float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[float64]); ok && m.Name == "relay.feed.held_back" {
				for _, p := range sum.DataPoints {
					heldBack += p.Value
				}
			}
		}
	}
	if heldBack <= 0 {
		t.Fatalf("relay.feed.held_back = %v after waits for room; want the time waited", heldBack)
	}
}

// TestAheadWaitsForAHangingWebhookOnlySoLong: Ahead does not wait for
// room for a source transaction committed too long ago, and waits at most
// holdPatience for a webhook that finishes no attempt, then waits for none
// for as long. (TestAheadQueuesForABusyWebhook: none for a webhook whose
// own slots are busy.)
func TestAheadWaitsForAHangingWebhookOnlySoLong(t *testing.T) {
	e := newEnv(t)
	rc, release := heldReceiver(t)
	defer release()
	busy, hook := e.webhook(rc.URL, "", nil), e.webhook(rc.URL, "", nil)
	// Two workers, busy with an attempt to hook and one to another webhook
	// that hang: one of hook's own slots is free, none of the relay's
	// workers is, and none frees.
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-hang", Workers: 2, PerWebhook: 2}))
	for i, h := range []int64{hook, busy} {
		if !d.Ahead(aheadClaim(h, rc.URL), event.LSN(10+i), false) {
			t.Fatal("delivery not taken ahead with workers free")
		}
	}
	eventually(t, 5*time.Second, func() bool { return rc.active() == 2 }, func() string { return "the first two attempts did not start" })
	offer := func(lsn event.LSN, committed time.Time) (bool, time.Duration) {
		c := aheadClaim(hook, rc.URL)
		c.CommittedAt = committed
		t0 := time.Now()
		ok := d.Ahead(c, lsn, false)
		return ok, time.Since(t0)
	}
	lsn := event.LSN(100)
	for ; ; lsn++ {
		ok, took := offer(lsn, time.Now().Add(-2*holdBehind))
		if !ok {
			// Committed too long ago: refused at once, not waited for.
			if took >= holdPatience {
				t.Fatalf("refusing a delivery committed %v ago took %v; want no wait", 2*holdBehind, took)
			}
			break
		}
		if lsn > 1000 {
			t.Fatal("deliveries queued ahead without bound")
		}
	}
	if !d.HoldOff().IsZero() {
		t.Fatal("a wait for room began for a delivery committed too long ago")
	}
	ok, took := offer(lsn+1, time.Now())
	if ok {
		t.Fatal("a delivery taken ahead into a full window whose attempts hang")
	}
	if took < holdPatience || took > 10*holdPatience {
		t.Fatalf("refused after %v; want a wait of holdPatience (%v) for an attempt to finish", took, holdPatience)
	}
	if d.HoldOff().IsZero() {
		t.Fatal("no pause of the waits after one found no attempt finished")
	}
	if ok, took := offer(lsn+2, time.Now()); ok || took >= holdPatience {
		t.Fatalf("the next delivery: taken %v after %v; want refused without a wait", ok, took)
	}
}

// TestAheadHoldsBeforeTheWindowIsFull: while the relay has no free worker,
// Ahead holds the feed back once a webhook's oldest queued delivery waited
// holdQueued, well before its window is full, so that what it takes is
// sent within about that long rather than seconds later, after its write
// had to store it without its result.
func TestAheadHoldsBeforeTheWindowIsFull(t *testing.T) {
	e := newEnv(t)
	hooks, rcs := e.slowWebhooks(20 * time.Millisecond)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-early", Workers: 2, PerWebhook: 2}))
	// Offered at 200 a second to each webhook, which take 50.
	const n = 100
	most := 0
	for i := range n {
		time.Sleep(5 * time.Millisecond)
		for j, hook := range hooks {
			if !d.Ahead(aheadClaim(hook, rcs[j].URL), event.LSN(100+i), false) {
				t.Fatalf("delivery %d refused ahead while the webhooks' own slots were free", i)
			}
			most = max(most, d.QueuedFor(hook))
		}
	}
	// 20 ms an attempt, one worker each: 100 ms is about five queued.
	if window := 2 * prefetch; most >= window/2 {
		t.Fatalf("a webhook's queue reached %d deliveries; want the feed held back long before its window (%d) is full", most, window)
	}
	eventually(t, 20*time.Second, func() bool { return rcs[0].count() == n && rcs[1].count() == n }, func() string {
		return fmt.Sprintf("receivers got %d and %d requests, want %d each", rcs[0].count(), rcs[1].count(), n)
	})
}

// TestAheadPartStored: the results of deliveries taken ahead for a part of
// a source transaction stored in parts are recorded once that part is
// stored (PartStored), without waiting for the transaction's commit; a
// delivery of the same transaction that no part stored yet keeps its
// result until one does.
func TestAheadPartStored(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	hook := e.webhook(rc.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-part"}))
	first, second := aheadClaim(hook, rc.URL), aheadClaim(hook, rc.URL)
	for _, c := range []*store.Claimed{first, second} {
		if !d.Ahead(c, 100, true) {
			t.Fatal("a delivery of a transaction in parts was not taken ahead by an idle webhook")
		}
	}
	eventually(t, 5*time.Second, func() bool { return rc.count() == 2 }, func() string { return "the deliveries were not sent ahead" })
	// Their part stored both, leased to this dispatcher, before the
	// attempts were over.
	for i, c := range []*store.Claimed{first, second} {
		e.exec(`WITH ev AS (
				INSERT INTO {{schema}}.events (source, commit_lsn, seq, event_type, company_id, source_table, op, committed_at, body)
				VALUES ('test', 100, $4, 'task.completed', 1, 'tasks', 'update', now(), $3::bytea) RETURNING id)
			INSERT INTO {{schema}}.deliveries (id, event_id, webhook_id, company_id, event_type, lease_owner, lease_until)
			SELECT $1, ev.id, $2, 1, 'task.completed', 'ahead-part', now() + interval '1 minute' FROM ev`, c.ID, hook, body, i)
	}
	d.PartStored([]uuid.UUID{first.ID})
	dl := e.waitStatus(first.ID, store.StatusDelivered, 5*time.Second)
	if dl.Attempts != 1 || len(e.attempts(first.ID)) != 1 {
		t.Fatalf("%d attempts, %d attempt rows; want 1 and 1", dl.Attempts, len(e.attempts(first.ID)))
	}
	time.Sleep(100 * time.Millisecond)
	if s := e.get(second.ID).Status; s != store.StatusPending {
		t.Fatalf("a delivery no part was said to store is %s, want pending until one is", s)
	}
	if _, done, kept := d.Finished(second.ID); !done || !kept {
		t.Fatalf("the other delivery: done %v, kept %v; want its result held for the write", done, kept)
	}
	if _, _, kept := d.Finished(first.ID); kept {
		t.Fatal("a delivery still held ahead once its part is stored")
	}
}

// TestAheadWaitsForABusyWebhookInParts: for a source transaction stored in
// parts, which takes the feed up until its commit anyway, Ahead waits for
// room for a webhook whose only slot is busy while its attempts are quick,
// so that every delivery goes ahead and none is stored to be read back
// (TestAheadQueuesForABusyWebhook: a transaction read whole refuses them);
// for one whose attempts take longer than quickAttempt it refuses them
// once the window is full, as for any transaction.
func TestAheadWaitsForABusyWebhookInParts(t *testing.T) {
	e := newEnv(t)
	respond := func(took time.Duration) func(http.ResponseWriter, *http.Request, int) {
		return func(w http.ResponseWriter, _ *http.Request, _ int) {
			time.Sleep(took)
			w.WriteHeader(http.StatusOK)
		}
	}
	quick, slow := newReceiver(t, respond(time.Millisecond)), newReceiver(t, respond(3*quickAttempt))
	quickHook, slowHook := e.webhook(quick.URL, "", nil), e.webhook(slow.URL, "", nil)
	d, _ := e.startAfterFirstRound(fast(Options{Owner: "ahead-parts", PerWebhook: 1}))
	const n = 3 * prefetch // three windows of a webhook of one slot
	for i := range n {
		if !d.Ahead(aheadClaim(quickHook, quick.URL), 100, true) {
			t.Fatalf("delivery %d of a transaction in parts refused by a quick webhook whose slot was busy", i)
		}
	}
	eventually(t, 10*time.Second, func() bool { return quick.count() == n }, func() string {
		return fmt.Sprintf("the quick receiver got %d requests, want %d", quick.count(), n)
	})
	if !d.HoldOff().IsZero() {
		t.Fatal("a wait for room gave up while the webhook finished attempts all along")
	}
	taken := 0
	for ; taken < n; taken++ {
		if !d.Ahead(aheadClaim(slowHook, slow.URL), 200, true) {
			break
		}
	}
	if taken == n {
		t.Fatalf("%d deliveries taken ahead for a webhook slower than quickAttempt with its slot busy; want those past its window refused", n)
	}
}
