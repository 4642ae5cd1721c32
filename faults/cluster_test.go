package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/internal/pgtest"
)

// TestSeveralRelays runs two and three relay processes on one database.
// Exactly one streams the slot; when it is SIGKILLed another takes over
// within 10 seconds; all of them send deliveries from the shared store; no
// attempt of a delivery is sent while another attempt of it is in progress.
func TestSeveralRelays(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d_relays", n), func(t *testing.T) { severalRelays(t, n) })
	}
}

func severalRelays(t *testing.T, n int) {
	e := newEnv(t)
	r := newReceiver(t)
	// Until the first kill the receiver is slow enough that the leader
	// alone cannot keep up, so the stand-bys must send too.
	r.slowFor.Store(int64(50 * time.Millisecond))
	cfg := config(t, e.url, []string{r.url("/slow"), r.url("/a")}, "")
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = startRelay(t, "run", "--config", cfg)
	}
	e.waitStreaming()
	leader := func() int {
		for i, p := range procs {
			if !p.exited() && strings.Contains(p.output(), "streaming changes") {
				return i
			}
		}
		return -1
	}
	waitFor(t, "a leader", 10*time.Second, func() bool { return leader() >= 0 })
	if streaming := e.scalar(`SELECT count(*) FROM pg_stat_replication WHERE application_name = 'smtm-relay'`); streaming != 1 {
		t.Fatalf("%d relays stream the slot", streaming)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &load{e: e}
	total := int64(size(6000, 1500))
	loaded := make(chan struct{})
	go func() { l.run(ctx, total, 10); close(loaded) }()

	// Kill the streaming relay twice; each time another must take over.
	var worst time.Duration
	var peak float64
	var firstKill time.Time
	for k := 0; k < 2; k++ {
		time.Sleep(1500 * time.Millisecond)
		i := leader()
		oldPID := e.scalar(`SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = 'smtm_relay'`)
		killed := time.Now()
		procs[i].kill()
		if k == 0 {
			firstKill = killed
			r.slowFor.Store(int64(5 * time.Millisecond))
		}
		peak = max(peak, procs[i].peakMB())
		waitFor(t, "another relay to stream the slot", 15*time.Second, func() bool {
			return e.scalar(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'smtm_relay' AND active AND active_pid != $1`, oldPID) == 1
		})
		took := time.Since(killed)
		worst = max(worst, took)
		if took > 10*time.Second {
			t.Errorf("takeover took %s", took)
		}
		// The killed relay comes back as a stand-by.
		procs[i] = startRelay(t, "run", "--config", cfg)
	}
	<-loaded
	got := checkDelivered(t, e, r, 2, 3*time.Minute)
	cancel()
	// Every attempt names the process that made it: before the first kill,
	// the leader and every stand-by must have sent.
	senders := e.scalar(`SELECT count(DISTINCT sent_by) FROM relay.attempts WHERE started_at < $1`, firstKill)
	if senders < int64(n) {
		t.Errorf("%d of %d relay processes sent attempts before the first kill; all should send", senders, n)
	}
	for _, p := range procs {
		peak = max(peak, p.peakMB())
	}
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: peak, takeover: worst,
		extra: fmt.Sprintf("relays=%d leader_kills=2 senders_before_kill=%d concurrent_same_id=%d", n, senders, got.overlaps)}.log(t)
}

// TestFrozenLeader: the streaming relay freezes (SIGSTOP, as a process
// swapped out or a host cut off the network would) without closing its
// connections. The stand-by takes the slot over within the leader timeout
// and a little more, not when TCP or wal_sender_timeout give up on the
// frozen one; every event is delivered; thawed, the frozen relay finds it
// lost the slot's lock and stops streaming.
func TestFrozenLeader(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	cfg := config(t, e.url, []string{r.url("/a"), r.url("/b")}, "")
	procs := []*proc{startRelay(t, "run", "--config", cfg), startRelay(t, "run", "--config", cfg)}
	e.waitStreaming()
	leader := -1
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for i, p := range procs {
			if strings.Contains(p.output(), "streaming changes") {
				leader = i
			}
		}
		return leader >= 0
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &load{e: e}
	loaded := make(chan struct{})
	go func() { l.run(ctx, int64(size(3000, 1000)), 10); close(loaded) }()

	time.Sleep(1500 * time.Millisecond)
	frozenPID := e.scalar(`SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = 'smtm_relay'`)
	frozen := procs[leader]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = frozen.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer thaw()
	stopped := time.Now()
	waitFor(t, "the stand-by to stream the slot", 45*time.Second, func() bool {
		return e.scalar(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'smtm_relay' AND active AND active_pid != $1`, frozenPID) == 1
	})
	took := time.Since(stopped)
	if took > 20*time.Second {
		t.Errorf("takeover from a frozen leader took %s", took)
	}
	standby := procs[1-leader]
	if !strings.Contains(standby.output(), "took over the slot from a relay that stopped answering") {
		t.Errorf("the stand-by does not say it ended the frozen relay's replication connection:\n%s", tail(standby.output(), 3000))
	}
	time.Sleep(2 * time.Second)
	thaw()
	waitFor(t, "the thawed relay to say it lost the lock", 20*time.Second, func() bool {
		return strings.Contains(frozen.output(), "lost the slot's lock")
	})
	<-loaded
	got := checkDelivered(t, e, r, 2, 3*time.Minute)
	cancel()
	if n := e.scalar(`SELECT count(*) FROM pg_stat_replication WHERE application_name = 'smtm-relay'`); n != 1 {
		t.Errorf("%d relays stream the slot after the thaw; want 1", n)
	}
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: max(frozen.peakMB(), standby.peakMB()), takeover: took,
		extra: fmt.Sprintf("concurrent_same_id=%d", got.overlaps)}.log(t)
}

// TestGracefulStop: SIGTERM while many attempts are in flight to a slow
// receiver. The relay exits 0 within the drain deadline, leaves no claim
// behind, and a restarted relay delivers everything.
func TestGracefulStop(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	r.slowFor.Store(int64(400 * time.Millisecond))
	cfg := config(t, e.url, []string{r.url("/slow")}, "")
	p := startRelay(t, "run", "--config", cfg)
	e.waitStreaming()
	l := &load{e: e}
	l.run(context.Background(), int64(size(1000, 300)), 10)
	waitFor(t, "attempts in flight", 30*time.Second, func() bool {
		return e.scalar(`SELECT count(*) FROM relay.deliveries WHERE lease_owner IS NOT NULL`) > 0
	})
	inFlight := e.scalar(`SELECT count(*) FROM relay.deliveries WHERE lease_owner IS NOT NULL`)
	code, took := p.stop(20 * time.Second)
	if code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	// drain_timeout is 3s in the suite's config.
	if took > 3*time.Second+2*time.Second {
		t.Errorf("the relay took %s to stop; drain_timeout is 3s", took)
	}
	if held := e.scalar(`SELECT count(*) FROM relay.deliveries WHERE lease_owner IS NOT NULL`); held != 0 {
		t.Errorf("%d deliveries still claimed by the stopped relay", held)
	}
	delivered := e.scalar(`SELECT count(*) FROM relay.deliveries WHERE status = 'delivered'`)
	p2 := startRelay(t, "run", "--config", cfg)
	r.slowFor.Store(0)
	got := checkDelivered(t, e, r, 1, 2*time.Minute)
	figures{changes: l.changes.Load(), expected: e.expected(), delivered: int64(got.events), dupIDs: int64(got.multiIDs),
		repeats: int64(got.repeats), peakMB: max(p.peakMB(), p2.peakMB()),
		extra: fmt.Sprintf("in_flight_at_sigterm=%d stop_took=%s delivered_before_stop=%d", inFlight, took.Round(time.Millisecond), delivered)}.log(t)
}

// TestBadInput: each problem gives one clear line and the documented exit
// code.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	shared := pgtest.Shared(t)
	e := newEnv(t)
	r := newReceiver(t)
	hook := []string{r.url("/a")}

	noLogical, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{"wal_level = replica", "max_wal_senders = 10"}})
	if err != nil {
		t.Fatal(err)
	}
	defer noLogical.Stop()

	// A server that asks for passwords over TCP (except from the superuser).
	hbaDir, err := os.MkdirTemp("", "relay-hba-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(hbaDir)
	os.Chmod(hbaDir, 0o755)
	hba := filepath.Join(hbaDir, "pg_hba.conf")
	os.WriteFile(hba, []byte("local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"), 0o644)
	pw, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{fmt.Sprintf("hba_file = '%s'", hba)}})
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Stop()
	if err := pw.Exec(ctx, "postgres", `CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right-password'`); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`DO $$ BEGIN CREATE ROLE fault_norepl LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`DO $$ BEGIN CREATE ROLE fault_nopub LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
	} {
		if err := shared.Exec(ctx, "postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	db := e.url[strings.LastIndex(e.url, "/")+1 : strings.Index(e.url, "?")]
	e.exec(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO fault_nopub`)
	e.exec(`GRANT CREATE ON DATABASE ` + db + ` TO fault_nopub`)
	as := func(role string) string { return strings.Replace(e.url, "postgres@", role+"@", 1) }

	badYAML := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badYAML, []byte("delivery:\n  timeout: [oops\n"), 0o600)
	unknownKey := filepath.Join(t.TempDir(), "unknown.yaml")
	os.WriteFile(unknownKey, []byte("delivery:\n  workerz: 3\n"), 0o600)

	cases := []struct {
		name string
		cfg  string
		code int
		want string
	}{
		{"malformed YAML", badYAML, 2, "bad.yaml"},
		{"unknown key", unknownKey, 2, `delivery.workerz: unknown key`},
		{"unreachable database", config(t, "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", hook, ""), 3, "connect"},
		{"wrong password", config(t, fmt.Sprintf("postgres://pwuser:wrong@127.0.0.1:%d/postgres?sslmode=disable", pw.Port()), hook, ""), 3, "password authentication failed"},
		{"wal_level not logical", config(t, noLogical.URL("postgres"), hook, ""), 3, "wal_level = logical"},
		{"role without REPLICATION", config(t, as("fault_norepl"), hook, ""), 3, "ALTER ROLE"},
		{"role cannot create the publication", config(t, as("fault_nopub"), hook, ""), 3, "CREATE PUBLICATION"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runRelay(t, 60*time.Second, "run", "--config", tc.cfg)
			last := lastLine(out)
			if code != tc.code || !strings.Contains(last, tc.want) {
				t.Fatalf("exit %d, want %d; last line does not say %q:\n%s", code, tc.code, tc.want, out)
			}
			if strings.Count(last, "relay run:") != 1 {
				t.Errorf("not one error line: %s", last)
			}
			t.Logf("exit %d: %s", code, last)
		})
	}

	t.Run("watched table missing", func(t *testing.T) {
		e := newEnv(t, "DROP TABLE activity_log_exports")
		r := newReceiver(t)
		cfg := config(t, e.url, []string{r.url("/a")}, "")
		p := startRelay(t, "run", "--config", cfg)
		e.waitStreaming()
		e.exec(`INSERT INTO users (company_id, email, full_name) VALUES (1, 'm@x.example', 'M')`)
		waitFor(t, "an event of an existing table", 30*time.Second, func() bool { return r.tally().events == 1 })
		out := p.output()
		if !strings.Contains(out, "event types not offered by this database") || !strings.Contains(out, "audit.exported") {
			t.Fatalf("the log does not say audit.exported is not offered:\n%s", out)
		}
		if !strings.Contains(out, "webhook subscribes to an event type this database does not offer") {
			t.Fatalf("no warning for the webhook subscribing to audit.exported:\n%s", out)
		}
		code, events := runRelay(t, 30*time.Second, "events", "--config", cfg)
		if code != 0 || !strings.Contains(events, "audit.exported") {
			t.Fatalf("relay events: exit %d\n%s", code, events)
		}
		t.Logf("runs without activity_log_exports; relay events says:\n%s", events)
	})

	t.Run("receiver URL does not resolve", func(t *testing.T) {
		e := newEnv(t)
		cfg := config(t, e.url, []string{"http://relay-fault-suite.invalid/hook"}, "")
		p := startRelay(t, "run", "--config", cfg)
		e.waitStreaming()
		e.exec(`INSERT INTO users (company_id, email, full_name) VALUES (1, 'dns@x.example', 'D')`)
		var msg string
		waitFor(t, "a failed attempt", 30*time.Second, func() bool {
			return e.pool.QueryRow(ctx, `SELECT error FROM relay.attempts WHERE error IS NOT NULL LIMIT 1`).Scan(&msg) == nil
		})
		if !strings.Contains(msg, "dns") || !strings.Contains(msg, "relay-fault-suite.invalid") || strings.Contains(msg, "\n") {
			t.Fatalf("attempt error %q does not name the DNS failure on one line", msg)
		}
		if p.exited() {
			t.Fatalf("the relay exited: %s", p.output())
		}
		t.Logf("attempt recorded: %s", msg)
	})
}
