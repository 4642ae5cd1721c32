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

	"github.com/smartmaintenance/relay/internal/syncbuf"
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
	n := b.scale(60_000, 5_000)
	lat := make([]int64, 0, n) // µs, as the receiver keeps them
	var mu sync.Mutex
	got := make(chan struct{})
	client, err := b.startLogicalClient(ctx, db, pool, func(now time.Time, line []byte) {
		sent, ok := titleNanos(line)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if len(lat) == n {
			return
		}
		lat = append(lat, now.Sub(time.Unix(0, sent)).Microseconds())
		if len(lat) == n {
			close(got)
		}
	})
	if err != nil {
		return Result{}, err
	}
	defer client.stop()
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
		return Result{}, fmt.Errorf("pg_recvlogical printed %d of %d changes: %s", k, n, client.stderr())
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

// logicalClient is pg_recvlogical streaming a test_decoding slot of its
// own, each line of its output handed to a function of the bench's as it
// is read.
type logicalClient struct {
	cancel context.CancelFunc
	cmd    *exec.Cmd
	errOut *syncbuf.Buffer
	done   chan struct{} // closed when its output has been read to the end
	drop   func()
}

// startLogicalClient creates a test_decoding slot on db and starts
// pg_recvlogical on it, handing each line it prints to line, with the time
// it was read, on a goroutine of its own. It returns once the client
// streams: a row written before that is decoded all the same, but late.
func (b *run) startLogicalClient(ctx context.Context, db string, pool *pgxpool.Pool, line func(time.Time, []byte)) (*logicalClient, error) {
	slot := "client_" + db
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		return nil, fmt.Errorf("create the slot: %w", err)
	}
	c := &logicalClient{errOut: new(syncbuf.Buffer), done: make(chan struct{}), drop: func() {
		pool.Exec(context.WithoutCancel(ctx), `SELECT pg_drop_replication_slot($1)`, slot)
	}}
	cctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	c.cmd = exec.CommandContext(cctx, b.pg.Program("pg_recvlogical"), "-d", b.clientURL(b.pg, db), "-S", slot,
		"--start", "--fsync-interval", "0", "--file", "-")
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		cancel()
		c.drop()
		return nil, err
	}
	c.cmd.Stderr = c.errOut
	if err := c.cmd.Start(); err != nil {
		cancel()
		c.drop()
		return nil, fmt.Errorf("start pg_recvlogical: %w", err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line(time.Now(), sc.Bytes())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		err := pool.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		if err == nil && active {
			if err := b.checkTransport(ctx, pool, slot, "pg_recvlogical"); err != nil {
				c.stop()
				return nil, err
			}
			return c, nil
		}
		if err == nil && time.Now().After(deadline) {
			err = fmt.Errorf("pg_recvlogical did not start streaming: %s", c.stderr())
		}
		if err != nil {
			c.stop()
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stderr is what the client has printed to its standard error.
func (c *logicalClient) stderr() string {
	return c.errOut.String()
}

// stop ends the client, waits for it and for its output's reader, and
// drops its slot.
func (c *logicalClient) stop() {
	c.cancel()
	_ = c.cmd.Wait()
	<-c.done
	c.drop()
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
