package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// burst: one transaction updates every task; each update is one
// task.completed event for one webhook. Time runs from the commit to the
// last receipt.
func (b *run) burst(ctx context.Context) (Result, error) {
	n := b.scale(100_000, 5_000)
	db, pool, err := b.setup(ctx, fmt.Sprintf(`INSERT INTO tasks (company_id, title) SELECT 1, 'seed' FROM generate_series(1, %d)`, n))
	if err != nil {
		return Result{}, err
	}
	rp, err := b.startRelay(ctx, db, pool, []webhook{{b.recv.url + "/ok/0", []string{"task.completed"}}}, "")
	defer func() { b.teardown(db, pool, rp) }()
	if err != nil {
		return Result{}, err
	}
	if _, err := b.recv.stats(true, false); err != nil {
		return Result{}, err
	}
	cpu := b.cpuMeter(ctx, pool, rp)
	// The relay's recorded position passes the WAL position read just
	// before the commit exactly when it has stored the transaction.
	var before int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE tasks SET status = 'completed', title = $1`, nanos()); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint`).Scan(&before)
	})
	if err != nil {
		return Result{}, err
	}
	committed := time.Now()
	stored := make(chan time.Duration, 1)
	go func() { stored <- waitPosition(ctx, rp.state, before, committed) }()
	st, err := b.waitReceived(ctx, n, 15*time.Minute)
	if err != nil {
		return Result{}, err
	}
	r := Result{Events: n, Deliveries: n, Seconds: st.LastAt.Sub(committed).Seconds(),
		Note: fmt.Sprintf("all deliveries stored %v after the commit; latency percentiles include the UPDATE itself (title is set when it starts)",
			(<-stored).Round(time.Millisecond))}
	fill(&r, st, rp, cpu.fill(ctx, &r), ctx, pool)
	return r, nil
}

// steady: single-row transactions at a fixed rate; commit-to-receipt latency.
func (b *run) steady(ctx context.Context) (Result, error) {
	return b.paced(ctx, 1000, time.Duration(b.scale(60, 5))*time.Second, healthy(b.recv.url, 1), "", 0)
}

// fanout: one company with 50 webhooks on the same event type.
func (b *run) fanout(ctx context.Context) (Result, error) {
	return b.paced(ctx, 200, time.Duration(b.scale(60, 5))*time.Second, healthy(b.recv.url, 50), "", 0)
}

// pause: the fan-out load for half as long, with the relay stopped
// (SIGSTOP) for Options.Stall (a second by default) at a third and at two
// thirds of it, as a stall of the machine would stop it: how fast it
// catches up. It makes the recovery from a stall, which decides the paced
// scenarios' tails on a machine that stalls, measurable on one that does
// not; Result.Recovery says, for each stall, the p99 in each second after
// the resume and when it was back under 50 ms for good.
func (b *run) pause(ctx context.Context) (Result, error) {
	return b.paced(ctx, 200, time.Duration(b.scale(30, 4))*time.Second, healthy(b.recv.url, 50), "", b.opts.Stall)
}

// isolation: ten healthy webhooks, then the same with one that never answers.
func (b *run) isolation(ctx context.Context) (Result, error) {
	d := time.Duration(b.scale(30, 4)) * time.Second
	base, err := b.paced(ctx, 100, d, healthy(b.recv.url, 10), "", 0)
	if err != nil {
		return Result{}, err
	}
	hooks := append(healthy(b.recv.url, 10), webhook{b.recv.url + "/hang", []string{"repair_request.created"}})
	r, err := b.paced(ctx, 100, d, hooks, "delivery:\n  timeout: 30s\n", 0)
	if err != nil {
		return Result{}, err
	}
	r.Note = fmt.Sprintf("healthy endpoints' p99 %.1f ms with one hanging endpoint, %.1f ms without (%+.0f%%); with it: %s; without: %s; %s",
		r.P99ms, base.P99ms, 100*(r.P99ms-base.P99ms)/max(base.P99ms, 0.001), r.Note, base.Note, base.Disk)
	r.BaselineP99ms = base.P99ms
	return r, nil
}

func healthy(url string, n int) []webhook {
	out := make([]webhook, n)
	for i, p := range paths(n) {
		out[i] = webhook{url + p, []string{"repair_request.created"}}
	}
	return out
}

// paced inserts repair requests as single-row transactions at rate per
// second for d, and waits for every delivery to the healthy webhooks. A
// positive stop stops the relay for that long at a third and at two thirds
// of d.
func (b *run) paced(ctx context.Context, rate int, d time.Duration, hooks []webhook, extra string, stop time.Duration) (Result, error) {
	db, pool, err := b.setup(ctx, "")
	if err != nil {
		return Result{}, err
	}
	rp, err := b.startRelay(ctx, db, pool, hooks, extra)
	defer func() { b.teardown(db, pool, rp) }()
	if err != nil {
		return Result{}, err
	}
	if _, err := b.recv.stats(true, false); err != nil {
		return Result{}, err
	}
	n := int(float64(rate) * d.Seconds())
	ok := 0
	for _, h := range hooks {
		if !isHangURL(h.url) {
			ok++
		}
	}
	cpu := b.cpuMeter(ctx, pool, rp)
	start := time.Now()
	stopCtx, cancelStops := context.WithCancel(ctx)
	type stops struct {
		stalls []stall
		err    error
	}
	stopped := make(chan stops, 1)
	go func() {
		stalls, err := rp.stopTwice(stopCtx, start, d, stop)
		stopped <- stops{stalls, err}
	}()
	err = pace(ctx, pool, rate, n)
	if err != nil {
		cancelStops() // the relay is let go on before it is torn down
	}
	loadEnd := time.Now()
	ss := <-stopped
	cancelStops()
	if err != nil {
		return Result{}, err
	}
	if ss.err != nil {
		return Result{}, ss.err
	}
	loaded := time.Since(start)
	stored := waitStored(ctx, rp.state, n, start)
	st, err := b.waitReceived(ctx, n*ok, 10*time.Minute)
	if err != nil {
		return Result{}, err
	}
	r := Result{Events: n, Deliveries: n * ok, Seconds: st.LastAt.Sub(start).Seconds()}
	fill(&r, st, rp, cpu.fill(ctx, &r), ctx, pool)
	r.Note = fmt.Sprintf("load took %v (%.0f tx/s); all deliveries stored %v after the start; %s",
		loaded.Round(time.Millisecond), float64(n)/loaded.Seconds(), stored.Round(time.Millisecond), stages(ctx, rp.state))
	if rp.metrics != "" {
		r.Note += "; " + readDelay(ctx, rp.metrics)
	}
	if behind := st.LastAt.Sub(start) - d; behind > time.Second {
		r.Note += fmt.Sprintf("; the last receipt came %v after the load's end", behind.Round(time.Millisecond))
	}
	if len(ss.stalls) > 0 {
		all, err := b.recv.samples()
		if err != nil {
			return Result{}, fmt.Errorf("the receiver's samples: %w", err)
		}
		r.Recovery = recoveries(all.Samples, ss.stalls, start, loadEnd, recoveryWindow, recoveryP99)
	}
	return r, nil
}

func isHangURL(u string) bool { return len(u) >= 5 && u[len(u)-5:] == "/hang" }

// pace runs n single-row inserts at rate per second from a few connections.
// Each row's title is the time its statement was sent, in Unix nanoseconds.
func pace(ctx context.Context, pool *pgxpool.Pool, rate, n int) error {
	const workers = 8
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				if _, err := pool.Exec(ctx, `INSERT INTO repair_requests (company_id, title) VALUES (1, $1)`, nanos()); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// backlog: the receiver is down while events accumulate, then comes back.
// Time runs from its return to the last receipt.
func (b *run) backlog(ctx context.Context) (Result, error) {
	n := b.scale(200_000, 5_000)
	addr, err := freePort()
	if err != nil {
		return Result{}, err
	}
	db, pool, err := b.setup(ctx, "")
	if err != nil {
		return Result{}, err
	}
	// A short, long-lasting retry schedule: the drain measures the relay,
	// not the guide's 625-second backoff.
	extra := "delivery:\n  retry_schedule: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n"
	rp, err := b.startRelay(ctx, db, pool, []webhook{{"http://" + addr + "/ok/0", []string{"repair_request.created"}}}, extra)
	defer func() { b.teardown(db, pool, rp) }()
	if err != nil {
		return Result{}, err
	}
	for done := 0; done < n; done += 10_000 {
		rows := min(10_000, n-done)
		if _, err := pool.Exec(ctx, `INSERT INTO repair_requests (company_id, title) SELECT 1, $1 FROM generate_series(1, $2)`, nanos(), rows); err != nil {
			return Result{}, err
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var stored int
		_ = rp.state.QueryRow(ctx, `SELECT count(*) FROM relay.deliveries`).Scan(&stored)
		if stored >= n {
			break
		}
		if time.Now().After(deadline) {
			return Result{}, fmt.Errorf("only %d of %d deliveries stored", stored, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	back, err := startReceiver(ctx, b.opts.Self, addr)
	if err != nil {
		return Result{}, err
	}
	defer back.stop()
	prev := b.recv
	b.recv = back
	defer func() { b.recv = prev }()
	cpu := b.cpuMeter(ctx, pool, rp)
	up := time.Now()
	st, err := b.waitReceived(ctx, n, 15*time.Minute)
	if err != nil {
		return Result{}, err
	}
	r := Result{Events: n, Deliveries: n, Seconds: st.LastAt.Sub(up).Seconds(),
		Note: "latency percentiles include the time the receiver was down"}
	fill(&r, st, rp, cpu.fill(ctx, &r), ctx, pool)
	return r, nil
}

// waitStored waits until the relay has stored n events (with their
// deliveries, in the same transactions) and returns the time since since.
// It polls the highest event id, an index lookup, and counts only once that
// is high enough, so polling costs the run little.
func waitStored(ctx context.Context, pool *pgxpool.Pool, n int, since time.Time) time.Duration {
	for ctx.Err() == nil {
		var top int64
		_ = pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM relay.events`).Scan(&top)
		if top >= int64(n) {
			var stored int64
			_ = pool.QueryRow(ctx, `SELECT count(*) FROM relay.events`).Scan(&stored)
			if stored >= int64(n) {
				return time.Since(since)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0
}

// waitPosition waits until the relay's recorded position passes lsn and
// returns the time since since. It reads one row: polling costs nothing
// even while a large store transaction is open (unlike reading the events
// table, whose newest index entries are then all invisible).
func waitPosition(ctx context.Context, pool *pgxpool.Pool, lsn int64, since time.Time) time.Duration {
	for ctx.Err() == nil {
		var at int64
		_ = pool.QueryRow(ctx, `SELECT coalesce(max(lsn), 0) FROM relay.checkpoints`).Scan(&at)
		if at > lsn {
			return time.Since(since)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0
}

// stages reports where the time between a source commit and the first
// attempt goes, from what the relay stored: the source commit to the start
// of the store transaction that recorded the event, and to the start of the
// first attempt.
func stages(ctx context.Context, pool *pgxpool.Pool) string {
	var s50, s99, a50, a99, d50, d99 float64
	err := pool.QueryRow(ctx, `
		SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY stored),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY stored),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY sent),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY sent),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY took),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY took)
		FROM (SELECT extract(epoch FROM e.created_at - e.committed_at) * 1000 AS stored,
		             extract(epoch FROM a.started_at - e.committed_at) * 1000 AS sent,
		             a.duration_ms AS took
		      FROM relay.events e
		      JOIN relay.deliveries d ON d.event_id = e.id
		      JOIN relay.attempts a ON a.delivery_id = d.id AND a.attempt = 1) x`).Scan(&s50, &s99, &a50, &a99, &d50, &d99)
	if err != nil {
		return "stages: " + err.Error()
	}
	return fmt.Sprintf("p50/p99 ms from the source commit: store transaction began %.1f/%.1f, first attempt began %.1f/%.1f; attempt took %.1f/%.1f",
		s50, s99, a50, a99, d50, d99)
}
