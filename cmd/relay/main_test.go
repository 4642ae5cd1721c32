package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/signature"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "relay")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build relay: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	pgtest.Main(m)
}

const secret = "binary-test-secret-0123456789"

// writeConfig writes a config file for the given database and receiver.
func writeConfig(t *testing.T, dbURL, receiverURL string, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`
database:
  url: %q
replication:
  status_interval: 200ms
delivery:
  allow_networks: [127.0.0.0/8, "::1"]
  poll_interval: 50ms
  timeout: 2s
  retry_schedule: [50ms, 100ms, 200ms, 400ms, 800ms]
  drain_timeout: 3s
webhooks:
  endpoints:
    - company_id: 1
      name: all
      url: %q
      secret: %q
      events: [task.assigned, task.completed, task.approved, task.rejected, repair_request.created,
               repair_request.updated, shutdown.reported, shutdown.resolved, user.created, user.deactivated, audit.exported]
%s`, dbURL, receiverURL, secret, extra)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is a running relay binary.
type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startRelay(t *testing.T, args ...string) *proc {
	t.Helper()
	return startRelayEnv(t, nil, args...)
}

// startRelayEnv starts the relay binary with env added to the test's
// environment.
func startRelayEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = lockedWriter{p.mu, p.out}
	p.cmd.Stderr = lockedWriter{p.mu, p.out}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("relay output:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// runRelay runs the binary to completion and returns its exit code and output.
func runRelay(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

type counter struct {
	mu  sync.Mutex
	ids map[string]int              // delivery id -> receptions
	by  map[float64]map[string]bool // export row_count -> delivery ids
	bad int
}

func newCounter(t *testing.T) (*counter, *httptest.Server) {
	c := &counter{ids: map[string]int{}, by: map[float64]map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		if signature.Verify([]byte(secret), body, r.Header.Get(signature.Header)) != nil {
			c.bad++
			w.WriteHeader(401)
			return
		}
		var p struct {
			Data struct {
				RowCount float64 `json:"row_count"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &p)
		id := r.Header.Get(signature.DeliveryHeader)
		c.ids[id]++
		if c.by[p.Data.RowCount] == nil {
			c.by[p.Data.RowCount] = map[string]bool{}
		}
		c.by[p.Data.RowCount][id] = true
	}))
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *counter) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.by)
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitStreaming(t *testing.T, pool *pgxpool.Pool) {
	waitFor(t, "slot streaming", 30*time.Second, func() bool {
		var ok bool
		// Active while seeding from the slot's snapshot too: wait for the
		// relay's ready checkpoint as well.
		_ = pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'smtm_relay' AND active)
			AND EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = 'relay' AND table_name = 'checkpoints')`).Scan(&ok)
		if ok {
			_ = pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM relay.checkpoints WHERE slot = 'smtm_relay' AND state = 'ready')`).Scan(&ok)
		}
		return ok
	})
}

// TestSIGKILLLosesNothing kills the relay with SIGKILL several times while
// the platform writes, and checks that every event arrives with exactly one
// delivery id.
func TestSIGKILLLosesNothing(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c, srv := newCounter(t)
	cfgPath := writeConfig(t, url, srv.URL, "")

	p := startRelay(t, "run", "--config", cfgPath)
	waitStreaming(t, pool)

	const n = 1500
	writes := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if _, err := pool.Exec(context.Background(), `INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, $1)`, i); err != nil {
				writes <- err
				return
			}
		}
		writes <- nil
	}()
	for kill := 0; kill < 4; kill++ {
		time.Sleep(time.Duration(150+kill*70) * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p.done <- nil // for the cleanup
		p = startRelay(t, "run", "--config", cfgPath)
	}
	if err := <-writes; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event", 60*time.Second, func() bool { return c.distinct() == n })
	time.Sleep(500 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad != 0 {
		t.Fatalf("%d requests failed signature verification", c.bad)
	}
	repeats := 0
	for rc, ids := range c.by {
		if len(ids) != 1 {
			t.Fatalf("event %v arrived under %d delivery ids", rc, len(ids))
		}
	}
	for _, times := range c.ids {
		repeats += times - 1
	}
	t.Logf("%d events, %d distinct delivery ids, %d repeated attempts of the same id", len(c.by), len(c.ids), repeats)
	var stored int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries`).Scan(&stored)
	if stored != n {
		t.Fatalf("%d deliveries stored, want %d", stored, n)
	}
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, srv := newCounter(t)
	p := startRelay(t, "run", "--config", writeConfig(t, url, srv.URL, "log:\n  format: json\n"))
	waitStreaming(t, pool)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("relay did not stop on SIGTERM")
	}
	out := p.output()
	if !strings.Contains(out, `"msg":"relay stopped"`) {
		t.Fatalf("no JSON stop line in:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Fatal("the webhook secret appears in the log")
	}
}

// TestSysmonTicking: relay run starts again in place of itself (the same
// process, one start line) with GODEBUG=schedtrace set, unless
// runtime.sysmon_ticking is off or GODEBUG sets schedtrace already, and
// its runtime line says which.
func TestSysmonTicking(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	_, srv := newCounter(t)
	cfg := writeConfig(t, url, srv.URL, "log:\n  format: json\n")
	for _, tc := range []struct {
		name    string
		env     []string
		godebug string // in the running relay's environment ("" = none)
		logged  string
	}{
		{"default", []string{"GODEBUG="}, "GODEBUG=schedtrace=2147483647", `"sysmon_ticking":true,"sysmon_ticking_from":"config"`},
		{"added to GODEBUG", []string{"GODEBUG=gctrace=0"}, "GODEBUG=gctrace=0,schedtrace=2147483647", `"sysmon_ticking":true,"sysmon_ticking_from":"config"`},
		{"off", []string{"GODEBUG=", "RELAY_RUNTIME__SYSMON_TICKING=false"}, "GODEBUG=\x00", `"sysmon_ticking":false,"sysmon_ticking_from":"config"`},
		{"GODEBUG decides", []string{"GODEBUG=schedtrace=0"}, "GODEBUG=schedtrace=0\x00", `"sysmon_ticking":false,"sysmon_ticking_from":"GODEBUG"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startRelayEnv(t, tc.env, "run", "--config", cfg)
			waitFor(t, "the runtime line", 30*time.Second, func() bool { return strings.Contains(p.output(), `"msg":"runtime"`) })
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(environ)+"\x00", tc.godebug) {
				t.Errorf("the relay's environment has no %q", tc.godebug)
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
			p.done <- nil
			out := p.output()
			if n := strings.Count(out, `"msg":"relay starting"`); n != 1 {
				t.Errorf("%d start lines, want 1:\n%s", n, out)
			}
			if !strings.Contains(out, tc.logged) {
				t.Errorf("the log does not say %s:\n%s", tc.logged, out)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	srv := pgtest.Shared(t)
	url := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	ctx := context.Background()

	noLogical, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{"wal_level = replica", "max_wal_senders = 10"}})
	if err != nil {
		t.Fatal(err)
	}
	defer noLogical.Stop()
	if err := srv.Exec(ctx, "postgres", "DO $$ BEGIN CREATE ROLE norepl LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"); err != nil {
		t.Fatal(err)
	}

	badYAML := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badYAML, []byte("delivery:\n  workerz: 3\n"), 0o600)
	unknownEvent := writeConfig(t, url, "https://example.com/x", "")
	raw, _ := os.ReadFile(unknownEvent)
	os.WriteFile(unknownEvent, bytes.Replace(raw, []byte("task.assigned,"), []byte("task.done,"), 1), 0o600)

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown key", []string{"run", "--config", badYAML}, 2, `delivery.workerz: unknown key`},
		{"missing file", []string{"run", "--config", "/nonexistent.yaml"}, 2, "nonexistent.yaml"},
		{"unknown event", []string{"check", "--config", unknownEvent}, 2, `task.done`},
		{"no command", nil, 2, "usage"},
		{"wal_level", []string{"run", "--config", writeConfig(t, noLogical.URL("postgres"), "https://example.com/x", "")}, 3, "wal_level = logical"},
		{"no replication privilege", []string{"run", "--config", writeConfig(t, strings.Replace(url, "postgres@", "norepl@", 1), "https://example.com/x", "")}, 3, "ALTER ROLE"},
		{"unreachable", []string{"run", "--config", writeConfig(t, "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", "https://example.com/x", "")}, 3, "connect"},
		{"missing database", []string{"run", "--config", writeConfig(t, srv.URL("nosuchdb"), "https://example.com/x", "")}, 3, "nosuchdb"},
		{"production http", []string{"check", "--config", writeConfig(t, url, "http://example.com/x", "production: true\n")}, 2, "HTTPS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runRelay(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output does not say %q:\n%s", code, tc.code, tc.want, out)
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; tc.code != 0 && lines > 3 && tc.args != nil {
				t.Errorf("error takes %d lines:\n%s", lines, out)
			}
		})
	}
}

func TestEventsAndCheckCommands(t *testing.T) {
	url := pgtest.NewDatabase(t, platform.Schema, "DROP TABLE activity_log_exports")
	cfg := writeConfig(t, url, "https://example.com/x", "")
	code, out := runRelay(t, "events", "--config", cfg)
	if code != 0 {
		t.Fatalf("events: exit %d\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "audit.exported" && f[1] != "no" {
			t.Fatalf("audit.exported offered without its table:\n%s", out)
		}
		if len(f) >= 2 && f[0] == "task.completed" && f[1] != "yes" {
			t.Fatalf("task.completed not offered:\n%s", out)
		}
	}
	code, out = runRelay(t, "events", "--config", cfg, "--json")
	// The names of the admin API's GET /v1/events, and lists, never null.
	var cat struct {
		Events      []string          `json:"events"`
		Unavailable map[string]string `json:"unavailable"`
		Problems    []string          `json:"problems"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &cat) != nil || len(cat.Events) != 10 || cat.Unavailable["audit.exported"] == "" ||
		cat.Problems == nil || strings.Contains(out, "Available") {
		t.Fatalf("events --json: exit %d, %d available\n%s", code, len(cat.Events), out)
	}
	code, out = runRelay(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
}
