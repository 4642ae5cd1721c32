package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

func slotLSNs(t *testing.T, e *env) (confirmed, current, retained int64) {
	t.Helper()
	confirmed, current, retained, _ = slotPositions(t, e)
	return
}

// slotPositions reads the slot's confirmed position, the server's WAL end,
// the WAL the slot retains and its restart position, in bytes.
func slotPositions(t *testing.T, e *env) (confirmed, current, retained, restart int64) {
	t.Helper()
	err := e.pool.QueryRow(context.Background(), `
		SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, pg_wal_lsn_diff(restart_lsn, '0/0')::bigint
		FROM pg_replication_slots WHERE slot_name = 'smtm_relay'`).Scan(&confirmed, &current, &retained, &restart)
	if err != nil {
		t.Fatal(err)
	}
	return
}

// TestWALSafety: the published tables stay quiet while an unpublished table
// takes heavy writes. The slot's confirmed position keeps advancing and the
// WAL it retains stays bounded; the retained figure is in the log.
func TestWALSafety(t *testing.T) {
	e := newPrivateEnv(t, pgtest.Options{})
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a")}, "")
	cfg = rewrite(t, cfg, "replication:\n", "replication:\n  wal_check_interval: 1s\n  retained_wal_warn: 64MB\n")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()

	// Sustained writes, about 1 MB of WAL per statement, into a table no
	// rule watches.
	d := time.Duration(size(60, 12)) * time.Second
	startConfirmed, startWAL, _ := slotLSNs(t, e)
	var peakRetained, peakLag int64
	advances, restarts := 0, 0
	last := startConfirmed
	_, _, _, lastRestart := slotPositions(t, e)
	began := time.Now()
	for time.Since(began) < d {
		e.exec(`INSERT INTO fault_noise (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 1000) g`)
		c, cur, ret, rs := slotPositions(t, e)
		if c > last {
			advances++
			last = c
		}
		if rs > lastRestart {
			restarts++
			lastRestart = rs
		}
		peakRetained = max(peakRetained, ret)
		peakLag = max(peakLag, cur-c)
		time.Sleep(20 * time.Millisecond)
	}
	_, endWAL, _ := slotLSNs(t, e)
	written := endWAL - startWAL
	waitFor(t, "the slot to confirm past the unpublished writes", 30*time.Second, func() bool {
		c, _, _ := slotLSNs(t, e)
		return c >= endWAL
	})
	var finalRetained int64
	waitFor(t, "the retained WAL to shrink", 60*time.Second, func() bool {
		_, _, finalRetained = slotLSNs(t, e)
		return finalRetained < 64<<20
	})
	// The confirmed position follows the writes about every second.
	if want := int(d / (3 * time.Second)); advances < want {
		t.Errorf("the confirmed position advanced %d times in %s of writes, want at least %d", advances, d, want)
	}
	if peakLag > written/2 {
		t.Errorf("the confirmed position lagged %d MB behind at worst, of %d MB written", peakLag>>20, written>>20)
	}
	// The retained WAL is counted from restart_lsn, which the server moves
	// past confirmed positions only at its running-transactions records
	// (every 15 s and at checkpoints): over a long run it must move while
	// the writes go on, so the retained WAL does not grow without bound.
	if *full && restarts < 2 {
		t.Errorf("restart_lsn moved %d times in %s of writes; the retained WAL only grows", restarts, d)
	}
	out := p.output()
	if !strings.Contains(out, "retained_wal_bytes=") {
		t.Errorf("the log does not show the retained WAL")
	}
	if got := r.tally().events; got != 0 {
		t.Errorf("%d events from an unpublished table", got)
	}
	figures{peakMB: p.peakMB(), extra: fmt.Sprintf("unpublished_wal_mb=%d over=%s confirmed_advances=%d restart_lsn_advances=%d peak_confirmed_lag_mb=%.1f peak_retained_mb=%.1f final_retained_mb=%.1f warned=%v",
		written>>20, d, advances, restarts, float64(peakLag)/(1<<20), float64(peakRetained)/(1<<20), float64(finalRetained)/(1<<20), strings.Contains(out, "retains much WAL"))}.log(t)
}

// TestLostSlot: a slot dropped or invalidated while the relay was stopped
// gives a clear error and exit code 3, never a silent restart from "now".
func TestLostSlot(t *testing.T) {
	t.Run("dropped", func(t *testing.T) {
		e := newEnv(t)
		r := newReceiver(t)
		cfg := config(t, e.url, []string{r.url("/a")}, "")
		p := startRelay(t, "run", "--config", cfg)
		e.waitStreaming()
		if code, _ := p.stop(20 * time.Second); code != 0 {
			t.Fatalf("exit %d on SIGTERM", code)
		}
		// The server ends the relay's walsender just after the relay exits.
		waitFor(t, "the slot to be released", 10*time.Second, func() bool {
			return e.scalar(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'smtm_relay' AND active`) == 0
		})
		e.exec(`SELECT pg_drop_replication_slot('smtm_relay')`)
		code, out := runRelay(t, 60*time.Second, "run", "--config", cfg)
		if code != 3 || !strings.Contains(out, "Recovering a lost slot") || !strings.Contains(out, "does not exist") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		t.Logf("dropped slot: exit %d: %s", code, lastLine(out))
		if code, out := runRelay(t, time.Minute, "slot", "forward", "--config", cfg, "--yes"); code != 1 || !strings.Contains(out, "does not exist: nothing to forward to") {
			t.Fatalf("relay slot forward without a slot: exit %d:\n%s", code, out)
		}
	})
	t.Run("invalidated", func(t *testing.T) {
		e := newPrivateEnv(t, pgtest.Options{Settings: []string{"max_slot_wal_keep_size = 1MB", "max_wal_size = 64MB", "min_wal_size = 32MB"}})
		r := newReceiver(t)
		cfg := config(t, e.url, []string{r.url("/a")}, "")
		p := startRelay(t, "run", "--config", cfg)
		e.waitStreaming()
		if code, _ := p.stop(20 * time.Second); code != 0 {
			t.Fatalf("exit %d on SIGTERM", code)
		}
		// With the relay stopped, more WAL than max_slot_wal_keep_size.
		var status string
		for i := 0; i < 20 && status != "lost"; i++ {
			e.exec(`INSERT INTO fault_noise (pad) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4000) g`)
			e.exec(`SELECT pg_switch_wal()`)
			e.exec(`CHECKPOINT`)
			if err := e.pool.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'smtm_relay'`).Scan(&status); err != nil && err != pgx.ErrNoRows {
				t.Fatal(err)
			}
		}
		if status != "lost" {
			t.Skipf("could not provoke an invalidated slot (wal_status %q)", status)
		}
		code, out := runRelay(t, 60*time.Second, "run", "--config", cfg)
		if code != 3 || !strings.Contains(out, "Recovering a lost slot") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		t.Logf("invalidated slot: exit %d: %s", code, lastLine(out))
		// Nothing can be read from it: forwarding to it is refused.
		if code, out := runRelay(t, time.Minute, "slot", "forward", "--config", cfg, "--yes"); code != 1 || !strings.Contains(out, "was invalidated") || !strings.Contains(out, "relay slot drop") {
			t.Fatalf("relay slot forward on an invalidated slot: exit %d:\n%s", code, out)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestRestoredStateDatabase: a state database restored from a backup older
// than the slot's confirmed position makes the relay stop with exit code 3
// rather than skip the changes in between without a word. relay slot
// forward accepts that gap (the changes in it were delivered before the
// loss), and the relay then delivers every change committed after the
// slot's position, those made while it was stopped among them.
func TestRestoredStateDatabase(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	srv := pgtest.Shared(t)
	state, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backup := state + "_backup"
	t.Cleanup(func() {
		for _, db := range []string{state, backup} {
			if err := srv.DropDatabase(context.Background(), db); err != nil {
				t.Logf("drop %s: %v", db, err)
			}
		}
	})
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a")}, "")
	rewrite(t, cfg, fmt.Sprintf("url: %q", e.url), fmt.Sprintf("url: %q\n  state_url: %q", e.url, srv.URL(state)))
	n := int64(size(2000, 300))
	l := &load{e: e}
	delivered := func(what string) {
		t.Helper()
		want := int(e.expected())
		waitFor(t, fmt.Sprintf("%d deliveries %s", want, what), 2*time.Minute, func() bool { return r.tally().events >= want })
	}
	stop := func(p *proc) {
		t.Helper()
		if code, _ := p.stop(20 * time.Second); code != 0 {
			t.Fatalf("exit %d on SIGTERM", code)
		}
		waitFor(t, "the slot to be released", 10*time.Second, func() bool {
			return e.scalar(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'smtm_relay' AND active`) == 0
		})
	}

	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()
	l.run(ctx, n, 10)
	delivered("before the backup")
	beforeBackup := r.tally().events
	stop(p)
	if err := srv.Exec(ctx, "postgres", "CREATE DATABASE "+backup+" TEMPLATE "+state); err != nil {
		t.Fatal(err)
	}

	p = startRelay(t, "run", "--config", cfg)
	e.waitStreaming()
	l.run(ctx, 2*n, 10)
	delivered("after the backup")
	afterBackup := r.tally().events - beforeBackup
	stop(p)
	if err := srv.DropDatabase(ctx, state); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "postgres", "CREATE DATABASE "+state+" TEMPLATE "+backup); err != nil {
		t.Fatal(err)
	}
	// While no relay runs: new rows only. The relay's record of the rows
	// changed between the backup and the restore is the backup's, so the
	// first change of such a row after the restore may be compared with
	// its state before the gap (the README says so); new rows have none.
	for i := 0; l.changes.Load() < 3*n; i++ {
		if err := l.tx(ctx, []int{0, 1, 3, 4}[i%4], 1+i%10); err != nil {
			t.Fatal(err)
		}
	}

	code, out := runRelay(t, time.Minute, "run", "--config", cfg)
	if code != 3 || !strings.Contains(out, "replication slot was confirmed past the relay's position") || !strings.Contains(out, "relay slot forward") {
		t.Fatalf("relay run on a restored state database: exit %d:\n%s", code, out)
	}
	t.Logf("restored state database: exit %d: %s", code, lastLine(out))
	if code, out := runRelay(t, time.Minute, "check", "--config", cfg); code != 3 || !strings.Contains(out, "confirmed past the relay's position") {
		t.Fatalf("relay check on a restored state database: exit %d:\n%s", code, out)
	}
	if code, out := runRelay(t, time.Minute, "slot", "forward", "--config", cfg); code != 2 || !strings.Contains(out, "--yes") {
		t.Fatalf("relay slot forward without --yes: exit %d:\n%s", code, out)
	}
	code, out = runRelay(t, time.Minute, "slot", "forward", "--config", cfg, "--yes")
	if code != 0 || !strings.Contains(out, "moved the relay's position of slot smtm_relay from ") {
		t.Fatalf("relay slot forward --yes: exit %d:\n%s", code, out)
	}

	p = startRelay(t, "run", "--config", cfg)
	delivered("after the restore")
	time.Sleep(300 * time.Millisecond)
	got := r.tally()
	if want := int(e.expected()); got.events != want || got.multiIDs != 0 || got.badSig != 0 {
		t.Errorf("receiver got %d events (%d under more than one id, %d bad signatures), want %d, each under one id", got.events, got.multiIDs, got.badSig, want)
	}
	// Nothing was sent twice: not the events between the backup and the
	// restore, whose records the restore lost, nor any other.
	if got.repeats != 0 {
		t.Errorf("%d receptions repeated a delivery id", got.repeats)
	}
	peak := p.peakMB()
	stop(p)
	if code, out := runRelay(t, time.Minute, "slot", "forward", "--config", cfg, "--yes"); code != 1 || !strings.Contains(out, "nothing to forward") {
		t.Errorf("relay slot forward --yes with nothing to forward: exit %d:\n%s", code, out)
	}
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs), repeats: int64(got.repeats),
		peakMB: peak, extra: fmt.Sprintf("delivered_between_backup_and_restore=%d", afterBackup)}.log(t)
}
