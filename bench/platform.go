package bench

// The platform scenario measures what the relay costs the platform's own
// transactions: the same platform load at a fixed rate, first alone on
// its database, then with the relay streaming and delivering beside it,
// and the platform's commit latency in both.
//
// Why a load generator of its own rather than pgbench (which ships with
// the PostgreSQL install, /usr/lib/postgresql/*/bin/pgbench): pgbench
// --rate schedules transactions open-loop too and, with -l, logs each
// one's latency from its scheduled start, so it is not biased by
// coordinated omission either. What it cannot give is the COMMIT's own
// round trip apart from the transaction's: that is where the relay's WAL
// lengthens the platform's work (a commit waits for the sync of every WAL
// byte before it, the relay's included), and pgbench reports
// per-statement latencies only as averages (-r). The generator here
// measures both per transaction, in the process, with no per-transaction
// log files written to the disk whose syncs are being measured; it writes
// the commit times into the rows that the receiver reads for the relay's
// own delivery latency, and it runs the platform's transactions on the
// platform's schema, which the relay's rules turn into events, where
// pgbench's scripts could only do so through SQL-side clocks. Its
// schedule is a fixed interval rather than pgbench's Poisson arrivals:
// the same offered load in both phases, without bursts of chance.

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// platformApp is the application_name of the platform load's
	// connections, so that their processes are named apart.
	platformApp = "platform-load"
	// platformConns is how many connections of its own the platform load
	// runs on: enough that a stall of tens of milliseconds does not leave
	// the schedule waiting for a free connection (a transaction that starts
	// late still counts from its scheduled start).
	platformConns = 32
	// platformRows is how many tasks and repair requests the platform's
	// database starts with; the reviews go round the tasks.
	platformRows = 10_000
	// platformLate is how far behind its schedule a transaction may start
	// before it counts as late (the generator short of connections).
	platformLate = time.Millisecond
)

// platformEvents are the events the platform load's transactions fire, one
// per transaction.
var platformEvents = []string{"repair_request.created", "task.completed", "task.rejected"}

// PlatformLoad is the platform scenario's figures of the platform's own
// transactions.
type PlatformLoad struct {
	// Rate is the transactions per second offered, on Connections
	// connections of the load's own.
	Rate        int `json:"rate"`
	Connections int `json:"connections"`
	// Alone is the load with no relay; WithClient the same load with
	// PostgreSQL's own logical decoding client (pg_recvlogical,
	// test_decoding) reading every change and storing nothing, the least
	// any consumer of the change feed costs; WithRelay the same load with
	// the relay streaming and delivering every transaction's event.
	Alone      PlatformPhase `json:"alone"`
	WithClient PlatformPhase `json:"with_client"`
	WithRelay  PlatformPhase `json:"with_relay"`
	// P99Ratio is WithRelay's transaction p99 over Alone's (the target is
	// at most 1.1); CommitP99Ratio the same of the COMMIT alone.
	// ClientP99Ratio and ClientCommitP99Ratio are WithClient's.
	P99Ratio             float64 `json:"p99_ratio"`
	CommitP99Ratio       float64 `json:"commit_p99_ratio"`
	ClientP99Ratio       float64 `json:"client_p99_ratio"`
	ClientCommitP99Ratio float64 `json:"client_commit_p99_ratio"`
}

// PlatformPhase is what one phase of the platform load measured, after its
// warm-up.
type PlatformPhase struct {
	Transactions int     `json:"transactions"`
	Seconds      float64 `json:"seconds"`
	TxPerSec     float64 `json:"tx_per_sec"`
	// Each transaction's latency from its scheduled start (not from when
	// a connection was free to start it) to its commit's return.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// The COMMIT statement's round trip: the WAL sync it waits for.
	CommitP50ms float64 `json:"commit_p50_ms"`
	CommitP99ms float64 `json:"commit_p99_ms"`
	CommitMaxMs float64 `json:"commit_max_ms"`
	// Late counts the transactions that started over a millisecond behind
	// their schedule: the generator was short of connections.
	Late int `json:"started_late"`
	// PGMicrosPerTx is PostgreSQL's CPU (every process of the platform's
	// server) per transaction: with the relay, until its last delivery.
	PGMicrosPerTx float64   `json:"postgres_cpu_us_per_tx"`
	Disk          DiskSyncs `json:"disk_syncs"`
}

func (p PlatformPhase) String() string {
	return fmt.Sprintf("%.0f tx/s, p50/p99/max %.2f/%.2f/%.1f ms (commit alone %.2f/%.2f/%.1f), %d started late, PostgreSQL %.0f µs/tx; %s",
		p.TxPerSec, p.P50ms, p.P99ms, p.MaxMs, p.CommitP50ms, p.CommitP99ms, p.CommitMaxMs, p.Late, p.PGMicrosPerTx, p.Disk)
}

// platformSeed is the platform's tasks and repair requests before the
// load: no technician on the tasks, so that their reviews fire only the
// review's event.
var platformSeed = fmt.Sprintf(`
INSERT INTO tasks (company_id, asset_id, title, status) SELECT 1, 1 + i %% 2, 'seed', 'in_progress' FROM generate_series(1, %[1]d) i;
INSERT INTO repair_requests (company_id, asset_id, title, requested_by) SELECT 1, 1 + i %% 2, 'seed', 3 FROM generate_series(1, %[1]d) i;
ANALYZE`, platformRows)

// platform: the platform's own transactions at 1,000/s for a minute,
// alone on a fresh database, then on another fresh one with the relay
// delivering every transaction's event to one webhook; the platform's
// commit latency in both, and the relay's figures of the second.
func (b *run) platform(ctx context.Context) (Result, error) {
	const rate = 1000
	d := time.Duration(b.scale(60, 3)) * time.Second
	warm := time.Duration(b.scale(2000, 500)) * time.Millisecond
	pl := &PlatformLoad{Rate: rate, Connections: platformConns}

	say(b.opts.Progress, "platform load alone")
	if err := b.platformWithoutRelay(ctx, rate, warm, d, false, &pl.Alone); err != nil {
		return Result{}, fmt.Errorf("alone: %w", err)
	}
	say(b.opts.Progress, "platform load with PostgreSQL's own client")
	if err := b.platformWithoutRelay(ctx, rate, warm, d, true, &pl.WithClient); err != nil {
		return Result{}, fmt.Errorf("with PostgreSQL's own client: %w", err)
	}
	say(b.opts.Progress, "platform load with the relay")
	r, err := b.platformWithRelay(ctx, rate, warm, d, &pl.WithRelay)
	if err != nil {
		return Result{}, fmt.Errorf("with the relay: %w", err)
	}
	pl.P99Ratio = pl.WithRelay.P99ms / max(pl.Alone.P99ms, 0.001)
	pl.CommitP99Ratio = pl.WithRelay.CommitP99ms / max(pl.Alone.CommitP99ms, 0.001)
	pl.ClientP99Ratio = pl.WithClient.P99ms / max(pl.Alone.P99ms, 0.001)
	pl.ClientCommitP99Ratio = pl.WithClient.CommitP99ms / max(pl.Alone.CommitP99ms, 0.001)
	r.Platform = pl
	return r, nil
}

// platformWithoutRelay runs the load with nothing reading the change
// feed or, withClient, with pg_recvlogical reading every change, until
// the client has printed every transaction's COMMIT.
func (b *run) platformWithoutRelay(ctx context.Context, rate int, warm, d time.Duration, withClient bool, ph *PlatformPhase) error {
	db, pool, err := b.setup(ctx, platformSeed)
	if err != nil {
		return err
	}
	defer b.teardown(db, pool, nil)
	var commits atomic.Int64
	var client *logicalClient
	if withClient {
		client, err = b.startLogicalClient(ctx, db, pool, func(_ time.Time, line []byte) {
			if bytes.HasPrefix(line, []byte("COMMIT")) {
				commits.Add(1)
			}
		})
		if err != nil {
			return err
		}
		defer client.stop()
	}
	conns, closeConns, err := openPlatformConns(ctx, b.pg.URL(db))
	if err != nil {
		return err
	}
	defer closeConns()
	pg0 := procCPU(b.pg.PID(), true)
	disk := startDiskProbe(b.dir)
	s, err := platformLoad(ctx, conns, rate, warm, d)
	for deadline := time.Now().Add(time.Minute); err == nil && client != nil && commits.Load() < int64(s.total); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			err = fmt.Errorf("pg_recvlogical printed %d of %d commits: %s", commits.Load(), s.total, client.stderr())
		}
	}
	ph.Disk = disk.finish()
	if err != nil {
		return err
	}
	s.phase(ph)
	ph.PGMicrosPerTx = float64((procCPU(b.pg.PID(), true) - pg0).Microseconds()) / float64(s.total)
	return nil
}

func (b *run) platformWithRelay(ctx context.Context, rate int, warm, d time.Duration, ph *PlatformPhase) (Result, error) {
	db, pool, err := b.setup(ctx, platformSeed)
	if err != nil {
		return Result{}, err
	}
	rp, err := b.startRelay(ctx, db, pool, []webhook{{b.recv.url + "/ok/0", platformEvents}}, "")
	defer func() { b.teardown(db, pool, rp) }()
	if err != nil {
		return Result{}, err
	}
	if _, err := b.recv.stats(true, false); err != nil {
		return Result{}, err
	}
	conns, closeConns, err := openPlatformConns(ctx, b.pg.URL(db))
	if err != nil {
		return Result{}, err
	}
	defer closeConns()
	cpu := b.cpuMeter(ctx, pool, rp)
	start := time.Now()
	s, err := platformLoad(ctx, conns, rate, warm, d)
	if err != nil {
		cpu.disk.finish()
		return Result{}, err
	}
	st, err := b.waitReceived(ctx, s.total, 10*time.Minute)
	if err != nil {
		cpu.disk.finish()
		return Result{}, err
	}
	r := Result{Events: s.total, Deliveries: s.total, Seconds: st.LastAt.Sub(start).Seconds()}
	fill(&r, st, rp, cpu.fill(ctx, &r), ctx, pool)
	s.phase(ph)
	ph.PGMicrosPerTx = r.PGMicrosPerDel * float64(r.Deliveries) / float64(s.total)
	ph.Disk = r.Disk
	r.Note = fmt.Sprintf("the relay's figures are of its phase, warm-up included; its latency runs from each transaction's first statement; %s", stages(ctx, rp.state))
	return r, nil
}

// platformSamples is what a run of the platform load measured.
type platformSamples struct {
	total    int           // transactions run, the warm-up's included
	took     time.Duration // from the first measured transaction's schedule to the last commit
	lat, cmt []int64       // µs per measured transaction: from its schedule, of its COMMIT
	late     int
}

func (s *platformSamples) phase(ph *PlatformPhase) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	slices.Sort(s.lat)
	slices.Sort(s.cmt)
	ph.Transactions, ph.Seconds, ph.Late = len(s.lat), s.took.Seconds(), s.late
	if s.took > 0 {
		ph.TxPerSec = float64(len(s.lat)) / s.took.Seconds()
	}
	ph.P50ms, ph.P99ms, ph.MaxMs = ms(percentile(s.lat, 50)), ms(percentile(s.lat, 99)), ms(percentile(s.lat, 100))
	ph.CommitP50ms, ph.CommitP99ms, ph.CommitMaxMs = ms(percentile(s.cmt, 50)), ms(percentile(s.cmt, 99)), ms(percentile(s.cmt, 100))
}

// openPlatformConns opens the platform load's connections to the database at
// url. They are opened before, and closed after, what is measured: the
// processes of connections that are gone by the end no longer show as
// theirs in PostgreSQL's CPU by process.
func openPlatformConns(ctx context.Context, url string) ([]*pgx.Conn, func(), error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, nil, err
	}
	cfg.RuntimeParams["application_name"] = platformApp
	conns := make([]*pgx.Conn, 0, platformConns)
	closeAll := func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}
	for range platformConns {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect the platform load: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, closeAll, nil
}

// platformLoad runs the platform's transactions on conns at rate per
// second, open loop: transaction i is due at i/rate from the
// start, whichever connection is free takes it, and its latency counts
// from when it was due, so a stall that keeps every connection busy shows
// in full in the latencies of the transactions it delayed. The warm-up's
// transactions run but are not measured.
func platformLoad(ctx context.Context, conns []*pgx.Conn, rate int, warm, d time.Duration) (*platformSamples, error) {
	interval := time.Second / time.Duration(rate)
	warmN := int64(warm / interval)
	n := warmN + int64(d/interval)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		s        = &platformSamples{total: int(n)}
		wg       sync.WaitGroup
	)
	start := time.Now()
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat, cmt []int64
			late := 0
			defer func() {
				mu.Lock()
				s.lat, s.cmt, s.late = append(s.lat, lat...), append(s.cmt, cmt...), s.late+late
				mu.Unlock()
			}()
			for {
				i := next.Add(1) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				began := time.Now()
				commit, err := platformTx(ctx, conn, i)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("platform transaction %d: %w", i, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				if i < warmN {
					continue
				}
				lat = append(lat, time.Since(due).Microseconds())
				cmt = append(cmt, commit.Microseconds())
				if began.Sub(due) > platformLate {
					late++
				}
			}
		}()
	}
	wg.Wait()
	s.took = time.Since(start.Add(time.Duration(warmN) * interval))
	return s, firstErr
}

// platformTx runs the platform's transaction i and returns how long its
// COMMIT took. The even ones file a repair request with its task (the
// request fires repair_request.created; an open task without a technician
// fires nothing); the odd ones read a request and review a task, which
// goes from one state to the other on each visit (task.completed, then
// task.rejected, and so on). Each row title that an event carries is the
// time the transaction began, in Unix nanoseconds, for the receiver.
func platformTx(ctx context.Context, conn *pgx.Conn, i int64) (time.Duration, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	title := nanos()
	if i%2 == 0 {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by)
			VALUES (1, $1, $2, 'high', 3) RETURNING id`, 1+i%4/2, title).Scan(&id); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tasks (company_id, asset_id, title, description)
			VALUES (1, $1, $2, 'repair request ' || $3::bigint)`, 1+i%4/2, title, id); err != nil {
			return 0, err
		}
	} else {
		j := i / 2
		id, visit := 1+j%platformRows, j/platformRows
		var rrTitle, status string
		if err := tx.QueryRow(ctx, `SELECT title FROM repair_requests WHERE id = $1`, id).Scan(&rrTitle); err != nil {
			return 0, err
		}
		if err := tx.QueryRow(ctx, `SELECT status FROM tasks WHERE id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
			return 0, err
		}
		if visit%2 == 0 {
			_, err = tx.Exec(ctx, `UPDATE tasks SET status = 'completed', title = $2, completed_at = now(), updated_at = now()
				WHERE id = $1`, id, title)
		} else {
			_, err = tx.Exec(ctx, `UPDATE tasks SET status = 'rejected', title = $2, reviewed_by = 2, reviewed_at = now(),
				rejection_reason = 'photo missing', updated_at = now() WHERE id = $1`, id, title)
		}
		if err != nil {
			return 0, err
		}
	}
	sent := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return time.Since(sent), nil
}
