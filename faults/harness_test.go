package faults

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/demo"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/signature"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "relay")
	// No -race: the figures (peak RSS, throughput) are those of the binary
	// operators run.
	if out, err := exec.Command("go", "build", "-o", binary, "../cmd/relay").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build relay: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	pgtest.Main(m)
}

// full selects the full sizes (`make faults`). Without it, or with -short,
// the suite runs its smaller loads, which fit in the normal test run.
var full = flag.Bool("full", false, "run the fault scenarios at full size")

// size picks the full or the short figure.
func size(fullSize, short int) int {
	if *full && !testing.Short() {
		return fullSize
	}
	return short
}

const secret = "fault-suite-secret-0123456789"

// ledgerSQL adds, to the platform database, an unpublished table in which
// every load transaction records how many events it must produce. It is
// written in the same transaction as the changes, so it is exact even when
// a commit's outcome was unknown to the writer (a database restart).
const ledgerSQL = `CREATE TABLE fault_ledger (id bigserial PRIMARY KEY, events int NOT NULL);
CREATE TABLE fault_noise (id bigserial PRIMARY KEY, pad text);`

// receiver is a real HTTP server standing for the webhooks' endpoints.
// Paths: /a and /b answer 200; /down answers 503 while down is set;
// /hang never answers; /slow answers 200 after slowFor.
type receiver struct {
	srv *httptest.Server

	down    atomic.Bool
	slowFor atomic.Int64 // nanoseconds

	mu       sync.Mutex
	ids      map[string]int             // delivery id -> receptions
	byEvent  map[string]map[string]bool // path + body hash -> delivery ids
	inflight map[string]int             // delivery id -> requests in progress
	overlaps int                        // a delivery id received while it was in progress
	badSig   int
	seen     map[string]time.Time // delivery id -> first reception
	tried    map[string]int       // delivery id -> requests, whatever the answer
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ids: map[string]int{}, byEvent: map[string]map[string]bool{}, inflight: map[string]int{}, seen: map[string]time.Time{}, tried: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.srv.CloseClientConnections()
		r.srv.Close()
	})
	return r
}

func (r *receiver) url(path string) string { return r.srv.URL + path }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get(signature.DeliveryHeader)
	if req.URL.Path == "/hang" {
		<-req.Context().Done()
		return
	}
	r.mu.Lock()
	if signature.Verify([]byte(secret), body, req.Header.Get(signature.Header)) != nil {
		r.badSig++
	}
	r.tried[id]++
	r.inflight[id]++
	if r.inflight[id] > 1 {
		r.overlaps++
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight[id]--
		r.mu.Unlock()
	}()
	switch req.URL.Path {
	case "/down":
		if r.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	case "/slow":
		time.Sleep(time.Duration(r.slowFor.Load()))
	}
	sum := sha256.Sum256(body)
	key := req.URL.Path + "/" + string(sum[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[id]++
	if _, ok := r.seen[id]; !ok {
		r.seen[id] = time.Now()
	}
	if r.byEvent[key] == nil {
		r.byEvent[key] = map[string]bool{}
	}
	r.byEvent[key][id] = true
}

// tally is what the receiver got.
type tally struct {
	events     int // distinct (endpoint, event) received
	ids        int // distinct delivery ids
	repeats    int // receptions beyond the first of an id
	multiIDs   int // (endpoint, event) pairs that came under more than one id
	overlaps   int // an id received while an attempt of it was in progress
	badSig     int
	receptions int
}

func (r *receiver) tally() tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := tally{events: len(r.byEvent), ids: len(r.ids), overlaps: r.overlaps, badSig: r.badSig}
	for _, n := range r.ids {
		t.repeats += n - 1
		t.receptions += n
	}
	for _, ids := range r.byEvent {
		if len(ids) != 1 {
			t.multiIDs++
		}
	}
	return t
}

// env is one platform database with the reference schema, the sample
// companies and the ledger.
type env struct {
	t    *testing.T
	url  string
	pool *pgxpool.Pool
	srv  *pgtest.Server // a private server, or nil for the shared one
}

// newEnv uses a database on the shared server.
func newEnv(t *testing.T, scripts ...string) *env {
	url := pgtest.NewDatabase(t, append([]string{platform.Schema, platform.Sample, ledgerSQL}, scripts...)...)
	return openEnv(t, url, nil)
}

// newPrivateEnv starts a server of its own (which the test may restart).
func newPrivateEnv(t *testing.T, opts pgtest.Options, scripts ...string) *env {
	ctx := context.Background()
	srv, err := pgtest.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	name, err := srv.CreateDatabase(ctx, append([]string{platform.Schema, platform.Sample, ledgerSQL}, scripts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return openEnv(t, srv.URL(name), srv)
}

func openEnv(t *testing.T, url string, srv *pgtest.Server) *env {
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &env{t: t, url: url, pool: pool, srv: srv}
}

func (e *env) scalar(sql string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// expected is the number of events the load's committed transactions must
// produce.
func (e *env) expected() int64 {
	return e.scalar("SELECT coalesce(sum(events), 0) FROM fault_ledger")
}

func (e *env) waitStreaming() {
	e.t.Helper()
	// Streamed from a recorded starting point: the slot is active already
	// while it is being created.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := demo.WaitForSlot(ctx, e.pool, "smtm_relay"); err != nil {
		e.t.Fatalf("waiting for the slot to be streamed: %v", err)
	}
}

// config writes a relay config whose webhooks (company 1, every event type)
// point at the given URLs.
func config(t *testing.T, dbURL string, urls []string, extra string) string {
	t.Helper()
	var hooks strings.Builder
	for i, u := range urls {
		fmt.Fprintf(&hooks, `
    - company_id: 1
      name: hook%d
      url: %q
      secret: %q
      events: [task.assigned, task.completed, task.approved, task.rejected, repair_request.created,
               repair_request.updated, shutdown.reported, shutdown.resolved, user.created, user.deactivated, audit.exported]`, i, u, secret)
	}
	cfg := fmt.Sprintf(`
database:
  url: %q
replication:
  status_interval: 500ms
  reconnect_max_backoff: 2s
delivery:
  poll_interval: 100ms
  timeout: 5s
  retry_schedule: [100ms, 200ms, 400ms, 800ms, 1600ms]
  drain_timeout: 3s
  workers: 32
  per_webhook: 16
  allow_networks: [127.0.0.0/8]
%s
webhooks:
  endpoints:%s
`, dbURL, extra, hooks.String())
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is a running relay binary.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
	peak int64 // VmHWM in kB, read while it ran
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func startRelay(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	go p.watchMemory()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("relay %d output (tail):\n%s", p.cmd.Process.Pid, tail(p.output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// watchMemory samples the child's peak resident set (VmHWM) until it exits.
func (p *proc) watchMemory() {
	for {
		p.sampleMemory()
		select {
		case <-p.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *proc) sampleMemory() {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				p.mu.Lock()
				p.peak = max(p.peak, kb)
				p.mu.Unlock()
			}
		}
	}
}

// peakMB is the highest peak resident set seen, in MB.
func (p *proc) peakMB() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return float64(p.peak) / 1024
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	p.sampleMemory()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code and how long the exit took.
func (p *proc) stop(timeout time.Duration) (int, time.Duration) {
	p.t.Helper()
	p.sampleMemory()
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		// SIGQUIT makes the Go runtime print every goroutine's stack.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		p.t.Fatalf("relay did not stop within %s of SIGTERM; its goroutines:\n%s", timeout, tail(p.output(), 30000))
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// runRelay runs the binary to completion.
func runRelay(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("relay %s did not exit within %s:\n%s", strings.Join(args, " "), timeout, out)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load writes platform changes across tasks, repair_requests, shutdowns
// and users: each changed row produces exactly one event with a body no
// other change produces. Every transaction records its event count in the
// ledger. Errors (a database restart) are retried: the ledger, not the
// writer, says what was committed.
type load struct {
	e       *env
	seq     atomic.Int64
	changes atomic.Int64 // rows changed by transactions the writer saw commit
	errors  atomic.Int64
	lastErr atomic.Value
}

// run writes transactions until at least n changes committed or ctx ends.
func (l *load) run(ctx context.Context, n int64, maxRows int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for l.changes.Load() < n && ctx.Err() == nil {
		if l.errors.Load() > 500 {
			l.e.t.Errorf("the load keeps failing: %v", l.lastErr.Load())
			return
		}
		rows := 1 + rng.IntN(maxRows)
		if err := l.tx(ctx, rng.IntN(6), rows); err != nil {
			l.errors.Add(1)
			l.lastErr.Store(err.Error())
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (l *load) tx(ctx context.Context, kind, rows int) error {
	tx, err := l.e.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	s := l.seq.Add(1)
	var sql string
	switch kind {
	case 0:
		sql = `INSERT INTO users (company_id, email, full_name) SELECT 1, 'u' || $2 || '.' || g || '@load.example', 'User ' || g FROM generate_series(1, $1) g`
	case 1:
		sql = `INSERT INTO repair_requests (company_id, asset_id, title, requested_by) SELECT 1, 1, 'rr ' || $2 || '.' || g, 3 FROM generate_series(1, $1) g`
	case 2:
		sql = `UPDATE repair_requests SET status = CASE WHEN status = 'open' THEN 'in_review' ELSE 'open' END, title = 'rr upd ' || $2 || '.' || id, updated_by = 2
			WHERE id IN (SELECT id FROM repair_requests WHERE company_id = 1 ORDER BY random() LIMIT $1)`
	case 3:
		sql = `INSERT INTO shutdowns (company_id, asset_id, reason, reported_by) SELECT 1, 2, 'sd ' || $2 || '.' || g, 3 FROM generate_series(1, $1) g`
	case 4:
		sql = `INSERT INTO tasks (company_id, asset_id, title, technician_id, assigned_by) SELECT 1, 1, 'task ' || $2 || '.' || g, 3, 2 FROM generate_series(1, $1) g`
	default:
		sql = `UPDATE tasks SET technician_id = CASE WHEN technician_id = 3 THEN 2 ELSE 3 END, title = 'task upd ' || $2 || '.' || id
			WHERE id IN (SELECT id FROM tasks WHERE company_id = 1 ORDER BY random() LIMIT $1)`
	}
	tag, err := tx.Exec(ctx, sql, rows, strconv.FormatInt(s, 10))
	if err != nil {
		return err
	}
	n := tag.RowsAffected()
	if n > 0 {
		if _, err := tx.Exec(ctx, "INSERT INTO fault_ledger (events) VALUES ($1)", n); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	l.changes.Add(n)
	return nil
}

// figures is one scenario's summary line.
type figures struct {
	changes, expected, delivered, dupIDs, repeats int64
	peakMB                                        float64
	takeover                                      time.Duration
	extra                                         string
}

func (f figures) log(t *testing.T) {
	t.Helper()
	line := fmt.Sprintf("FIGURES %s: changes=%d events_expected=%d delivered=%d duplicates_by_id=%d repeated_receptions=%d peak_rss_mb=%.1f",
		t.Name(), f.changes, f.expected, f.delivered, f.dupIDs, f.repeats, f.peakMB)
	if f.takeover > 0 {
		line += fmt.Sprintf(" takeover=%s", f.takeover.Round(time.Millisecond))
	}
	if f.extra != "" {
		line += " " + f.extra
	}
	t.Log(line)
	fmt.Println(line)
}

// checkDelivered waits until the receiver got every expected (endpoint,
// event) pair and checks each came under exactly one delivery id.
func checkDelivered(t *testing.T, e *env, r *receiver, endpoints int, timeout time.Duration) tally {
	t.Helper()
	want := int(e.expected()) * endpoints
	waitFor(t, fmt.Sprintf("%d deliveries", want), timeout, func() bool { return r.tally().events >= want })
	time.Sleep(300 * time.Millisecond)
	got := r.tally()
	if got.events != want {
		t.Errorf("receivers got %d distinct events, want %d", got.events, want)
	}
	if got.multiIDs != 0 {
		t.Errorf("%d events arrived under more than one delivery id", got.multiIDs)
	}
	if got.ids != want {
		t.Errorf("%d distinct delivery ids, want %d (one per event and webhook)", got.ids, want)
	}
	if got.badSig != 0 {
		t.Errorf("%d requests failed signature verification", got.badSig)
	}
	if got.overlaps != 0 {
		t.Errorf("%d times an attempt of a delivery arrived while another attempt of it was in progress", got.overlaps)
	}
	if stored := e.scalar("SELECT count(*) FROM relay.events"); stored != int64(want/endpoints) {
		t.Errorf("the store holds %d events, want %d", stored, want/endpoints)
	}
	return got
}
