// Replays: delivering the stored events of a time range again to one
// webhook, at a bounded rate, beside its live deliveries.

package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/internal/outage"
	"github.com/smartmaintenance/relay/store"
)

// ReplayOptions configure a Replayer. Zero values take the defaults named.
type ReplayOptions struct {
	// Owner names this replayer in the leases it takes on replays; unique
	// among the relays sharing a store. Default: host, process id and a
	// random suffix.
	Owner string
	// Rate is the most events per second one replay looks at, and so the
	// most deliveries it makes due per second. Default 100.
	Rate int
	// PerWebhook is the most deliveries of one replay pending or retrying
	// at once: the replay waits while that many are, so that a webhook's
	// live deliveries never queue behind more than that many of its
	// replay's. Default 8.
	PerWebhook int
	// Lease is how long a replay stays this replayer's without a word from
	// it: a replayer that died leaves its replays to others after that.
	// Default 30s.
	Lease time.Duration
	// Poll is how often the store is asked for replays to run, and for
	// cancelled ones to sweep, while none runs here. Default 1s.
	Poll time.Duration
	// Notify is called after deliveries were made due, so that they are
	// claimed at once (the dispatcher's Notify). Optional.
	Notify func()
	// Filter decides whether an event meets a webhook's filter (its
	// current one, never ""), as the ingester decides for live events; nil
	// takes every event of a type the webhook subscribes to.
	Filter func(webhookID int64, filter string, e store.ReplayEvent) bool
	// Logger receives the replayer's logs. Default: discard.
	Logger *slog.Logger
}

// Defaults of ReplayOptions.
const (
	DefaultReplayRate       = 100
	DefaultReplayPerWebhook = 8
	DefaultReplayLease      = 30 * time.Second
)

// replayTick is how often a replayer that runs replays takes their next
// steps: each takes the events its rate allowed since.
const replayTick = 100 * time.Millisecond

func (o ReplayOptions) withDefaults() ReplayOptions {
	if o.Owner == "" {
		host, _ := os.Hostname()
		o.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if o.Rate <= 0 {
		o.Rate = DefaultReplayRate
	}
	if o.PerWebhook <= 0 {
		o.PerWebhook = DefaultReplayPerWebhook
	}
	if o.Lease <= 0 {
		o.Lease = DefaultReplayLease
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Notify == nil {
		o.Notify = func() {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// replayStore is what a Replayer asks of the store. *store.Store
// implements it.
type replayStore interface {
	ClaimReplays(ctx context.Context, owner string, limit int, lease time.Duration) ([]int64, error)
	ArmReplay(ctx context.Context, id int64, b store.ReplayBatch) (store.ReplayStep, error)
	ReleaseReplays(ctx context.Context, owner string) error
	SweepCancelledReplays(ctx context.Context) (int64, error)
}

var _ replayStore = (*store.Store)(nil)

// maxReplays is the most replays one replayer runs at once.
const maxReplays = 16

// Replayer runs the replays admins ask for (store.CreateReplay): it leases
// each one (one replayer at a time runs a replay; a replayer that dies
// leaves it to the others once its lease passes) and makes its
// deliveries due step by step, at most Rate events a second and never
// more than PerWebhook of them pending at once, committing with each step
// how far it got, so that a replay goes on after a crash where it
// stopped. The dispatcher sends them like any other delivery, with the
// X-SMTM-Replay header. Create it with NewReplayer and start it with Run.
type Replayer struct {
	st     replayStore
	o      ReplayOptions
	log    *slog.Logger
	wakeup chan struct{}
	// claimFail and sweepFail log their steps' failures, one line per
	// outage.
	claimFail, sweepFail *outage.Log
	// buckets holds each running replay's allowance of events (a token
	// bucket filled at Rate a second); Run's own.
	buckets map[int64]*bucket
	running atomic.Bool
}

// bucket is a replay's allowance: tokens events, as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// NewReplayer returns a replayer running the replays of st.
func NewReplayer(st replayStore, o ReplayOptions) *Replayer {
	o = o.withDefaults()
	return &Replayer{st: st, o: o, log: o.Logger, wakeup: make(chan struct{}, 1), buckets: map[int64]*bucket{},
		claimFail: outage.New(o.Logger, slog.LevelWarn, "claim replays"),
		sweepFail: outage.New(o.Logger, slog.LevelWarn, "sweep cancelled replays")}
}

// Wake makes the replayer look for replays now rather than at its next
// poll: call it after creating or cancelling one. It never blocks.
func (r *Replayer) Wake() {
	select {
	case r.wakeup <- struct{}{}:
	default:
	}
}

// Run runs replays until ctx is done, then gives back those it holds, for
// another relay (or this one, restarted) to go on with at once. It returns
// an error only when it is already running.
func (r *Replayer) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: replayer already running")
	}
	defer r.running.Store(false)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.st.ReleaseReplays(sctx, r.o.Owner); err != nil {
			r.log.Warn("replays not given back; others go on with them when their leases pass", "error", err)
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var polled time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.wakeup:
			polled = time.Time{}
		}
		if time.Since(polled) >= r.o.Poll {
			polled = time.Now()
			r.poll(ctx)
		}
		r.steps(ctx)
		wait := r.o.Poll - time.Since(polled)
		if len(r.buckets) > 0 {
			wait = min(wait, replayTick)
		}
		timer.Reset(max(wait, 0))
	}
}

// poll claims replays to run (and renews the leases of those held), and
// sweeps cancelled ones.
func (r *Replayer) poll(ctx context.Context) {
	ids, err := r.st.ClaimReplays(ctx, r.o.Owner, maxReplays, r.o.Lease)
	if !r.claimFail.Step(ctx, err) {
		return
	}
	held := make(map[int64]bool, len(ids))
	for _, id := range ids {
		held[id] = true
		if r.buckets[id] == nil {
			r.log.Info("running replay", "replay_id", id)
			// A step's worth to begin with, so that the first comes at once.
			r.buckets[id] = &bucket{tokens: r.burst() / 2, at: time.Now()}
		}
	}
	for id := range r.buckets {
		if !held[id] {
			delete(r.buckets, id)
		}
	}
	if n, err := r.st.SweepCancelledReplays(ctx); r.sweepFail.Step(ctx, err) && n > 0 {
		r.log.Info("deliveries of cancelled replays taken back", "deliveries", n)
	}
}

// burst is the most events a replay may look at in one step: a fifth of
// a second's worth (at least one), so that over any time t it looks at no
// more than Rate×t + burst.
func (r *Replayer) burst() float64 { return max(float64(r.o.Rate)/5, 1) }

// steps takes the next step of every replay held whose allowance has
// room for an event.
func (r *Replayer) steps(ctx context.Context) {
	armed := false
	for id, b := range r.buckets {
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		b.tokens = min(b.tokens+now.Sub(b.at).Seconds()*float64(r.o.Rate), r.burst())
		b.at = now
		if b.tokens < 1 {
			continue
		}
		step, err := r.st.ArmReplay(ctx, id, store.ReplayBatch{Owner: r.o.Owner, Lease: r.o.Lease,
			Limit: int(b.tokens), Due: r.o.PerWebhook, Keep: r.keep})
		switch {
		case errors.Is(err, store.ErrReplayLost):
			r.log.Info("replay no longer run here (cancelled, or taken over)", "replay_id", id)
			delete(r.buckets, id)
			continue
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("replay step failed; tried again", "replay_id", id, "error", err)
			}
			continue
		}
		b.tokens -= float64(step.Looked)
		armed = armed || step.Armed > 0
		if step.State != store.ReplayRunning {
			r.log.Info("replay over", "replay_id", id, "state", step.State)
			delete(r.buckets, id)
		}
	}
	if armed {
		r.o.Notify()
	}
}

// keep reports whether webhook takes event e on a replay: a type it
// subscribes to is already checked; this is where its filter applies
// (Options.Filter), as it does to live events.
func (r *Replayer) keep(webhookID int64, filter string, e store.ReplayEvent) bool {
	if r.o.Filter == nil {
		return true
	}
	return r.o.Filter(webhookID, filter, e)
}
