// Package bench measures the relay as operators run it: a real PostgreSQL
// with production durability settings, the relay binary as a child process
// (so its CPU and memory are its own), and a receiver in a separate process.
// Each scenario drives platform-like writes and reports throughput,
// commit-to-receipt latency, the relay's peak RSS and CPU per event, and the
// slot's lag at the end.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/demo"
	"github.com/smartmaintenance/relay/internal/throwawaypg"
	"github.com/smartmaintenance/relay/platform"
)

// Options configure a bench run.
type Options struct {
	// Relay is the relay binary; empty builds ./cmd/relay with go build.
	Relay string
	// Self is this program, re-run as the receiver ("receive" mode).
	Self string
	// Scenarios to run; empty runs all.
	Scenarios []string
	// Short shrinks every scenario to seconds, for smoke tests.
	Short bool
	// Progress receives one line per step.
	Progress io.Writer
	// ProfileDir, when set, receives a CPU profile and an allocation
	// profile of each relay run (relay run --cpuprofile, --memprofile),
	// named after its database.
	ProfileDir string
	// PGStats prints, after each scenario, the statements PostgreSQL spent
	// most time on (pg_stat_statements), to Progress.
	PGStats bool
	// WALStats prints, after each scenario, the WAL it wrote per delivery
	// by kind of record and relation (pg_walinspect), to Progress. Relations
	// of another database (SeparateState) show as blank.
	WALStats bool
	// Metrics runs the relay with its metrics on (observability.listen),
	// which the bench's figures are otherwise measured without, and adds
	// to each paced scenario's note where the time from a commit to the
	// relay's read went: the server's part and the relay's, from the
	// relay's relay_replication_read_delay_seconds.
	Metrics bool
	// SeparateState is where the relay keeps its own tables
	// (database.state_url): in the platform database (empty), in a database
	// of their own in the platform's cluster, or in a cluster of their own
	// (a second PostgreSQL server of the same settings), where the
	// platform's PostgreSQL pays only for the walsender.
	SeparateState StatePlace
	// Socket has the relay, and PostgreSQL's own client in the floor and
	// the platform scenario, reach PostgreSQL over its Unix socket, as a
	// relay beside the database can (database.url with a host that is a
	// directory), instead of over TCP on loopback. The platform's load
	// stays on TCP.
	Socket bool
	// Stall is how long the pause scenario stops the relay each time;
	// zero means DefaultStall (ShortStall when Short).
	Stall time.Duration
}

// StatePlace is where the relay keeps its own tables.
type StatePlace string

// Where the relay's tables can be.
const (
	// StateInPlatform keeps them in the platform database, the default.
	StateInPlatform StatePlace = ""
	// StateDatabase keeps them in a database of their own in the
	// platform's cluster: the walsender no longer decodes them, but the
	// platform's server still runs the relay's statements and syncs their
	// WAL with its own.
	StateDatabase StatePlace = "database"
	// StateCluster keeps them in a second PostgreSQL server: the
	// platform's server runs only the walsender.
	StateCluster StatePlace = "cluster"
)

// ParseStatePlace reads a -separate-state value: "database", "cluster",
// "true" (a cluster) or "false" and "" (the platform database).
func ParseStatePlace(s string) (StatePlace, error) {
	switch s {
	case "", "false":
		return StateInPlatform, nil
	case "true", "cluster":
		return StateCluster, nil
	case "database":
		return StateDatabase, nil
	}
	return "", fmt.Errorf("separate state: want database or cluster, got %q", s)
}

// Result is one scenario's figures.
type Result struct {
	Scenario         string  `json:"scenario"`
	Events           int     `json:"events"`
	Deliveries       int     `json:"deliveries"`
	Seconds          float64 `json:"seconds"`
	EventsPerSec     float64 `json:"events_per_sec"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	P50ms            float64 `json:"p50_ms"`
	P95ms            float64 `json:"p95_ms"`
	P99ms            float64 `json:"p99_ms"`
	MaxMs            float64 `json:"max_ms"`
	PeakRSSMB        float64 `json:"relay_peak_rss_mb"`
	CPUSecPer10k     float64 `json:"relay_cpu_sec_per_10k_events"`
	CPUMicrosPerDel  float64 `json:"relay_cpu_us_per_delivery"`
	// PostgreSQL's CPU (every backend, the relay's and the load's) and the
	// receiver's, per delivery, over the same interval.
	PGMicrosPerDel   float64 `json:"postgres_cpu_us_per_delivery"`
	RecvMicrosPerDel float64 `json:"receiver_cpu_us_per_delivery"`
	// PostgreSQL's CPU per delivery by process: walsender, the relay's
	// state connections, the load, autovacuum, the WAL writer...
	PGByProcess  map[string]float64 `json:"postgres_cpu_us_per_delivery_by_process,omitempty"`
	SlotLagBytes int64              `json:"slot_lag_bytes"`
	// WALBytesPerDel is the WAL PostgreSQL wrote per delivery (the
	// platform's, the relay's and the bench's): what the disk absorbs.
	WALBytesPerDel float64 `json:"wal_bytes_per_delivery"`
	// Disk is how long the disk took to sync while the scenario ran.
	Disk DiskSyncs `json:"disk_syncs"`
	// The platform's tax: the CPU the platform's PostgreSQL spends on the
	// relay's processes (its walsender, and its state and observability
	// connections when they are on the platform's server), per event and
	// per delivery. The load's own statements and the background
	// processes are not in it.
	PGRelayMicrosPerEvent float64 `json:"postgres_relay_cpu_us_per_event"`
	PGRelayMicrosPerDel   float64 `json:"postgres_relay_cpu_us_per_delivery"`
	// State is where the relay's tables were (Options.SeparateState).
	State StatePlace `json:"state,omitempty"`
	// Socket is Options.Socket.
	Socket bool `json:"socket,omitempty"`
	// With the relay's tables in a cluster of their own: what that server
	// spent (every process) and the WAL it wrote, per delivery. It is not
	// in PGMicrosPerDel, WALBytesPerDel nor the platform's tax.
	StatePGMicrosPerDel float64 `json:"state_postgres_cpu_us_per_delivery,omitempty"`
	StateWALBytesPerDel float64 `json:"state_wal_bytes_per_delivery,omitempty"`
	// Recovery is, for each stall of the relay (the pause scenario), how
	// its latency came back.
	Recovery []Recovery `json:"recovery,omitempty"`
	// Platform is the platform scenario's figures of the platform's own
	// transactions, without and with the relay.
	Platform *PlatformLoad `json:"platform,omitempty"`
	// BaselineP99ms is, in the isolation scenario, the healthy endpoints'
	// p99 without the hanging one (P99ms is theirs with it).
	BaselineP99ms float64 `json:"baseline_p99_ms,omitempty"`
	// FloorP50ms is, in the steady scenario, the p50 of the floor
	// scenario run in the same invocation (PostgreSQL's own client reading
	// the same load), and P50OverFloorMs how far P50ms is above it; both
	// zero unless floor ran too (see overFloor).
	FloorP50ms     float64 `json:"floor_p50_ms,omitempty"`
	P50OverFloorMs float64 `json:"p50_over_floor_ms,omitempty"`
	// Targets are the run's figures against its scenario's targets
	// (Targets); none in a short run.
	Targets []Check `json:"targets,omitempty"`
	Note    string  `json:"note,omitempty"`
}

// Scenario names, in the order they run.
var Scenarios = []string{"burst", "steady", "fanout", "backlog", "isolation", "platform"}

// How long the pause scenario stops the relay each time by default: the
// issue's second, or a fifth of one in the short run, whose stalls are
// only a second and a third apart.
const (
	DefaultStall = time.Second
	ShortStall   = 200 * time.Millisecond
)

// Run runs the scenarios and returns their results.
func Run(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if len(opts.Scenarios) == 0 {
		opts.Scenarios = Scenarios
	}
	if _, err := ParseStatePlace(string(opts.SeparateState)); err != nil {
		return nil, err
	}
	if opts.Stall <= 0 {
		opts.Stall = DefaultStall
		if opts.Short {
			opts.Stall = ShortStall
		}
	}
	if opts.ProfileDir != "" {
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("profile directory: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if opts.Relay == "" {
		opts.Relay = filepath.Join(dir, "relay")
		say(opts.Progress, "building the relay")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", opts.Relay, "github.com/smartmaintenance/relay/cmd/relay").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build relay: %v: %s", err, out)
		}
	}
	say(opts.Progress, "starting PostgreSQL (fsync on, synchronous_commit on)")
	settings := []string{"max_wal_size = 4GB", "checkpoint_timeout = 15min"}
	if opts.PGStats {
		settings = append(settings, "shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track = all",
			"pg_stat_statements.track_planning = on")
	}
	pg, err := throwawaypg.Start(ctx, throwawaypg.Options{Durable: true, Settings: settings})
	if err != nil {
		return nil, err
	}
	defer pg.Stop()
	b := &run{opts: opts, pg: pg, statePG: pg, dir: dir}
	if opts.SeparateState == StateCluster {
		say(opts.Progress, "starting a second PostgreSQL for the relay's tables (the same settings)")
		if b.statePG, err = throwawaypg.Start(ctx, throwawaypg.Options{Durable: true, Settings: settings}); err != nil {
			return nil, fmt.Errorf("the relay's state cluster: %w", err)
		}
		defer b.statePG.Stop()
	}
	recv, err := startReceiver(ctx, opts.Self, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer recv.stop()
	b.recv = recv

	var results []Result
	for _, name := range opts.Scenarios {
		f, ok := map[string]func(context.Context) (Result, error){
			"burst": b.burst, "steady": b.steady, "fanout": b.fanout, "backlog": b.backlog, "isolation": b.isolation,
			"platform": b.platform, "pause": b.pause, "floor": b.floor,
		}[name]
		if !ok {
			return results, fmt.Errorf("unknown scenario %q (have %s, pause, floor)", name, strings.Join(Scenarios, ", "))
		}
		say(opts.Progress, "scenario "+name)
		r, err := f(ctx)
		if err != nil {
			return results, fmt.Errorf("scenario %s: %w", name, err)
		}
		r.Scenario, r.State, r.Socket = name, opts.SeparateState, opts.Socket
		r.Targets = Targets(r, opts.Short)
		results = append(results, r)
	}
	overFloor(results)
	return results, nil
}

// overFloor sets, on the steady results, how far their p50 is above the
// floor's when both scenarios ran: the part of steady's latency that the
// relay and the receiver's side of HTTP add to what PostgreSQL itself
// takes, measured on the machine as it was during this invocation. Both
// move with the machine's speed (the floor's p50 0.43 ms and the gap
// 0.19–0.20 in its fastest spell; 0.6–0.7 and 0.3–0.7 in a slow one;
// docs/PERFORMANCE.md), so a p50 is read against its own run's floor.
func overFloor(results []Result) {
	i := slices.IndexFunc(results, func(r Result) bool { return r.Scenario == "floor" })
	if i < 0 {
		return
	}
	floor := results[i].P50ms
	for j := range results {
		if results[j].Scenario == "steady" {
			results[j].FloorP50ms, results[j].P50OverFloorMs = floor, results[j].P50ms-floor
		}
	}
}

func say(w io.Writer, s string) { fmt.Fprintf(w, "%s  %s\n", time.Now().Format("15:04:05"), s) }

type run struct {
	opts Options
	pg   *throwawaypg.Server
	// statePG is the server that holds the relay's tables: pg unless they
	// are in a cluster of their own.
	statePG *throwawaypg.Server
	recv    *receiverProc
	dir     string
}

// scale picks the full or the short size.
func (b *run) scale(full, short int) int {
	if b.opts.Short {
		return short
	}
	return full
}

// receiverProc is a receiver in its own process.
type receiverProc struct {
	cmd *exec.Cmd
	url string
}

func startReceiver(ctx context.Context, self, addr string) (*receiverProc, error) {
	cmd := exec.CommandContext(ctx, self, "receive", "-listen", addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start receiver: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("receiver did not start: %q %v", line, err)
	}
	return &receiverProc{cmd: cmd, url: "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening "))}, nil
}

func (r *receiverProc) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
}

func (r *receiverProc) stats(reset, latencies bool) (Stats, error) {
	u := r.url + "/stats?"
	if reset {
		u += "reset=1&"
	}
	if latencies {
		u += "latencies=1"
	}
	return r.get(u)
}

// samples returns the receiver's figures with every delivery's commit
// time and latency.
func (r *receiverProc) samples() (Stats, error) { return r.get(r.url + "/stats?samples=1") }

func (r *receiverProc) get(u string) (Stats, error) {
	resp, err := http.Get(u)
	if err != nil {
		return Stats{}, err
	}
	defer resp.Body.Close()
	var st Stats
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// relayProc is the relay under test.
type relayProc struct {
	cmd *exec.Cmd
	// exited is closed once the relay has exited (its Wait returned).
	exited chan struct{}
	log    *os.File
	slot   string
	// state reaches the relay's own tables; stateDB is their database
	// when it is not the platform's, on stateSrv.
	state    *pgxpool.Pool
	stateDB  string
	stateSrv *throwawaypg.Server
	// metrics is the relay's /metrics URL when Options.Metrics is on.
	metrics string
}

// ownCluster reports whether the relay's tables are on a server of their
// own.
func (b *run) ownCluster(r *relayProc) bool {
	return r != nil && r.stateSrv != nil && r.stateSrv != b.pg
}

type webhook struct {
	url    string
	events []string
}

// setup creates a database with the reference schema and runs prepare in it.
func (b *run) setup(ctx context.Context, prepare string) (string, *pgxpool.Pool, error) {
	scripts := []string{platform.Schema, platform.Sample, prepare}
	if b.opts.PGStats {
		scripts = append(scripts, "CREATE EXTENSION pg_stat_statements")
	}
	if b.opts.WALStats {
		scripts = append(scripts, "CREATE EXTENSION pg_walinspect")
	}
	db, err := b.pg.CreateDatabase(ctx, scripts...)
	if err != nil {
		return "", nil, err
	}
	// What the previous scenario wrote is flushed now, not by a checkpoint
	// in the middle of this one.
	if err := b.pg.Exec(ctx, "postgres", "CHECKPOINT"); err != nil {
		return "", nil, fmt.Errorf("checkpoint: %w", err)
	}
	if b.statePG != b.pg {
		if err := b.statePG.Exec(ctx, "postgres", "CHECKPOINT"); err != nil {
			return "", nil, fmt.Errorf("checkpoint the state cluster: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, b.pg.URL(db))
	if err != nil {
		return "", nil, err
	}
	return db, pool, nil
}

func (b *run) teardown(db string, pool *pgxpool.Pool, r *relayProc) {
	if r != nil {
		r.stop()
	}
	if b.opts.PGStats {
		b.printPGStats(pool)
		if b.ownCluster(r) {
			say(b.opts.Progress, "the relay's state cluster:")
			b.printPGStats(r.state)
		}
	}
	pool.Close()
	_ = b.pg.DropDatabase(context.Background(), db)
	if r != nil && r.stateDB != "" {
		r.state.Close()
		_ = r.stateSrv.DropDatabase(context.Background(), r.stateDB)
	}
}

// clientURL is how the relay, and PostgreSQL's own client in its place,
// reach database db of srv: over its Unix socket with Options.Socket, over
// TCP otherwise.
func (b *run) clientURL(srv *throwawaypg.Server, db string) string {
	if b.opts.Socket {
		return srv.SocketURL(db)
	}
	return srv.URL(db)
}

// startRelay runs the relay binary on db with the given webhooks and waits
// until it streams.
func (b *run) startRelay(ctx context.Context, db string, pool *pgxpool.Pool, hooks []webhook, extra string) (*relayProc, error) {
	slot := "bench_" + db
	var sb strings.Builder
	r := &relayProc{slot: slot, state: pool}
	fmt.Fprintf(&sb, "log:\n  level: warn\ndatabase:\n  url: %q\n", b.clientURL(b.pg, db))
	if b.opts.SeparateState != StateInPlatform {
		var scripts []string
		if b.opts.PGStats && b.statePG != b.pg {
			scripts = append(scripts, "CREATE EXTENSION pg_stat_statements")
		}
		stateDB, err := b.statePG.CreateDatabase(ctx, scripts...)
		if err != nil {
			return r, err
		}
		state, err := pgxpool.New(ctx, b.statePG.URL(stateDB))
		if err != nil {
			_ = b.statePG.DropDatabase(ctx, stateDB)
			return r, err
		}
		r.state, r.stateDB, r.stateSrv = state, stateDB, b.statePG
		fmt.Fprintf(&sb, "  state_url: %q\n", b.clientURL(b.statePG, stateDB))
	}
	fmt.Fprintf(&sb, "replication:\n  slot: %s\n  publication: %s\n", slot, slot)
	if b.opts.Metrics {
		addr, err := freePort()
		if err != nil {
			return r, err
		}
		fmt.Fprintf(&sb, "observability:\n  listen: %s\n", addr)
		r.metrics = "http://" + addr + "/metrics"
	}
	sb.WriteString(extra)
	sb.WriteString("webhooks:\n  endpoints:\n")
	for i, h := range hooks {
		fmt.Fprintf(&sb, "    - company_id: 1\n      name: hook%d\n      url: %q\n      secret: bench-secret-0123456789\n      events: [%s]\n",
			i, h.url, strings.Join(h.events, ", "))
	}
	cfg := filepath.Join(b.dir, db+".yaml")
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o600); err != nil {
		return r, err
	}
	logf, err := os.Create(filepath.Join(b.dir, db+".log"))
	if err != nil {
		return r, err
	}
	args := []string{"run", "--config", cfg}
	if b.opts.ProfileDir != "" {
		args = append(args, "--cpuprofile", filepath.Join(b.opts.ProfileDir, db+".cpu.pprof"),
			"--memprofile", filepath.Join(b.opts.ProfileDir, db+".allocs.pprof"))
	}
	cmd := exec.CommandContext(ctx, b.opts.Relay, args...)
	// The receivers are local: open loopback, which the relay refuses by
	// default.
	cmd.Env = append(os.Environ(), "RELAY_DELIVERY__ALLOW_NETWORKS=127.0.0.0/8,::1")
	cmd.Stdout, cmd.Stderr = logf, logf
	r.cmd, r.log = cmd, logf
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start relay: %w", err)
	}
	r.exited = make(chan struct{})
	go func() { cmd.Wait(); close(r.exited) }()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-r.exited:
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := demo.WaitForSlot(wctx, pool, slot); err != nil {
		select {
		case <-r.exited:
			return r, fmt.Errorf("relay exited before streaming (%s): %s", cmd.ProcessState, lastLine(logf.Name()))
		default:
		}
		return r, fmt.Errorf("relay did not start streaming (see %s): %w", logf.Name(), err)
	}
	if err := b.checkTransport(ctx, pool, slot, "the relay"); err != nil {
		return r, err
	}
	return r, nil
}

// checkTransport checks that the client streaming slot reached PostgreSQL
// the way Options.Socket says: its walsender has no client address over a
// Unix socket, and one over TCP.
func (b *run) checkTransport(ctx context.Context, pool *pgxpool.Pool, slot, who string) error {
	var overSocket bool
	err := pool.QueryRow(ctx, `SELECT r.client_addr IS NULL FROM pg_replication_slots s
		JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, slot).Scan(&overSocket)
	switch {
	case err != nil:
		return fmt.Errorf("read how %s reaches PostgreSQL: %w", who, err)
	case overSocket != b.opts.Socket:
		return fmt.Errorf("%s reaches PostgreSQL over the Unix socket: %v, wanted %v", who, overSocket, b.opts.Socket)
	}
	return nil
}

// lastLine returns the last line of the file at path, or why it cannot.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func (r *relayProc) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	r.log.Close()
}

// stall is one stop of the relay: when it was stopped and let go on.
type stall struct{ stopped, resumed time.Time }

// stopTwice stops the relay process (SIGSTOP) for stop at a third and at
// two thirds of d from start, and lets it go on (SIGCONT); nothing when
// stop is not positive. It returns the stalls it made.
func (r *relayProc) stopTwice(ctx context.Context, start time.Time, d, stop time.Duration) ([]stall, error) {
	if stop <= 0 {
		return nil, nil
	}
	var stalls []stall
	for _, at := range []time.Duration{d / 3, 2 * d / 3} {
		select {
		case <-ctx.Done():
			return stalls, ctx.Err()
		case <-time.After(time.Until(start.Add(at))):
		}
		if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return stalls, fmt.Errorf("stop the relay: %w", err)
		}
		stopped := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(stop):
		}
		if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			return stalls, fmt.Errorf("let the relay go on: %w", err)
		}
		stalls = append(stalls, stall{stopped, time.Now()})
	}
	return stalls, ctx.Err()
}

// cpu returns the relay's CPU time so far.
func (r *relayProc) cpu() time.Duration { return procCPU(r.cmd.Process.Pid, false) }

// procCPU returns the CPU time of process pid so far, from /proc; with
// children, also that of its children, running and exited (for the
// postmaster: every backend).
func procCPU(pid int, children bool) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	ticks := field(f, 11) + field(f, 12)
	if children {
		ticks += field(f, 13) + field(f, 14)
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cf := statFields(child); len(cf) > 12 && field(cf, 1) == int64(pid) {
				ticks += field(cf, 11) + field(cf, 12)
			}
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// statFields returns the fields of /proc/pid/stat after the command name,
// from the state on (so index 1 is the parent's pid, 11 utime).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

func field(f []string, i int) int64 {
	n, _ := strconv.ParseInt(f[i], 10, 64)
	return n
}

// cpuMeter measures the CPU the relay, PostgreSQL and the receiver use from
// its start.
type cpuMeter struct {
	b                *run
	rp               *relayProc
	pool             *pgxpool.Pool
	relay, pg, recv0 time.Duration
	procs            map[int]pgProc
	wal              int64
	walLSN           string
	disk             *diskProbe
	// The relay's state cluster's CPU and WAL position at the start, when
	// its tables are on a server of their own.
	state    bool
	stateCPU time.Duration
	stateWAL int64
}

// walPosition returns how far PostgreSQL has written its WAL, in bytes
// and as an LSN.
func walPosition(ctx context.Context, pool *pgxpool.Pool) (int64, string) {
	var at int64
	var lsn string
	_ = pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(l, '0/0')::bigint, l::text FROM pg_current_wal_insert_lsn() l`).Scan(&at, &lsn)
	return at, lsn
}

func (b *run) cpuMeter(ctx context.Context, pool *pgxpool.Pool, rp *relayProc) *cpuMeter {
	wal, lsn := walPosition(ctx, pool)
	m := &cpuMeter{b: b, rp: rp, pool: pool, relay: rp.cpu(), pg: procCPU(b.pg.PID(), true),
		recv0: procCPU(b.recv.cmd.Process.Pid, false), procs: pgProcs(ctx, pool),
		wal: wal, walLSN: lsn, disk: startDiskProbe(b.dir)}
	if b.ownCluster(rp) {
		m.state, m.stateCPU = true, procCPU(rp.stateSrv.PID(), true)
		m.stateWAL, _ = walPosition(ctx, rp.state)
	}
	return m
}

// fill records the CPU used since the start, per delivery, and the disk's
// syncs in r.
func (m *cpuMeter) fill(ctx context.Context, r *Result) time.Duration {
	relay := m.rp.cpu() - m.relay
	r.Disk = m.disk.finish()
	if r.Deliveries > 0 {
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(r.Deliveries) }
		pg := procCPU(m.b.pg.PID(), true) - m.pg
		r.PGMicrosPerDel = per(pg)
		wal, _ := walPosition(ctx, m.pool)
		r.WALBytesPerDel = float64(wal-m.wal) / float64(r.Deliveries)
		if m.b.opts.WALStats {
			m.b.printWALStats(ctx, m.pool, m.walLSN, r.Deliveries)
		}
		r.RecvMicrosPerDel = per(procCPU(m.b.recv.cmd.Process.Pid, false) - m.recv0)
		r.PGByProcess = map[string]float64{}
		rest := pg
		for pid, now := range pgProcs(ctx, m.pool) {
			d := now.cpu - m.procs[pid].cpu // a process started since counts whole
			r.PGByProcess[now.role] += per(d)
			rest -= d
		}
		r.PGByProcess["exited or unnamed"] = per(rest)
		r.PGRelayMicrosPerDel = relayShare(r.PGByProcess)
		if r.Events > 0 {
			r.PGRelayMicrosPerEvent = r.PGRelayMicrosPerDel * float64(r.Deliveries) / float64(r.Events)
		}
		if m.state {
			r.StatePGMicrosPerDel = per(procCPU(m.rp.stateSrv.PID(), true) - m.stateCPU)
			wal, _ := walPosition(ctx, m.rp.state)
			r.StateWALBytesPerDel = float64(wal-m.stateWAL) / float64(r.Deliveries)
		}
	}
	return relay
}

// relayShare sums the relay's processes' share of PostgreSQL's CPU: its
// walsender (smtm-relay) and its connections (smtm-relay-feed,
// smtm-relay-state, smtm-relay-observability).
func relayShare(byProcess map[string]float64) float64 {
	var sum float64
	for role, us := range byProcess {
		if strings.HasPrefix(role, "smtm-relay") {
			sum += us
		}
	}
	return sum
}

// pgProc is one PostgreSQL process: what it does and its CPU time so far.
type pgProc struct {
	role string
	cpu  time.Duration
}

// pgProcs returns PostgreSQL's live processes by pid. The relay's
// connections are named by their application_name, and so are the
// platform scenario's load's; other client connections are the load
// generator's and the bench's.
func pgProcs(ctx context.Context, pool *pgxpool.Pool) map[int]pgProc {
	rows, err := pool.Query(ctx, `SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '') FROM pg_stat_activity`)
	if err != nil {
		return nil
	}
	procs := map[int]pgProc{}
	var pid int
	var typ, app string
	_, _ = pgx.ForEachRow(rows, []any{&pid, &typ, &app}, func() error {
		role := typ
		switch {
		case strings.HasPrefix(app, "smtm-relay"):
			role = app
		case app == platformApp:
			role = "platform load"
		case typ == "client backend":
			role = "load and bench"
		}
		procs[pid] = pgProc{role: role, cpu: procCPU(pid, false)}
		return nil
	})
	return procs
}

// peakRSS returns the relay's peak resident memory in MB.
func (r *relayProc) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func slotLag(ctx context.Context, pool *pgxpool.Pool, slot string) int64 {
	var lag int64
	_ = pool.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag)
	return lag
}

// waitReceived waits until the receiver has n unique deliveries, and
// returns its figures with the latencies.
func (b *run) waitReceived(ctx context.Context, n int, timeout time.Duration) (Stats, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := b.recv.stats(false, false)
		if err != nil {
			return st, err
		}
		if st.Unique >= n {
			return b.recv.stats(false, true)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("received %d of %d deliveries in %v", st.Unique, n, timeout)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fill completes a result from the receiver's stats and the relay's figures.
func fill(r *Result, st Stats, rp *relayProc, cpu time.Duration, ctx context.Context, pool *pgxpool.Pool) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r.P50ms = ms(percentile(st.Latencies, 50))
	r.P95ms = ms(percentile(st.Latencies, 95))
	r.P99ms = ms(percentile(st.Latencies, 99))
	r.MaxMs = ms(percentile(st.Latencies, 100))
	if r.Seconds > 0 {
		r.EventsPerSec = float64(r.Events) / r.Seconds
		r.DeliveriesPerSec = float64(r.Deliveries) / r.Seconds
	}
	r.PeakRSSMB = rp.peakRSS()
	if r.Events > 0 {
		r.CPUSecPer10k = cpu.Seconds() * 10000 / float64(r.Events)
	}
	if r.Deliveries > 0 {
		r.CPUMicrosPerDel = float64(cpu.Microseconds()) / float64(r.Deliveries)
	}
	r.SlotLagBytes = slotLag(ctx, pool, rp.slot)
}

func nanos() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }

// freePort returns a loopback port nothing listens on right now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// printWALStats prints the WAL written since from by kind of record and
// the relation it changed (its first block's), the largest first, in
// records and bytes per delivery, full-page images apart.
func (b *run) printWALStats(ctx context.Context, pool *pgxpool.Pool, from string, deliveries int) {
	rows, err := pool.Query(ctx, `SELECT resource_manager || '/' || record_type,
			coalesce(pg_filenode_relation(0, substring(block_ref FROM 'rel \d+/\d+/(\d+)')::oid)::text, ''),
			count(*), sum(record_length), sum(fpi_length)
		FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_flush_lsn())
		GROUP BY 1, 2 ORDER BY 4 DESC LIMIT 20`, from)
	if err != nil {
		say(b.opts.Progress, "pg_walinspect: "+err.Error())
		return
	}
	defer rows.Close()
	per := func(n int64) float64 { return float64(n) / float64(max(deliveries, 1)) }
	fmt.Fprintf(b.opts.Progress, "  %-22s %-38s %8s %8s %8s\n", "WAL per delivery", "relation", "records", "bytes", "of FPI")
	for rows.Next() {
		var kind, rel string
		var count, total, fpi int64
		if rows.Scan(&kind, &rel, &count, &total, &fpi) != nil {
			return
		}
		fmt.Fprintf(b.opts.Progress, "  %-22s %-38s %8.2f %8.0f %8.0f\n", kind, rel, per(count), per(total), per(fpi))
	}
}

// printPGStats prints the statements PostgreSQL spent most time on since
// the server started (every database of the run), with their calls and
// rows and the time spent planning them (pg_stat_statements.track_planning:
// a statement prepared once can still be planned at every call), and
// resets the figures for the next scenario.
func (b *run) printPGStats(pool *pgxpool.Pool) {
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT round(total_exec_time)::bigint, round(total_plan_time)::bigint, calls, rows,
			left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		say(b.opts.Progress, "pg_stat_statements: "+err.Error())
		return
	}
	defer rows.Close()
	fmt.Fprintf(b.opts.Progress, "%10s %8s %9s %9s %8s %9s  %s\n", "total ms", "plan ms", "calls", "rows", "µs/row", "plan µs/call", "statement")
	for rows.Next() {
		var ms, planMS, calls, n int64
		var q string
		if rows.Scan(&ms, &planMS, &calls, &n, &q) != nil {
			return
		}
		fmt.Fprintf(b.opts.Progress, "%10d %8d %9d %9d %8.1f %9.1f  %s\n", ms, planMS, calls, n, float64(ms)*1000/float64(max(n, 1)),
			float64(planMS)*1000/float64(max(calls, 1)), q)
	}
	rows.Close()
	_, _ = pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
}
