package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// floor: the steady load (1,000 single-row transactions a second) with
// PostgreSQL's own logical decoding client in the relay's place:
// pg_recvlogical with the test_decoding plugin, which does nothing but
// print each change. Latency runs as in steady, from the time each row's
// statement was sent (its title) to the moment the bench reads the
// change from the client's output. It is what steady's latency cannot go
// below on this machine, whatever the relay does: the database's commit
// (a WAL flush), the walsender's wake-up and decoding, and the read.
func (b *run) floor(ctx context.Context) (Result, error) {
	db, pool, err := b.setup(ctx, "")
	if err != nil {
		return Result{}, err
	}
	defer b.teardown(db, pool, nil)
	slot := "floor_" + db
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		return Result{}, fmt.Errorf("create the slot: %w", err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), `SELECT pg_drop_replication_slot($1)`, slot)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, b.pg.Program("pg_recvlogical"), "-d", b.pg.URL(db), "-S", slot,
		"--start", "--fsync-interval", "0", "--file", "-")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("start pg_recvlogical: %w", err)
	}
	defer func() {
		cancel() // kills the client, whatever ended the scenario
		_ = cmd.Wait()
	}()
	n := b.scale(60_000, 5_000)
	lat := make([]int64, 0, n) // µs, as the receiver keeps them
	var mu sync.Mutex
	got := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			now := time.Now()
			sent, ok := titleNanos(sc.Bytes())
			if !ok {
				continue
			}
			mu.Lock()
			lat = append(lat, now.Sub(time.Unix(0, sent)).Microseconds())
			full := len(lat) == n
			mu.Unlock()
			if full {
				close(got)
				return
			}
		}
	}()
	// Wait until the client streams: a row written before it does is
	// decoded all the same, but late.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		if err := pool.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active); err != nil {
			return Result{}, err
		}
		if active {
			break
		}
		if time.Now().After(deadline) {
			return Result{}, fmt.Errorf("pg_recvlogical did not start streaming: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := walsenderCPU(ctx, pool)
	start := time.Now()
	if err := pace(ctx, pool, 1000, n); err != nil {
		return Result{}, err
	}
	select {
	case <-got:
	case <-time.After(time.Minute):
		mu.Lock()
		k := len(lat)
		mu.Unlock()
		return Result{}, fmt.Errorf("pg_recvlogical printed %d of %d changes: %s", k, n, stderr.String())
	}
	took := time.Since(start)
	walsender := walsenderCPU(ctx, pool) - before
	slices.Sort(lat)
	ms := func(p float64) float64 { return float64(percentile(lat, p).Microseconds()) / 1000 }
	return Result{Events: n, Deliveries: n, Seconds: took.Seconds(), EventsPerSec: float64(n) / took.Seconds(),
		DeliveriesPerSec: float64(n) / took.Seconds(), P50ms: ms(50), P95ms: ms(95), P99ms: ms(99), MaxMs: ms(100),
		Note: fmt.Sprintf("no relay: pg_recvlogical (test_decoding) in its place, latency from the statement's send to the change read from its output; its walsender spent %.0f µs of CPU per event",
			float64(walsender.Microseconds())/float64(n))}, nil
}

// walsenderCPU is the CPU time the server's walsenders have used.
func walsenderCPU(ctx context.Context, pool *pgxpool.Pool) time.Duration {
	var sum time.Duration
	for _, p := range pgProcs(ctx, pool) {
		if p.role == "walsender" {
			sum += p.cpu
		}
	}
	return sum
}

// titleKeyDecoded is how test_decoding prints a row's title.
var titleKeyDecoded = []byte(`title[text]:'`)

// titleNanos reads the commit time the load wrote into a decoded row's
// title.
func titleNanos(line []byte) (int64, bool) {
	i := bytes.Index(line, titleKeyDecoded)
	if i < 0 {
		return 0, false
	}
	rest := line[i+len(titleKeyDecoded):]
	j := bytes.IndexByte(rest, '\'')
	if j < 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return v, err == nil
}
