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
}

// Defaults.
const (
	DefaultWorkers      = 128
	DefaultPerWebhook   = 16
	DefaultTimeout      = 30 * time.Second
	DefaultPollInterval = 500 * time.Millisecond
	DefaultUserAgent    = "SmartMaintenance/1.0"
)

// maxClaim is the most deliveries one claim asks for.
const maxClaim = 500

// maxRecordBatch is the most attempts recorded in one statement.
const maxRecordBatch = 500

// recordLinger is how long a finished attempt waits for others to be
// recorded with it. At a steady trickle each attempt was recorded by a
// statement and a commit of its own, which cost PostgreSQL more than the
// recording itself; the receiver has its request by then, so the wait
// delays only what the admin API shows, and a crash in it only means
// re-sending those attempts under the same delivery ids, as for any
// attempt not yet recorded.
const recordLinger = 2 * time.Millisecond

// flushGrace bounds the store work left after the drain: recording the last
// results, aborted attempts included, and giving back the claims of queued
// deliveries. The store work runs in a context of its own, which the
// shutdown does not cancel, so that it is not cut short as the attempts
// were.
const flushGrace = 5 * time.Second

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
	st      deliveryStore
	opts    Options
	log     *slog.Logger
	send    sender
	tel     *telem
	notify  chan struct{}
	wake    chan struct{}
	running atomic.Bool

	mu       sync.Mutex
	inflight int
	perHook  map[int64]int
	// pace is each webhook's recent attempt duration (see windowLocked).
	pace map[int64]time.Duration
	// bodySize is the recent payload size of held deliveries (see roomLocked).
	bodySize int
	// queue holds claimed deliveries of a webhook waiting for one of its
	// slots (prefetch), oldest first; queued counts them all.
	queue  map[int64][]queuedClaim
	queued int
	// run is set while Run runs: what a freed slot needs to start the next
	// queued attempt.
	run *runState
	// retryAt is the earliest time a retry this dispatcher recorded is due.
	retryAt time.Time
	// held holds the deliveries leased to this dispatcher as they were
	// stored but not read yet (store.Leased.Held), webhook by webhook,
	// oldest first; nHeld counts them all. A claim round reads a webhook's
	// next ones (store.LoadHeld) once its window has room for them.
	held  map[int64][]heldBatch
	nHeld int
	// heldLooked is when a claim last looked for deliveries due before a
	// webhook's held ones (see capacity); emptyClaim when a claim that left
	// out webhooks with held deliveries last found nothing (the claim loop's
	// own, see quietClaimGap).
	heldLooked, emptyClaim time.Time
	// behind holds the webhooks the last claim round left out because
	// their windows were more than half full: they may have due
	// deliveries, worth a claim once their windows drain. starved is set
	// when a round stopped for want of room at all. wantClaim asks the
	// claim loop, woken by a freed slot, for a round.
	behind    map[int64]bool
	starved   bool
	wantClaim bool
	// peers is how many other senders share the store (see heartbeats);
	// while there are any, nothing is held beyond a webhook's window.
	peers atomic.Int64
}

// heldBatch is some held deliveries of one webhook from one store
// transaction.
type heldBatch struct {
	ids []uuid.UUID
	// due is their next attempt time, by the database's clock.
	due time.Time
	// at is when their leases began at the latest.
	at time.Time
}

// queuedClaim is a claimed delivery waiting for a slot of its webhook.
type queuedClaim struct {
	c  *store.Claimed
	at time.Time // when it was claimed
}

// runState is what attempts started outside the claim loop need.
type runState struct {
	dbCtx, sendCtx context.Context
	attempts       *sync.WaitGroup
	results        chan<- finished
	draining       bool
}

// prefetch is how many deliveries per slot of a webhook are held ahead at
// most (leased as they are stored, or claimed), so that a busy endpoint's
// next attempt starts as soon as a slot frees, without a claim query each
// time. With the default PerWebhook that is 512 deliveries a webhook: over
// a second of its traffic even at the fan-out scenario's rate, so that a
// relay falling briefly behind keeps taking new deliveries from the store
// writes instead of switching to claims, which cost PostgreSQL a locked
// update per delivery and fell further behind (the fan-out scenario's
// p99 went from 5.7 s to 0.6 s when this went from 8 to 32). A slow
// webhook holds less: see windowLocked.
const prefetch = 32

// minAhead is how many deliveries the dispatcher may hold in flight and
// queued together however few Workers there are (Workers × prefetch when
// that is more), unless their payloads are large (aheadBytes): with many
// webhooks, that many deliveries (each its payload and about 300 bytes)
// keep every endpoint's window fed straight from the store writes, without
// claims. The backlog scenario's peak RSS stays at 80 MB.
const minAhead = 16384

// minClaimGap spaces the claim rounds that freed slots trigger; Notify and
// the poll timer are not delayed.
const minClaimGap = 2 * time.Millisecond

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
		client.Transport = instrumentTransport(client.Transport, opts.TracerProvider, capHosts(opts.MeterProvider, opts.MetricHosts))
	}
	tel, err := newTelem(opts.TracerProvider, opts.MeterProvider)
	if err != nil {
		// The instruments still work (as no-ops); the metrics are missing.
		opts.Logger.Warn("delivery metrics not available", "error", err)
	}
	d := &Dispatcher{
		tel:  tel,
		st:   st,
		opts: opts,
		log:  opts.Logger,
		send: sender{
			client:       client,
			userAgent:    opts.UserAgent,
			timeout:      opts.Timeout,
			snippetBytes: opts.SnippetBytes,
		},
		notify:  make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		perHook: map[int64]int{},
		pace:    map[int64]time.Duration{},
		queue:   map[int64][]queuedClaim{},
		held:    map[int64][]heldBatch{},
		behind:  map[int64]bool{},
	}
	err = observeAhead(opts.MeterProvider, func() (int, int, int) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.inflight, d.queued, d.nHeld
	})
	if err != nil {
		opts.Logger.Warn("delivery metrics not available", "error", err)
	}
	return d
}

// Notify wakes the dispatcher to look for due deliveries now rather than at
// its next poll. It never blocks; call it after committing new deliveries.
func (d *Dispatcher) Notify() {
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// Reserve says how many new deliveries the dispatcher can take at once, as
// a lease request for store.Writer.WriteLeasing, given what the open store
// transaction has leased to it already (open; nil for none): its free
// capacity within each webhook's window, ready to send, and beyond that up
// to maxHeld held as ids, within each webhook's hold window. A webhook
// that has held deliveries gets no new ready ones, so that its deliveries
// are sent in the order they were stored. It returns false when the
// dispatcher is not running.
func (d *Dispatcher) Reserve(open *store.Leased) (store.ClaimRequest, bool) {
	if open == nil {
		open = &store.Leased{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run == nil || d.run.draining {
		return store.ClaimRequest{}, false
	}
	most := d.opts.PerWebhook * prefetch
	req := store.ClaimRequest{
		Owner:          d.opts.Owner,
		Limit:          min(d.roomLocked()-len(open.Ready), maxClaim),
		Lease:          d.opts.Lease,
		PerWebhook:     most,
		Busy:           map[int64]int{},
		Hold:           maxHeld - d.nHeld - len(open.Held),
		HoldRoom:       map[int64]int{},
		HoldPerWebhook: maxHeld,
	}
	if d.peers.Load() > 0 {
		req.Hold = 0 // see holdWindowLocked
	}
	if req.Limit <= 0 && req.Hold <= 0 {
		return store.ClaimRequest{}, false
	}
	hooks := map[int64]bool{}
	for id := range d.perHook {
		hooks[id] = true
	}
	for id := range d.queue {
		hooks[id] = true
	}
	for id := range d.pace {
		hooks[id] = true
	}
	for id := range d.held {
		hooks[id] = true
	}
	open.Webhooks(func(id int64) { hooks[id] = true })
	for id := range hooks {
		ready, held := open.Of(id)
		ahead := d.perHook[id] + len(d.queue[id]) + ready
		held += d.heldOfLocked(id)
		window := d.windowLocked(id)
		room := max(window-ahead, 0)
		if held > 0 {
			room = 0 // behind the held ones
		}
		req.Busy[id] = most - room
		req.HoldRoom[id] = max(d.holdWindowLocked(id)-ahead-held-room, 0)
	}
	return req, true
}

// maxHeld is how many deliveries the dispatcher holds as ids at most:
// 16 bytes each (up to twice that while their batches grow), a few MB,
// against 16,384 deliveries with payloads (minAhead).
const maxHeld = 100_000

// holdFor is how much of a webhook's traffic it may have held at most, at
// the pace of its recent attempts: far less than a held delivery may wait
// before its lease is too short to send it (staleAfter), so that what is
// held is sent, not given back.
const holdFor = 15 * time.Second

// holdWindowLocked is how many deliveries webhook may have in flight,
// queued and held together. A webhook whose window is smaller than the
// largest (a slow one) holds nothing beyond it, and no webhook does while
// other relays share the store: what this one cannot send soon is left
// for claims, by any relay, instead of waiting here. A fast one may hold
// what its slots send in holdFor (or half the time a lease allows, if
// less) at its recent pace, and maxHeld while its pace is not known. d.mu
// must be held.
func (d *Dispatcher) holdWindowLocked(webhook int64) int {
	window := d.windowLocked(webhook)
	if window < d.opts.PerWebhook*prefetch || d.peers.Load() > 0 {
		return window
	}
	took, ok := d.pace[webhook]
	if !ok || took <= 0 {
		return maxHeld
	}
	span := min(holdFor, d.staleAfter()/2)
	w := float64(d.opts.PerWebhook) * float64(span) / float64(took)
	return int(min(max(w, float64(window)), maxHeld))
}

// staleAfter is how long a leased delivery may wait in this dispatcher for
// its attempt: an attempt started later might outlast its lease.
func (d *Dispatcher) staleAfter() time.Duration {
	return d.opts.Lease - d.opts.Timeout - 5*time.Second
}

// heldOfLocked is the number of webhook's held deliveries. d.mu must be held.
func (d *Dispatcher) heldOfLocked(webhook int64) int {
	n := 0
	for _, b := range d.held[webhook] {
		n += len(b.ids)
	}
	return n
}

// Handoff takes deliveries leased to this dispatcher when they were stored
// (see Reserve), once their store transaction has committed: each ready one
// starts at once if its webhook has a free slot, else waits in its queue as
// a claimed one does; held ones wait until their webhook has room for them.
// A dispatcher that has stopped gives them back. The dispatcher owns them
// from then on: the caller must not touch them.
func (d *Dispatcher) Handoff(l store.Leased) {
	if l.Len() == 0 {
		return
	}
	at := l.At
	if at.IsZero() {
		at = time.Now()
	}
	d.mu.Lock()
	run := d.run
	if run == nil || run.draining {
		d.mu.Unlock()
		ids := make([]uuid.UUID, 0, l.Len())
		for i := range l.Ready {
			ids = append(ids, l.Ready[i].ID)
		}
		for _, h := range l.Held {
			ids = append(ids, h.ID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), flushGrace)
		defer cancel()
		d.giveBack(ctx, ids)
		return
	}
	d.holdLocked(l.Held, l.Due, at)
	d.noteBodiesLocked(l.Ready)
	var start []*store.Claimed
	for i := range l.Ready {
		c := &l.Ready[i]
		if d.inflight < d.opts.Workers && d.perHook[c.WebhookID] < d.opts.PerWebhook {
			d.inflight++
			d.perHook[c.WebhookID]++
			run.attempts.Add(1)
			start = append(start, c)
			continue
		}
		d.queue[c.WebhookID] = append(d.queue[c.WebhookID], queuedClaim{c: c, at: at})
		d.queued++
	}
	want := len(l.Held) > 0
	if want {
		d.wantClaim = true
	}
	d.mu.Unlock()
	if want {
		d.poke()
	}
	for _, c := range start {
		go d.attempt(run.sendCtx, c, run.attempts, run.results)
	}
}

// holdLocked adds held deliveries to their webhooks' batches. d.mu must be held.
func (d *Dispatcher) holdLocked(held []store.Held, due, at time.Time) {
	if len(held) == 0 {
		return
	}
	batch := map[int64]int{} // webhook → its batch of this handoff
	for _, h := range held {
		i, ok := batch[h.WebhookID]
		if !ok {
			i = len(d.held[h.WebhookID])
			batch[h.WebhookID] = i
			d.held[h.WebhookID] = append(d.held[h.WebhookID], heldBatch{due: due, at: at})
		}
		b := &d.held[h.WebhookID][i]
		b.ids = append(b.ids, h.ID)
	}
	d.nHeld += len(held)
}

// dropHeld forgets every held delivery and returns their ids, to be
// given back.
func (d *Dispatcher) dropHeld() []uuid.UUID {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]uuid.UUID, 0, d.nHeld)
	for id, batches := range d.held {
		for _, b := range batches {
			ids = append(ids, b.ids...)
		}
		delete(d.held, id)
	}
	d.nHeld = 0
	return ids
}

// takeHeldLocked takes the next held deliveries of the webhooks whose windows have
// room for them, up to limit in all: those that can still be sent within
// their leases, with when each lease began, and those that waited too long,
// to be given back. d.mu must be held.
func (d *Dispatcher) takeHeldLocked(limit int) (load []uuid.UUID, at []time.Time, stale []uuid.UUID) {
	oldest := time.Now().Add(-d.staleAfter())
	for id, batches := range d.held {
		if len(load) >= limit {
			break
		}
		window := d.windowLocked(id)
		ahead := d.perHook[id] + len(d.queue[id])
		if ahead > claimAt(window) {
			continue
		}
		want := min(window-ahead, limit-len(load))
		for len(batches) > 0 && want > 0 {
			b := &batches[0]
			n := min(want, len(b.ids))
			if b.at.Before(oldest) {
				stale = append(stale, b.ids[:n]...)
			} else {
				load = append(load, b.ids[:n]...)
				for range n {
					at = append(at, b.at)
				}
				want -= n
			}
			b.ids = b.ids[n:]
			d.nHeld -= n
			if len(b.ids) == 0 {
				batches[0] = heldBatch{}
				batches = batches[1:]
			}
		}
		if len(batches) == 0 {
			delete(d.held, id)
		} else {
			d.held[id] = batches
		}
	}
	return load, at, stale
}

// loadHeld reads the next held deliveries of the webhooks that have room
// for them (see takeHeldLocked) and returns them with when their leases began.
// It gives back those that waited too long and those that cannot be read
// as held any more (their webhook was disabled or deleted, or the lease
// is too short to send them), so that they are due for any sender.
func (d *Dispatcher) loadHeld(ctx context.Context) ([]store.Claimed, []time.Time) {
	d.mu.Lock()
	ids, ats, stale := d.takeHeldLocked(min(d.roomLocked(), maxClaim))
	d.mu.Unlock()
	d.giveBack(ctx, stale)
	if len(ids) == 0 {
		return nil, nil
	}
	got, err := d.st.LoadHeld(ctx, d.opts.Owner, ids, d.opts.Timeout+5*time.Second)
	if err != nil {
		d.log.Error("read held deliveries; giving them back", "deliveries", len(ids), "error", err)
		d.giveBack(ctx, ids)
		return nil, nil
	}
	out := make([]time.Time, len(got))
	var lost []uuid.UUID
	j := 0
	for i := range got { // in the order of ids
		for ids[j] != got[i].ID {
			lost = append(lost, ids[j])
			j++
		}
		out[i] = ats[j]
		j++
	}
	d.giveBack(ctx, append(lost, ids[j:]...))
	return got, out
}

// finished is an attempt's result on its way to the store.
type finished struct {
	claim  *store.Claimed
	result store.AttemptResult
	// span is the attempt's span context, for logging its result.
	span trace.SpanContext
	// aborted attempts are recorded as such (result.Aborted), and their
	// deliveries due again at once.
	aborted bool
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
	// No new attempts from here on: give back what waits in the queues.
	d.mu.Lock()
	d.run.draining = true
	var waiting []uuid.UUID
	for id, q := range d.queue {
		for _, qc := range q {
			waiting = append(waiting, qc.c.ID)
		}
		delete(d.queue, id)
	}
	d.queued = 0
	d.mu.Unlock()
	waiting = append(waiting, d.dropHeld()...)
	d.giveBack(dbCtx, waiting)

	drained := make(chan struct{})
	go func() {
		attempts.Wait()
		close(drained)
	}()
	drain := time.NewTimer(d.opts.DrainTimeout)
	defer drain.Stop()
	select {
	case <-drained:
	default:
		select {
		case <-drained:
		case <-drain.C:
			d.mu.Lock()
			n := d.inflight
			d.mu.Unlock()
			d.log.Warn("drain timed out: aborting attempts in flight, recording them as aborted and giving their deliveries back",
				"attempts", n, "drain_timeout", d.opts.DrainTimeout)
			abortSends()
			// A store that does not answer must not hold the workers, which
			// may be waiting to hand over their results.
			stop := time.AfterFunc(flushGrace, stopDB)
			defer stop.Stop()
			<-drained
		}
	}
	close(results)
	stop := time.AfterFunc(flushGrace, stopDB)
	defer stop.Stop()
	<-recorded
	d.send.client.CloseIdleConnections()
	return nil
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

// claimLoop claims due deliveries and starts their attempts until ctx is
// done. It wakes on Notify, on its poll timer, when a retry it recorded
// falls due, and when a worker slot frees while deliveries may be waiting.
func (d *Dispatcher) claimLoop(ctx, dbCtx, sendCtx context.Context, attempts *sync.WaitGroup, results chan<- finished) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	// spaced: the timer runs for a wake's round, not a poll. fresh: a
	// notice, a poll or a retry's time asks for the next round, so its
	// claim runs whatever the claim before found (see quietClaimGap).
	spaced, fresh := false, false
	for {
		claim, fromWake := true, false
		select {
		case <-ctx.Done():
			return
		case <-d.notify:
			fresh = true
		case <-timer.C:
			fromWake = spaced
			fresh = fresh || !spaced
		case <-d.wake:
			want, retry := d.takeWant(), d.retryDue()
			claim, fromWake = want || retry, true
			fresh = fresh || retry
		}
		if claim && fromWake {
			// Freed slots wake the loop often; space their claim rounds.
			if wait := minClaimGap - time.Since(last); wait > 0 {
				timer.Reset(wait)
				spaced = true
				continue
			}
		}
		spaced = false
		if claim {
			last = time.Now()
			if fresh {
				d.emptyClaim, fresh = time.Time{}, false
			}
			d.claimRound(ctx, dbCtx, sendCtx, attempts, results)
		}
		timer.Reset(d.nextPoll())
	}
}

// takeWant reports whether a freed slot asked for a claim round, and
// forgets the request.
func (d *Dispatcher) takeWant() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := d.wantClaim
	d.wantClaim = false
	return want
}

// nextPoll returns how long to sleep: the poll interval, or less when a
// recorded retry falls due sooner.
func (d *Dispatcher) nextPoll() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	wait := d.opts.PollInterval
	if !d.retryAt.IsZero() {
		wait = min(wait, max(time.Until(d.retryAt), 0))
	}
	return wait
}

// retryDue reports whether a recorded retry is due, and forgets it if so.
func (d *Dispatcher) retryDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retryAt.IsZero() || time.Now().Before(d.retryAt) {
		return false
	}
	d.retryAt = time.Time{}
	return true
}

// claimRound claims and starts deliveries until none are due or no slot is
// free, and notes what it left behind (see Dispatcher.behind).
func (d *Dispatcher) claimRound(ctx, dbCtx, sendCtx context.Context, attempts *sync.WaitGroup, results chan<- finished) {
	d.mu.Lock()
	if !d.retryAt.IsZero() && !time.Now().Before(d.retryAt) {
		d.retryAt = time.Time{}
	}
	d.mu.Unlock()
	for ctx.Err() == nil {
		free, busy, exclude, before, skip := d.capacity()
		if free == 0 {
			d.mu.Lock()
			if d.roomLocked() > 0 {
				// Attempts finished since capacity looked: they did not
				// know to ask for a round.
				d.mu.Unlock()
				continue
			}
			d.starved = true
			d.mu.Unlock()
			return
		}
		var claimed []store.Claimed
		if len(skip) == 0 || time.Since(d.emptyClaim) >= min(quietClaimGap, d.opts.PollInterval) {
			var err error
			claimed, err = d.st.Claim(dbCtx, store.ClaimRequest{
				Owner:      d.opts.Owner,
				Limit:      min(free, maxClaim),
				Lease:      d.opts.Lease,
				Exclude:    append(exclude, skip...),
				PerWebhook: d.opts.PerWebhook * prefetch,
				Busy:       busy,
				Before:     before,
			})
			if err != nil {
				d.log.Error("claim due deliveries", "error", err)
				return // the next poll tries again
			}
			if len(claimed) == 0 && len(skip) > 0 {
				d.emptyClaim = time.Now()
			}
		}
		var at []time.Time
		if len(claimed) == 0 {
			// Nothing due before the held deliveries: read those next.
			claimed, at = d.loadHeld(dbCtx)
		}
		if len(claimed) == 0 {
			d.mu.Lock()
			d.starved = false
			clear(d.behind)
			drained := false
			for _, id := range exclude {
				if !d.fullLocked(id) {
					// Its window drained while the claim ran, and the
					// attempts that drained it did not know to ask for a
					// round: ask now.
					drained = true
					continue
				}
				d.behind[id] = true
			}
			if drained {
				d.wantClaim = true
			}
			d.mu.Unlock()
			if drained {
				d.poke()
			}
			return
		}
		d.mu.Lock()
		d.noteBodiesLocked(claimed)
		d.mu.Unlock()
		now := time.Now()
		for i := range claimed {
			c := &claimed[i]
			if d.acquire(c.WebhookID) {
				attempts.Add(1)
				go d.attempt(sendCtx, c, attempts, results)
				continue
			}
			// Its webhook is at its limit: it starts when a slot frees.
			qc := queuedClaim{c: c, at: now}
			if at != nil {
				qc.at = at[i]
			}
			d.mu.Lock()
			d.queue[c.WebhookID] = append(d.queue[c.WebhookID], qc)
			d.queued++
			d.mu.Unlock()
		}
	}
}

// quietClaimGap is how long after a claim that found nothing the next one
// waits while held deliveries are being read, unless a notice (a write
// that left deliveries to be claimed, a re-fire), a poll or a retry's time
// starts the round: rounds then come as fast as windows drain (a hundred a
// second in a burst), and each would ask the store again for what it just
// said it does not have.
const quietClaimGap = 50 * time.Millisecond

// claimAt is how full a webhook's window of in-flight and queued
// deliveries may be for a claim to include it: a quarter free, so that a
// claim brings a batch, early enough that the queue does not run dry while
// the claim runs.
func claimAt(window int) int { return window * 3 / 4 }

// capacity returns how many more deliveries may be claimed (in flight and
// queued together), the deliveries each webhook has in flight or queued,
// the webhooks not to claim for now (those with less than a quarter of
// their window free, so that a claim brings a webhook a batch, not one
// delivery), and for the webhooks with held deliveries either the time
// before which a claim looks (store.ClaimRequest.Before) or, in skip, that
// the claim leaves them out.
//
// A claim looks for what is due before a webhook's held deliveries (a
// retry come due, a re-fire, another relay's write) at most once per poll
// interval, as a poll would: in between, their held deliveries are read
// instead. Looking every round walked the webhook's sent deliveries in the
// index again and again while a burst drained, for nothing.
func (d *Dispatcher) capacity() (free int, busy map[int64]int, exclude []int64, before map[int64]time.Time, skip []int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	free, busy, exclude = d.capacityLocked()
	if len(d.held) == 0 {
		return free, busy, exclude, nil, nil
	}
	now := time.Now()
	if now.Sub(d.heldLooked) < d.opts.PollInterval {
		for id := range d.held {
			skip = append(skip, id)
		}
		return free, busy, exclude, nil, skip
	}
	d.heldLooked = now
	before = make(map[int64]time.Time, len(d.held))
	for id, batches := range d.held {
		before[id] = batches[0].due
	}
	return free, busy, exclude, before, nil
}

// capacityLocked is capacity with d.mu held, without the bounds.
func (d *Dispatcher) capacityLocked() (free int, busy map[int64]int, exclude []int64) {
	busy = make(map[int64]int, len(d.perHook)+len(d.queue)+len(d.pace))
	for id, n := range d.perHook {
		busy[id] += n
	}
	for id, q := range d.queue {
		busy[id] += len(q)
	}
	for id, n := range busy {
		if n > claimAt(d.windowLocked(id)) {
			exclude = append(exclude, id)
		}
	}
	// A claim or a store write gives each webhook the largest window less
	// what is busy: a slow webhook's smaller window counts as busy too.
	most := d.opts.PerWebhook * prefetch
	for id := range d.pace {
		if w := d.windowLocked(id); w < most {
			busy[id] += most - w
		}
	}
	return d.roomLocked(), busy, exclude
}

// roomLocked is how many more deliveries may be claimed, in flight and queued
// together. d.mu must be held.
func (d *Dispatcher) roomLocked() int {
	most := max(d.opts.Workers*prefetch, minAhead)
	if d.bodySize > 0 {
		most = min(most, max(aheadBytes/d.bodySize, d.opts.Workers))
	}
	return most - d.inflight - d.queued
}

// aheadBytes bounds the payloads the dispatcher holds in flight and queued
// together, at the recent payload size: minAhead deliveries of a few
// hundred bytes each are well within it, but large payloads hold fewer
// deliveries ahead (never fewer than Workers).
const aheadBytes = 24 << 20

// noteBodiesLocked folds the payload sizes of newly held deliveries into the
// recent payload size (a moving average). d.mu must be held.
func (d *Dispatcher) noteBodiesLocked(claims []store.Claimed) {
	for i := range claims {
		n := max(len(claims[i].Body), 1)
		if d.bodySize == 0 {
			d.bodySize = n
			continue
		}
		d.bodySize += (n - d.bodySize) / averageWeight
	}
}

// fullLocked reports whether webhook's window is too full for a claim to
// include it (see claimAt). d.mu must be held.
func (d *Dispatcher) fullLocked(webhook int64) bool {
	return d.perHook[webhook]+len(d.queue[webhook]) > claimAt(d.windowLocked(webhook))
}

// aheadFor is how much of a webhook's traffic its window holds: far less
// than a queued delivery may wait before its lease is too short to send it
// (dequeueLocked), so that what is held ahead is sent, not given back and claimed
// again.
const aheadFor = 5 * time.Second

// windowLocked is how many deliveries webhook may have in flight and
// queued together: what its slots send in aheadFor at the pace its recent
// attempts took, between two per slot and prefetch per slot. d.mu must be
// held.
func (d *Dispatcher) windowLocked(webhook int64) int {
	most := d.opts.PerWebhook * prefetch
	took, ok := d.pace[webhook]
	if !ok || took <= 0 {
		return most
	}
	w := float64(d.opts.PerWebhook) * float64(aheadFor) / float64(took)
	return int(min(max(w, float64(2*d.opts.PerWebhook)), float64(most)))
}

// notePaceLocked folds an attempt's duration into its webhook's recent pace (a
// moving average). d.mu must be held.
func (d *Dispatcher) notePaceLocked(webhook int64, took time.Duration) {
	if took <= 0 {
		return
	}
	if old, ok := d.pace[webhook]; ok {
		took = old - old/averageWeight + took/averageWeight
	}
	d.pace[webhook] = took
}

// averageWeight is the inverse weight of the latest sample in the moving
// averages of a webhook's pace and of the payload size.
const averageWeight = 8

// acquire takes a worker slot for an attempt to webhook, if one is free.
func (d *Dispatcher) acquire(webhook int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight >= d.opts.Workers || d.perHook[webhook] >= d.opts.PerWebhook {
		return false
	}
	d.inflight++
	d.perHook[webhook]++
	return true
}

// free gives back the slot of a finished attempt, takes it again for the
// next queued delivery that the slot allows and returns that delivery with
// its run (the caller sends it), and wakes the claim loop when the last
// round left deliveries behind that the slot makes room for.
func (d *Dispatcher) free(webhook int64, took time.Duration) (*store.Claimed, *runState) {
	d.mu.Lock()
	d.notePaceLocked(webhook, took)
	d.inflight--
	if d.perHook[webhook]--; d.perHook[webhook] <= 0 {
		delete(d.perHook, webhook)
	}
	var next *store.Claimed
	var stale []uuid.UUID
	run := d.run
	if run != nil && !run.draining {
		next, stale = d.dequeueLocked(webhook)
		if next == nil {
			// The slot is also a worker slot: another webhook may wait for one.
			for id := range d.queue {
				if d.perHook[id] < d.opts.PerWebhook {
					var more []uuid.UUID
					next, more = d.dequeueLocked(id)
					stale = append(stale, more...)
					if next != nil {
						break
					}
				}
			}
		}
		if next != nil {
			d.inflight++
			d.perHook[next.WebhookID]++
			run.attempts.Add(1)
		}
	}
	want := d.starved || len(stale) > 0
	if len(d.held[webhook]) > 0 && !d.fullLocked(webhook) {
		want = true // room for its held deliveries
	}
	if d.behind[webhook] && !d.fullLocked(webhook) {
		// Its window has drained enough: the next round includes it.
		delete(d.behind, webhook)
		want = true
	}
	if want {
		d.wantClaim = true
	}
	d.mu.Unlock()
	if len(stale) > 0 {
		d.giveBack(run.dbCtx, stale)
	}
	if want {
		d.poke()
	}
	return next, run
}

// dequeueLocked pops the oldest queued delivery of webhook that can still be sent
// within its lease; those that waited too long are returned as stale, to be
// given back. d.mu must be held.
func (d *Dispatcher) dequeueLocked(webhook int64) (next *store.Claimed, stale []uuid.UUID) {
	q := d.queue[webhook]
	// An attempt started now must end (Timeout) before the lease does.
	oldest := time.Now().Add(-d.staleAfter())
	for len(q) > 0 && next == nil {
		qc := q[0]
		q[0] = queuedClaim{}
		q = q[1:]
		d.queued--
		if qc.at.Before(oldest) {
			stale = append(stale, qc.c.ID)
			continue
		}
		next = qc.c
	}
	if len(q) == 0 {
		delete(d.queue, webhook)
	} else {
		d.queue[webhook] = q
	}
	return next, stale
}

// giveBack releases claims without an attempt, so that any sender may claim
// them again at once.
func (d *Dispatcher) giveBack(ctx context.Context, ids []uuid.UUID) {
	for len(ids) > 0 {
		n := min(len(ids), maxGiveBack)
		if err := d.st.ReleaseClaims(ctx, d.opts.Owner, ids[:n]); err != nil {
			d.log.Error("give back claims; their deliveries will be sent when their leases expire", "deliveries", len(ids), "error", err)
			return
		}
		ids = ids[n:]
	}
}

// maxGiveBack is the most claims given back by one statement.
const maxGiveBack = 10_000

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// attempt makes one attempt, hands its result over, and goes on with the
// next delivery its slot is given, if any: one goroutine serves a slot for
// as long as work waits, so its stack is grown once, not per attempt.
func (d *Dispatcher) attempt(ctx context.Context, c *store.Claimed, attempts *sync.WaitGroup, results chan<- finished) {
	for c != nil {
		webhook := c.WebhookID
		took := d.attemptOne(ctx, c, results)
		// free counts the next attempt in before this one is counted out, so
		// a drain never sees the count touch zero between them.
		next, run := d.free(webhook, took)
		attempts.Done()
		if c = next; c != nil {
			ctx, attempts, results = run.sendCtx, run.attempts, run.results
		}
	}
}

// attemptOne sends one attempt, hands its result to results, and returns
// how long the attempt took.
func (d *Dispatcher) attemptOne(ctx context.Context, c *store.Claimed, results chan<- finished) time.Duration {
	ctx, span := d.tel.start(ctx, c)
	out := d.send.send(ctx, c)
	n := c.Attempts + 1
	f := finished{claim: c, aborted: out.aborted}
	f.result = store.AttemptResult{
		DeliveryID: c.ID,
		Attempt:    n,
		StartedAt:  out.started,
		Duration:   out.duration,
		StatusCode: out.status,
		Error:      out.err,
		Snippet:    out.snippet,
	}
	switch delay, retry := d.opts.Schedule.Next(n - c.RetryBase); {
	case out.aborted:
		f.result.Aborted = true
	case out.err == "":
		f.result.Status = store.StatusDelivered
	case retry:
		f.result.Status = store.StatusRetrying
		f.result.RetryIn = delay
	default:
		f.result.Status = store.StatusFailed
	}
	d.tel.end(span, &f, &out)
	f.span = span.SpanContext()
	c.Body = nil // the body is not needed any more; do not hold it while queued
	results <- f
	return out.duration
}

// recordLoop writes results to the store in batches: whatever has arrived
// while the previous batch was written, or within recordLinger of the
// batch's first result, goes in the next one.
func (d *Dispatcher) recordLoop(ctx context.Context, results <-chan finished) {
	batch := make([]finished, 0, maxRecordBatch)
	linger := time.NewTimer(recordLinger)
	defer linger.Stop()
	for f := range results {
		batch = append(batch[:0], f)
		linger.Reset(recordLinger)
	more:
		for len(batch) < maxRecordBatch {
			select {
			case f, ok := <-results:
				if !ok {
					break more
				}
				batch = append(batch, f)
			case <-linger.C:
				break more
			}
		}
		d.flush(ctx, batch)
	}
}

// flush records a batch of results, aborted attempts included (recording
// one gives its delivery back), retrying while the store fails until ctx is
// done.
func (d *Dispatcher) flush(ctx context.Context, batch []finished) {
	results := make([]store.AttemptResult, len(batch))
	for i, f := range batch {
		results[i] = f.result
	}
	var lost []uuid.UUID
	err := d.retryStore(ctx, "record attempts", func() (err error) {
		lost, err = d.st.RecordAttempts(ctx, d.opts.Owner, results)
		return err
	})
	if err != nil {
		d.log.Error("attempts not recorded; their deliveries will be sent again when their leases expire",
			"deliveries", len(results), "error", err)
		lost = nil
		results = nil
	}

	isLost := make(map[uuid.UUID]bool, len(lost))
	for _, id := range lost {
		isLost[id] = true
	}
	var soonest time.Duration = -1
	for _, f := range batch {
		r := f.result
		sctx := trace.ContextWithSpanContext(ctx, f.span)
		if results == nil || isLost[r.DeliveryID] || f.aborted {
			if isLost[r.DeliveryID] {
				d.log.WarnContext(sctx, "attempt not recorded: the delivery's lease was lost to another dispatcher",
					"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "attempt", r.Attempt)
			}
			continue
		}
		d.tel.recorded(sctx, &f)
		switch r.Status {
		case store.StatusFailed:
			d.log.WarnContext(sctx, "delivery failed permanently",
				"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "event_type", f.claim.EventType,
				"attempts", r.Attempt, "error", r.Error)
		case store.StatusRetrying:
			d.log.DebugContext(sctx, "attempt failed; will retry",
				"delivery_id", r.DeliveryID, "webhook_id", f.claim.WebhookID, "attempt", r.Attempt,
				"status_code", r.StatusCode, "error", r.Error, "retry_in", r.RetryIn)
			if soonest < 0 || r.RetryIn < soonest {
				soonest = r.RetryIn
			}
		}
	}
	if soonest >= 0 {
		d.retryIn(soonest)
	}
}

// retryStore runs op until it succeeds or ctx is done, backing off between
// failures.
func (d *Dispatcher) retryStore(ctx context.Context, what string, op func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := op()
		if err == nil || ctx.Err() != nil {
			return err
		}
		d.log.Error(what+": will retry", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// retryIn notes that a delivery this dispatcher recorded is due again after
// delay, so that the claim loop wakes for it rather than waiting to poll.
func (d *Dispatcher) retryIn(delay time.Duration) {
	at := time.Now().Add(delay)
	d.mu.Lock()
	earlier := d.retryAt.IsZero() || at.Before(d.retryAt)
	if earlier {
		d.retryAt = at
	}
	d.mu.Unlock()
	if earlier {
		d.poke()
	}
}
