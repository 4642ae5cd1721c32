package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/store"
)

// TestReceiverOutage: one endpoint answers 503 for longer than the whole
// (compressed) retry schedule. Its attempts follow the schedule, its
// deliveries end failed, the other endpoint is unaffected; re-fired from the
// store afterwards, they keep their delivery ids and succeed.
func TestReceiverOutage(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	r.down.Store(true)
	cfg := config(t, e.url, []string{r.url("/a"), r.url("/down")}, "")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()
	l := &load{e: e}
	n := int64(size(500, 100))
	l.run(context.Background(), n, 5)
	events := e.expected()
	schedule := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}

	waitFor(t, "the down endpoint's deliveries to fail", 2*time.Minute, func() bool {
		return e.scalar(`SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook1' AND d.status = 'failed'`) == events
	})
	if bad := e.scalar(`SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook1' AND d.attempts != $1`, len(schedule)+1); bad != 0 {
		t.Fatalf("%d failed deliveries did not make 1 + %d attempts", bad, len(schedule))
	}
	// The gap before each retry is at least its delay in the schedule.
	for i, delay := range schedule {
		var short int64
		err := e.pool.QueryRow(context.Background(), `
			SELECT count(*) FROM relay.attempts a JOIN relay.attempts b ON b.delivery_id = a.delivery_id AND b.attempt = a.attempt + 1
			WHERE a.attempt = $1 AND b.started_at - (a.started_at + a.duration_ms * interval '1 millisecond') < $2::interval`,
			i+1, fmt.Sprintf("%d milliseconds", delay.Milliseconds()-5)).Scan(&short)
		if err != nil {
			t.Fatal(err)
		}
		if short != 0 {
			t.Errorf("%d retries number %d came sooner than %s after the failure", short, i+1, delay)
		}
	}
	// The healthy endpoint got everything meanwhile.
	if got := e.scalar(`SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook0' AND d.status = 'delivered'`); got != events {
		t.Fatalf("the healthy endpoint got %d of %d events during the outage", got, events)
	}
	r.mu.Lock()
	idsDuringOutage := map[string]bool{}
	for id := range r.tried {
		idsDuringOutage[id] = true
	}
	r.mu.Unlock()

	// The endpoint comes back; an operator re-fires the failed deliveries.
	r.down.Store(false)
	st, err := store.Open(context.Background(), e.url, "relay")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := e.pool.Query(context.Background(), `SELECT d.id FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook1' AND d.status = 'failed'`)
	if err != nil {
		t.Fatal(err)
	}
	var failed []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		failed = append(failed, id)
	}
	rows.Close()
	for _, id := range failed {
		if err := st.Refire(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	got := checkDelivered(t, e, r, 2, time.Minute)
	r.mu.Lock()
	for _, id := range failed {
		if !idsDuringOutage[id.String()] {
			t.Errorf("re-fired delivery %s arrived under an id the outage attempts did not carry", id)
		}
	}
	r.mu.Unlock()
	if stillFailed := e.scalar(`SELECT count(*) FROM relay.deliveries WHERE status != 'delivered'`); stillFailed != 0 {
		t.Fatalf("%d deliveries not delivered after the re-fire", stillFailed)
	}
	figures{changes: l.changes.Load(), expected: events, delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: p.peakMB(), extra: fmt.Sprintf("failed_then_refired=%d", len(failed))}.log(t)
}

// TestHangingReceiver: one endpoint never answers. Its attempts time out
// after delivery.timeout; the other endpoint's deliveries keep their normal
// latency.
func TestHangingReceiver(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a"), r.url("/hang")}, "")
	// A short timeout and the default share of workers per webhook.
	cfg = rewrite(t, cfg, "timeout: 5s", "timeout: 1s")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()

	// Load for a while, so that hung attempts pile up meanwhile.
	l := &load{e: e}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(size(20, 6))*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		_ = l.tx(ctx, int(l.seq.Load()%6), 5)
		time.Sleep(10 * time.Millisecond)
	}
	events := e.expected()
	waitFor(t, "the healthy endpoint's deliveries", time.Minute, func() bool {
		return e.scalar(`SELECT count(*) FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook0' AND d.status = 'delivered'`) == events
	})
	var p50, p99, maxMS float64
	err := e.pool.QueryRow(context.Background(), `
		SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		FROM (SELECT extract(epoch FROM d.finished_at - d.created_at) * 1000 AS ms
		      FROM relay.deliveries d JOIN relay.webhooks w ON w.id = d.webhook_id WHERE w.name = 'hook0') x`).Scan(&p50, &p99, &maxMS)
	if err != nil {
		t.Fatal(err)
	}
	var timeouts int64
	waitFor(t, "attempts to the hanging endpoint recorded as timeouts", 30*time.Second, func() bool {
		timeouts = e.scalar(`SELECT count(*) FROM relay.attempts a JOIN relay.webhooks w ON w.id = a.webhook_id WHERE w.name = 'hook1' AND a.error LIKE 'timeout%'`)
		return timeouts > 0
	})
	// Normal latency is a few poll intervals; one hung attempt lasts 1 s.
	if p99 > 1000 {
		t.Errorf("healthy endpoint latency p99 %.0f ms: it waits behind the hanging endpoint", p99)
	}
	figures{changes: l.changes.Load(), expected: events, delivered: events, peakMB: p.peakMB(),
		extra: fmt.Sprintf("healthy_latency_ms_p50=%.0f p99=%.0f max=%.0f hung_timeouts=%d", p50, p99, maxMS, timeouts)}.log(t)
}

// TestHugeTransaction: one transaction updates many rows. Every event is
// delivered and the relay's memory stays bounded.
func TestHugeTransaction(t *testing.T) {
	rows := size(100000, 10000)
	e, r, _, p := bulkRelay(t, rows, "/a")
	start := time.Now()
	changed := e.bulkUpdate()
	got := checkDelivered(t, e, r, 1, 10*time.Minute)
	took := time.Since(start)
	peak := p.peakMB()
	figures{changes: changed, expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: peak, extra: fmt.Sprintf("rows_in_one_tx=%d end_to_end=%s", rows, took.Round(time.Second))}.log(t)
	if peak > 512 {
		t.Errorf("peak RSS %.0f MB for one transaction of %d rows: memory is not bounded", peak, rows)
	}
}

// TestKillWhileHolding: the relay is killed while it holds thousands of a
// large transaction's deliveries as ids (leased when they were stored, not
// read yet). Nothing is lost and nothing is sent twice under two ids: the
// restarted relay sends them once their leases expire (twice
// delivery.timeout plus 10 s).
func TestKillWhileHolding(t *testing.T) {
	rows := size(20000, 5000)
	e, r, cfg, p := bulkRelay(t, rows, "/slow")
	// 16 slots at 20 ms an answer: 800 a second. Once the relay knows that
	// pace it holds what the webhook takes in 5 s (half the time a lease
	// leaves for waiting with this timeout), about 4,000; the parts
	// stored before it knows are held whole.
	r.slowFor.Store(int64(20 * time.Millisecond))
	changed := e.bulkUpdate()
	var held int64
	waitFor(t, "sending to begin with an eighth of the deliveries or more held", 2*time.Minute, func() bool {
		held = e.scalar(`SELECT count(*) FROM relay.deliveries WHERE lease_owner IS NOT NULL AND attempts = 0`)
		return r.tally().events > 100 && held > int64(rows)/8
	})
	p.kill()
	peak := p.peakMB()
	r.slowFor.Store(0)
	p = startRelay(t, "run", "--config", cfg)
	got := checkDelivered(t, e, r, 1, 3*time.Minute)
	figures{changes: changed, expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: max(peak, p.peakMB()), extra: fmt.Sprintf("rows_in_one_tx=%d leased_unsent_at_kill=%d", rows, held)}.log(t)
}

// TestKillWhileStoringInParts: the relay is killed while it stores a large
// transaction in parts: some parts are committed, the transaction's row
// state and position are not. The restarted relay streams the transaction
// again and stores only what the parts did not: every event is delivered,
// each under one delivery id.
func TestKillWhileStoringInParts(t *testing.T) {
	rows := size(100000, 20000)
	e, r, cfg, p := bulkRelay(t, rows, "/a")
	changed := e.bulkUpdate()
	var stored int64
	waitFor(t, "the first parts to be stored", 2*time.Minute, func() bool {
		stored = e.scalar(`SELECT coalesce(max(changes), 0) FROM relay.parts`)
		return stored > 0
	})
	p.kill()
	peak := p.peakMB()
	if e.scalar(`SELECT count(*) FROM relay.parts`) == 0 {
		t.Fatal("the transaction was stored whole before the kill; nothing was left to replay")
	}
	p = startRelay(t, "run", "--config", cfg)
	got := checkDelivered(t, e, r, 1, 3*time.Minute)
	if left := e.scalar(`SELECT count(*) FROM relay.parts`); left != 0 {
		t.Errorf("%d parts left after the transaction was stored", left)
	}
	figures{changes: changed, expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: max(peak, p.peakMB()), extra: fmt.Sprintf("rows_in_one_tx=%d changes_in_parts_at_kill=%d", rows, stored)}.log(t)
}

// bulkRelay starts a relay streaming a fresh database that holds rows bulk
// tasks (bulkTasks) to one webhook at path of a new receiver, and returns
// them with the relay's config file, to start it again with.
func bulkRelay(t *testing.T, rows int, path string) (e *env, r *receiver, cfg string, p *proc) {
	t.Helper()
	e = newEnv(t, bulkTasks(rows))
	r = newReceiver(t)
	cfg = config(t, e.url, []string{r.url(path)}, "")
	p = startRelay(t, "run", "--config", cfg)
	e.waitStreaming()
	return e, r, cfg, p
}

// bulkTasks is a script that creates rows tasks for bulkUpdate.
func bulkTasks(rows int) string {
	return fmt.Sprintf(`INSERT INTO tasks (company_id, asset_id, title, technician_id) SELECT 1, 1, 'bulk ' || g, 3 FROM generate_series(1, %d) g`, rows)
}

// bulkUpdate reassigns every bulk task in one transaction, recording the
// events it must produce (one task.assigned each), and returns how many
// rows it changed.
func (e *env) bulkUpdate() int64 {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	tag, err := tx.Exec(ctx, `UPDATE tasks SET technician_id = 2, title = 'bulk upd ' || id WHERE title LIKE 'bulk %'`)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO fault_ledger (events) VALUES ($1)`, tag.RowsAffected()); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
	return tag.RowsAffected()
}
