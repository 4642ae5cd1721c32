// Package demo runs the relay end to end on one machine with nothing
// configured: a throwaway PostgreSQL from the local install with the
// reference schema and two sample companies, a local receiver that verifies
// every signature and prints each event, simulated platform activity, and
// the relay itself in between. Cancelling the context cleans everything up.
package demo

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/throwawaypg"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/receiver"
	"github.com/smartmaintenance/relay/service"
)

// Options tune the demo.
type Options struct {
	// Duration stops the demo after this long; 0 runs until cancelled.
	Duration time.Duration
	// Interval is the time between simulated platform actions. Default 700ms.
	Interval time.Duration
	// Verbose shows the relay's own log lines.
	Verbose bool
}

// The demo's webhook secrets: one per company, and the Slack webhook's.
var secrets = map[int64]string{
	1: "kahatex-demo-secret-0123456789",
	2: "nordwerk-demo-secret-0123456789",
	3: "kahatex-slack-demo-secret-0123456789",
}

// Run runs the demo until ctx is done or Duration has passed.
func Run(ctx context.Context, opts Options, stdout, stderr io.Writer) error {
	if opts.Interval <= 0 {
		opts.Interval = 700 * time.Millisecond
	}
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	out := &printer{w: stdout}
	out.printf("starting a throwaway PostgreSQL (wal_level=logical) from the local install...\n")
	pg, err := throwawaypg.Start(ctx, throwawaypg.Options{})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer pg.Stop()
	db, err := pg.CreateDatabase(ctx, platform.Schema, platform.Sample)
	if err != nil {
		return fmt.Errorf("load the reference schema: %w", err)
	}
	url := pg.URL(db)
	out.printf("platform database: %s (reference schema, companies PT Kahatex and Nordwerk GmbH)\n", url)

	recv, err := startReceiver(out)
	if err != nil {
		return err
	}
	defer recv.Close()

	cfg, acc, err := demoConfig(url, recv.URL)
	if err != nil {
		return err
	}

	logOut := io.Discard
	if opts.Verbose {
		logOut = stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
	acc.print(out, recv.URL)

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return service.Run(gctx, cfg, log) })
	g.Go(func() error {
		// Give the relay a moment to create its slot: changes before that
		// are, by design, not delivered.
		if err := WaitForSlot(gctx, pool, cfg.Replication.Slot); err != nil {
			return err
		}
		return Simulate(gctx, pool, opts.Interval)
	})
	err = g.Wait()
	received, _, rejected := recv.Counts()
	delivered := recv.Delivered()
	// Attempts answered 503 on purpose were retried; only what the
	// receiver accepted counts as delivered.
	out.printf("\n%d deliveries delivered with a verified signature; %d attempts answered 503 on purpose (retried), %d failed verification\n",
		delivered, received-delivered-rejected, rejected)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return nil
	}
	return err
}

// access is how a person reaches this run's admin API: its address and the
// tokens made for this run only.
type access struct {
	adminAddr, companyToken, operatorToken string
}

// demoConfig is the relay's configuration for the demo: the platform
// database at url, three webhooks to the receiver (one per sample company,
// and PT Kahatex's Slack-format one for critical repair requests only)
// at receiverURL, retries quick enough to watch, and the admin API on a
// free local port with tokens and a secrets key for this run only.
func demoConfig(url, receiverURL string) (*config.Config, access, error) {
	cfg := config.Default()
	cfg.Database.URL = url
	cfg.Delivery.RetrySchedule = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	cfg.Delivery.PollInterval = 200 * time.Millisecond
	// The demo's receiver is local; the relay refuses loopback unless told.
	cfg.Delivery.AllowNetworks = []string{"127.0.0.0/8", "::1"}
	cfg.Webhooks.Endpoints = []config.Webhook{
		{CompanyID: 1, Name: "Kahatex CMMS bridge", URL: receiverURL + "/kahatex", Secret: secrets[1], Active: true,
			Events: []string{"task.assigned", "task.completed", "task.approved", "task.rejected", "repair_request.created",
				"repair_request.updated", "shutdown.reported", "shutdown.resolved", "user.created", "user.deactivated", "audit.exported"}},
		// The guide's "Alert Slack when a Critical repair request is
		// filed": a Slack message, for critical requests only.
		{CompanyID: 1, Name: "Slack #maintenance (critical only)", URL: receiverURL + "/kahatex-slack", Secret: secrets[3], Active: true,
			Events: []string{"repair_request.created"}, Format: "slack", Filter: `data.priority == "critical"`},
		{CompanyID: 2, Name: "Nordwerk ops dashboard", URL: receiverURL + "/nordwerk", Secret: secrets[2], Active: true,
			Headers: map[string]string{"Authorization": "Bearer demo-token"},
			Events:  []string{"task.completed", "repair_request.created", "shutdown.reported", "shutdown.resolved"}},
	}
	// The admin API on a free local port, with a token for this run only,
	// and webhook secrets encrypted at rest with a key for this run only.
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, access{}, err
	}
	// Tokens look like the ones relay token prints. The company admin's is
	// the one to try the README's examples with: it acts for PT Kahatex
	// without naming the company; the operator's sees every company.
	companyToken, operatorToken := "rat_"+randomText(32), "rat_"+randomText(32)
	cfg.Admin = config.Admin{Listen: adminAddr, Tokens: []config.AdminToken{
		{Name: "demo-kahatex-admin", CompanyID: 1, TokenSHA256: admin.TokenHash(companyToken)},
		{Name: "demo-operator", Operator: true, TokenSHA256: admin.TokenHash(operatorToken)},
	}}
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	cfg.Secrets.Key = base64.StdEncoding.EncodeToString(key)
	if err := cfg.Validate(); err != nil {
		return nil, access{}, err
	}
	return cfg, access{adminAddr: adminAddr, companyToken: companyToken, operatorToken: operatorToken}, nil
}

// print tells where the receiver and the admin API are, with the tokens to
// try them.
func (a access) print(out *printer, receiverURL string) {
	out.printf("receiver: %s (verifies X-SMTM-Signature with the demo webhook's secret, so a webhook you add at this URL is answered 401; answers 503 to some first attempts to show retries, which the demo makes after 1, 2 and 4 s instead of the guide's 1, 5, 25, 125 and 625)\n", receiverURL)
	out.printf("admin API: http://%s\n", a.adminAddr)
	out.printf("  token of PT Kahatex's company admin (company 1): %s\n", a.companyToken)
	out.printf("  operator token (every company; webhooks create needs --company): %s\n", a.operatorToken)
	out.printf("webhooks page: http://%s/ui/ (sign in with the PT Kahatex admin token %s)\n", a.adminAddr, a.companyToken)
	out.printf("in another terminal, try the README's \"Admin API and CLI\" examples:\n")
	out.printf("  export RELAY_ADMIN_URL=http://%s RELAY_ADMIN_TOKEN=%s\n", a.adminAddr, a.companyToken)
	out.printf("  go run ./cmd/relay webhooks list\n")
	out.printf("relay: streaming changes of tasks, repair_requests, shutdowns, users, activity_log_exports; Ctrl-C stops and cleans up\n\n")
}

type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	fmt.Fprintf(p, format, args...)
}

// Write lets the receiver print through the same lock.
func (p *printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}

// demoReceiver is the sample receiver on a loopback port.
type demoReceiver struct {
	*http.Server
	*receiver.Handler
	URL string
}

func startReceiver(out io.Writer) (*demoReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start receiver: %w", err)
	}
	h := receiver.New(map[string]string{"/kahatex": secrets[1], "/kahatex-slack": secrets[3], "/nordwerk": secrets[2]}, 7, out)
	r := &demoReceiver{Handler: h, URL: "http://" + ln.Addr().String()}
	r.Server = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go r.Serve(ln) //nolint:errcheck // ends with Close
	return r, nil
}

// WaitForSlot waits until a relay streams the slot from a recorded starting
// point: changes committed before that point are, by design, never
// delivered.
func WaitForSlot(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	for {
		ready, err := slotReady(ctx, pool, slot)
		if err != nil {
			return err
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slotReady reports whether the slot is streamed and, when the relay keeps
// its state in this database, its starting point is recorded: the slot is
// active already while it is being created, and changes committed before
// its consistent point are not delivered.
func slotReady(ctx context.Context, pool *pgxpool.Pool, slot string) (bool, error) {
	var active, hasState bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active),
			to_regclass('relay.checkpoints') IS NOT NULL`, slot).Scan(&active, &hasState)
	if err != nil || !active || !hasState {
		return active && err == nil, err
	}
	var ready bool
	err = pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM relay.checkpoints WHERE slot = $1 AND state = 'ready')`, slot).Scan(&ready)
	return ready, err
}

// Simulate performs random platform actions on a database with the
// reference schema and sample companies, as the platform's users would, one
// every interval until ctx is done.
func Simulate(ctx context.Context, pool *pgxpool.Pool, every time.Duration) error {
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	techs := map[int64][]int64{1: {3, 4}, 2: {7}}
	assets := map[int64][]int64{1: {1, 2}, 2: {3, 4}}
	supervisors := map[int64]int64{1: 2, 2: 6}
	pick := func(xs []int64) int64 { return xs[rng.IntN(len(xs))] }
	titles := []string{"Replace drive belt", "Lubricate bearings", "Inspect pressure valve", "Calibrate sensor", "Clean filter"}
	t := time.NewTicker(every)
	defer t.Stop()
	for step := 0; ; step++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		c := int64(1 + step%2)
		var err error
		choice := rng.IntN(9)
		if step == 0 {
			// A critical repair request of PT Kahatex first, so that the
			// Slack webhook's message shows early.
			choice = 2
		}
		switch choice {
		case 0, 1:
			// A supervisor creates and assigns a task; the technician completes
			// it; the supervisor approves or rejects it.
			var id int64
			err = pool.QueryRow(ctx, `INSERT INTO tasks (company_id, asset_id, title, priority, status, technician_id, assigned_by, due_at)
				VALUES ($1, $2, $3, $4, 'assigned', $5, $6, now() + interval '2 days') RETURNING id`,
				c, pick(assets[c]), titles[rng.IntN(len(titles))], []string{"low", "medium", "high", "critical"}[rng.IntN(4)],
				pick(techs[c]), supervisors[c]).Scan(&id)
			if err == nil {
				_, err = pool.Exec(ctx, `UPDATE tasks SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = $1`, id)
			}
			if err == nil {
				status := []string{"approved", "rejected"}[rng.IntN(2)]
				_, err = pool.Exec(ctx, `UPDATE tasks SET status = $2, reviewed_by = $3, reviewed_at = now(),
					rejection_reason = CASE WHEN $2 = 'rejected' THEN 'Photo of the part missing' END WHERE id = $1`, id, status, supervisors[c])
			}
		case 2:
			priority := []string{"high", "critical"}[rng.IntN(2)]
			if step == 0 {
				priority = "critical"
			}
			_, err = pool.Exec(ctx, `INSERT INTO repair_requests (company_id, asset_id, title, priority, requested_by)
				VALUES ($1, $2, 'Strange noise from gearbox', $3, $4)`, c, pick(assets[c]), priority, pick(techs[c]))
		case 3:
			_, err = pool.Exec(ctx, `UPDATE repair_requests SET status = 'in_progress', updated_by = $2, updated_at = now()
				WHERE id = (SELECT max(id) FROM repair_requests WHERE company_id = $1 AND status = 'open')`, c, supervisors[c])
		case 4:
			_, err = pool.Exec(ctx, `INSERT INTO shutdowns (company_id, asset_id, reason, reported_by) VALUES ($1, $2, 'Overheating', $3)`,
				c, pick(assets[c]), pick(techs[c]))
		case 5:
			_, err = pool.Exec(ctx, `UPDATE shutdowns SET status = 'resolved', resolved_at = now(), resolved_by = $2, resolution = 'Fan replaced'
				WHERE id = (SELECT min(id) FROM shutdowns WHERE company_id = $1 AND status = 'open')`, c, supervisors[c])
		case 6:
			_, err = pool.Exec(ctx, `INSERT INTO users (company_id, email, full_name, role, created_by)
				VALUES ($1, 'new' || floor(random() * 1e6)::int || '@example.com', 'New Technician', 'technician', $2)`, c, supervisors[c])
		case 7:
			_, err = pool.Exec(ctx, `UPDATE users SET active = false, deactivated_at = now(), deactivated_by = $2
				WHERE id = (SELECT max(id) FROM users WHERE company_id = $1 AND active AND id > 7)`, c, supervisors[c])
		case 8:
			_, err = pool.Exec(ctx, `INSERT INTO activity_log_exports (company_id, exported_by, format, range_from, range_to, row_count)
				VALUES ($1, $2, 'csv', now() - interval '30 days', now(), 1234)`, c, supervisors[c])
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("simulate platform activity: %w", err)
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the admin API: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// randomText returns n random bytes as URL-safe base64 (at least 32
// characters for n >= 24).
func randomText(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
