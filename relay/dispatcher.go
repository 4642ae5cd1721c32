package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/internal/outage"
	"github.com/smartmaintenance/relay/message"
	"github.com/smartmaintenance/relay/store"
)

// Options configure a Dispatcher. Zero values take the defaults named,
// except for SnippetBytes and DrainTimeout, whose zero means none.
type Options struct {
	// Owner names this dispatcher in the leases it takes. It must be unique
	// among the dispatchers sharing a database. Default: host, process id
	// and a random suffix.
	Owner string
	// Workers is the most attempts in flight at once. Default 128.
	Workers int
	// PerWebhook is the most attempts in flight at once to one webhook, so
	// that a slow endpoint holds at most this many workers. Default 16, and
	// never more than Workers.
	PerWebhook int
	// Timeout bounds one attempt, from connecting to reading the response.
	// Default 30s.
	Timeout time.Duration
	// Schedule is the retry policy. nil means DefaultSchedule; an empty,
	// non-nil Schedule means no retries.
	Schedule Schedule
	// PollInterval is how often the store is polled for due deliveries when
	// nothing else wakes the dispatcher. Default 500ms.
	PollInterval time.Duration
	// Lease is how long a claim holds a delivery. Default 2*Timeout+10s;
	// never less than Timeout+5s, so that an attempt in flight is not
	// claimed again by another dispatcher.
	Lease time.Duration
	// SnippetBytes is how much of a response body is recorded with an
	// attempt, at most 64 KiB; 0 records none.
	SnippetBytes int
	// DrainTimeout bounds how long Run waits for attempts in flight once its
	// context is done; 0 aborts them at once. Aborted attempts are recorded
	// as such (the receiver may have seen them) and their deliveries are
	// given back, due at once, without the attempt counting toward the retry
	// schedule (see store.AttemptResult.Aborted).
	DrainTimeout time.Duration
	// UserAgent is the User-Agent header. Default "SmartMaintenance/1.0".
	UserAgent string
	// Logger receives the dispatcher's logs. Default: discard.
	Logger *slog.Logger
	// Egress decides which addresses may be called. nil refuses every
	// loopback, private, link-local and other special-purpose address (see
	// package egress); the check runs when each connection is made.
	Egress *egress.Policy
	// HTTPSOnly refuses to send to a plain http:// URL (production: true):
	// such an attempt fails with the reason, as the admin API refuses to
	// save the URL, for webhooks saved before the setting was on.
	HTTPSOnly bool
	// Client sends the requests, for tests. It is copied and never follows
	// redirects, and Egress does not apply to it. Default: a client with its
	// own connection pool that applies Egress.
	Client *http.Client
	// TracerProvider traces each attempt as a child of its event's stored
	// trace, with an HTTP client span below it, and sends the W3C
	// traceparent to the receiver. nil traces nothing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the dispatcher's metrics; nil records none.
	MeterProvider metric.MeterProvider
	// MetricHosts is how many receiver hosts the HTTP client metrics name;
	// requests to further hosts are measured as server.address "other".
	MetricHosts int
	// Messages renders the bodies of webhooks whose payload format is slack
	// or teams. nil: the default templates, without links.
	Messages *message.Renderer
}

// Defaults.
const (
	DefaultWorkers      = 128
	DefaultPerWebhook   = 16
	DefaultTimeout      = 30 * time.Second
	DefaultPollInterval = 500 * time.Millisecond
	DefaultUserAgent    = "SmartMaintenance/1.0"
)

func (o Options) withDefaults() Options {
	if o.Owner == "" {
		host, _ := os.Hostname()
		o.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.PerWebhook <= 0 {
		o.PerWebhook = DefaultPerWebhook
	}
	o.PerWebhook = min(o.PerWebhook, o.Workers)
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Schedule == nil {
		o.Schedule = DefaultSchedule
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Lease <= 0 {
		o.Lease = 2*o.Timeout + 10*time.Second
	}
	o.Lease = max(o.Lease, o.Timeout+5*time.Second)
	o.SnippetBytes = min(max(o.SnippetBytes, 0), maxResponseRead)
	o.DrainTimeout = max(o.DrainTimeout, 0)
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// The dispatcher sends the store's rows as they are read (store.Claimed,
// from a claim, a hand-off or a read of held deliveries): a type of its own
// would cost a copy of every delivery between the store's scan and its
// attempt, on the hot path, for no behaviour of its own.

// deliveryStore is what the dispatcher asks of the store: claiming and
// reading the deliveries it sends, recording their attempts, giving back
// what it does not send, and saying that it is sending. *store.Store
// implements it.
type deliveryStore interface {
	Claim(ctx context.Context, req store.ClaimRequest) ([]store.Claimed, error)
	LoadHeld(ctx context.Context, owner string, ids []uuid.UUID, minLease time.Duration) ([]store.Claimed, error)
	RecordAttempts(ctx context.Context, owner string, results []store.AttemptResult) (lost []uuid.UUID, err error)
	ReleaseClaims(ctx context.Context, owner string, ids []uuid.UUID) error
	Heartbeat(ctx context.Context, owner string, within time.Duration) (peers int, err error)
	Leave(ctx context.Context, owner string) error
}

var _ deliveryStore = (*store.Store)(nil)

// Dispatcher sends due deliveries. Create it with New and start it with Run.
type Dispatcher struct {
	st   deliveryStore
	opts Options
	log  *slog.Logger
	send sender
	tel  *telem
	// claimFail logs the claim rounds' failures, one line per outage.
	claimFail *outage.Log
	// wakeup wakes the claim loop (see wake); notice is set by Notify.
	wakeup  chan struct{}
	notice  atomic.Bool
	running atomic.Bool

	// mu guards run and the state below it but emptyClaim and peers, in groups
	// declared with the code that keeps them.
	mu sync.Mutex
	// run is set while Run runs: what a freed slot needs to start the next
	// queued attempt.
	run        *runState
	slotState  // attempts in flight and queued (slots.go)
	paceState  // each webhook's pace, the payload size (claims.go)
	heldState  // held deliveries (handoff.go)
	roundState // what asks for the next claim round (claims.go)
	aheadState // deliveries taken ahead of their store write (ahead.go)
	// emptyClaim is when a claim that left out webhooks with held
	// deliveries last found nothing: the claim loop's own, unguarded (see
	// quietClaimGap).
	emptyClaim time.Time
	// peers is how many other senders share the store (see heartbeats);
	// while there are any, nothing is held beyond a webhook's window.
	peers atomic.Int64
}

// New returns a dispatcher sending the deliveries of st.
func New(st deliveryStore, opts Options) *Dispatcher {
	opts = opts.withDefaults()
	client := newClient(opts.Workers, opts.Egress)
	if opts.Client != nil {
		c := *opts.Client
		c.CheckRedirect = noRedirects
		client = &c
	}
	if opts.TracerProvider != nil || opts.MeterProvider != nil {
		var err error
		if client.Transport, err = instrumentTransport(client.Transport, opts.TracerProvider, opts.MeterProvider, opts.MetricHosts); err != nil {
			// The requests are still sent; their metrics are missing.
			opts.Logger.Warn("HTTP client metrics not available", "error", err)
		}
	}
	tel, err := newTelem(opts.TracerProvider, opts.MeterProvider)
	if err != nil {
		// The instruments still work (as no-ops); the metrics are missing.
		opts.Logger.Warn("delivery metrics not available", "error", err)
	}
	d := &Dispatcher{
		tel:       tel,
		st:        st,
		opts:      opts,
		log:       opts.Logger,
		claimFail: outage.New(opts.Logger, slog.LevelWarn, "claim due deliveries"),
		send: sender{
			client:       client,
			userAgent:    opts.UserAgent,
			timeout:      opts.Timeout,
			snippetBytes: opts.SnippetBytes,
			httpsOnly:    opts.HTTPSOnly,
			messages:     opts.Messages,
			renderWarn:   renderWarner(opts.Logger),
		},
		wakeup: make(chan struct{}, 1),
		slotState: slotState{perHook: map[int64]int{}, queue: map[int64][]queuedDelivery{}, sending: map[uuid.UUID]struct{}{},
			perCompany: map[int64]int{}},
		paceState:  paceState{pace: map[int64]time.Duration{}},
		heldState:  heldState{held: map[int64][]heldBatch{}},
		roundState: roundState{behind: map[int64]bool{}},
	}
	err = observeAhead(opts.MeterProvider, func() (int, int, int) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.inflight, d.queued, d.nHeld
	}, func() time.Duration {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.heldBack
	})
	if err != nil {
		opts.Logger.Warn("delivery metrics not available", "error", err)
	}
	return d
}

// Run sends due deliveries until ctx is done. Then it stops claiming, waits
// up to DrainTimeout for the attempts in flight, aborts those still running,
// records the results it has (the aborted attempts as aborted, which gives
// their deliveries back), and returns.
// It returns an error only when it is already running.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("relay: dispatcher already running")
	}
	defer d.running.Store(false)

	// Store work and sends outlive ctx: the drain needs them.
	dbCtx, stopDB := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDB()
	sendCtx, abortSends := context.WithCancel(context.WithoutCancel(ctx))
	defer abortSends()

	// Each attempt's result is handed over before its worker slot is freed,
	// so the buffer bounds the results waiting for the store.
	results := make(chan finished, d.opts.Workers)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.recordLoop(dbCtx, results)
	}()

	beating := make(chan struct{})
	go func() {
		defer close(beating)
		d.heartbeats(ctx, dbCtx)
	}()
	defer func() {
		<-beating
		if err := d.st.Leave(dbCtx, d.opts.Owner); err != nil {
			d.log.Warn("sender not unregistered; its peers see it gone within seconds", "error", err)
		}
	}()

	var attempts sync.WaitGroup
	d.mu.Lock()
	d.run = &runState{dbCtx: dbCtx, sendCtx: sendCtx, attempts: &attempts, results: results}
	d.mu.Unlock()
	d.claimLoop(ctx, dbCtx, sendCtx, &attempts, results)
	d.stopTaking(dbCtx)
	if stop := d.drain(&attempts, abortSends, stopDB); stop != nil {
		defer stop.Stop()
	}
	close(results)
	stop := time.AfterFunc(flushGrace, stopDB)
	defer stop.Stop()
	<-recorded
	d.send.client.CloseIdleConnections()
	return nil
}

// stopTaking starts the drain: no new attempts from here on, and what
// waits in the queues or is held is given back.
func (d *Dispatcher) stopTaking(dbCtx context.Context) {
	d.mu.Lock()
	d.run.draining = true
	var waiting []uuid.UUID
	for id, q := range d.queue {
		for _, qc := range q {
			if d.letGoLocked(qc.c.ID) {
				waiting = append(waiting, qc.c.ID)
			}
		}
		delete(d.queue, id)
	}
	d.aheadMovedLocked()
	d.queued = 0
	d.roomAheadLocked(0, true)
	d.mu.Unlock()
	waiting = append(waiting, d.dropHeld()...)
	d.giveBack(dbCtx, waiting)
}

// drain waits up to DrainTimeout for the attempts in flight, then aborts
// those still running and waits for them to hand over their results. When
// it aborted, it returns the timer that stops the store work flushGrace
// later (stopDB), which the caller stops once it no longer needs it: a
// store that does not answer must not hold the workers, which may be
// waiting to hand over their results.
func (d *Dispatcher) drain(attempts *sync.WaitGroup, abortSends, stopDB context.CancelFunc) *time.Timer {
	drained := make(chan struct{})
	go func() {
		attempts.Wait()
		close(drained)
	}()
	timeout := time.NewTimer(d.opts.DrainTimeout)
	defer timeout.Stop()
	select {
	case <-drained:
		return nil
	default:
	}
	select {
	case <-drained:
		return nil
	case <-timeout.C:
	}
	d.mu.Lock()
	n := d.inflight
	d.mu.Unlock()
	d.log.Warn("drain timed out: aborting attempts in flight, recording them as aborted and giving their deliveries back",
		"attempts", n, "drain_timeout", d.opts.DrainTimeout)
	abortSends()
	stop := time.AfterFunc(flushGrace, stopDB)
	<-drained
	return stop
}

// heartbeatEvery is how often a dispatcher says it is sending, and
// peerWithin how recently another must have said so to count as a peer.
const (
	heartbeatEvery = time.Second
	peerWithin     = 5 * heartbeatEvery
)

// heartbeats records that this dispatcher is sending, every
// heartbeatEvery until ctx is done, and keeps count of its peers. While
// it has peers, it gives back what it holds as ids (held when it was
// alone, or by a write that began before they came), for any of them to
// claim. While the store cannot be asked, it holds nothing new, as with
// peers, but keeps what it holds.
func (d *Dispatcher) heartbeats(ctx, dbCtx context.Context) {
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		n, err := d.st.Heartbeat(dbCtx, d.opts.Owner, peerWithin)
		if err != nil {
			d.log.Debug("sender heartbeat failed", "error", err)
			n = 1
		}
		old := d.peers.Swap(int64(n))
		if old != int64(n) && err == nil {
			d.log.Info("relays sending from this store", "others", n)
		}
		if err == nil && n > 0 {
			d.giveBack(dbCtx, d.dropHeld())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
