// Sending ahead: the first attempts of a source transaction's deliveries
// start as soon as it is mapped, before the store write that records them.

package ingest

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/store"
)

// aheadState is what the ingester needs to send deliveries ahead of their
// store write.
type aheadState struct {
	// fanOut is the webhooks as last read (store.LoadFanOut); nil until the
	// first transaction that may go ahead, and after a check found it old.
	fanOut *store.FanOut
	// fanOutRead is when fanOut was read.
	fanOutRead time.Time
	// key is the installation's key for delivery ids.
	key []byte
	// ahead are the deliveries of the buffered events that the sender
	// took, stored with them by the next write (store.Batch.Ahead), and
	// aheadIDs their ids.
	ahead    []store.Ahead
	aheadIDs []uuid.UUID
	// writes counts the writes into the store, so that Commit can tell
	// whether one ran while it mapped.
	writes int
	// probe is what this session announced in the feed (listen), and
	// inFeed is set once it came back: the feed then carries every change
	// to the webhooks in its place, and the copy needs no check.
	probe  string
	inFeed bool
	// waiting is set when a delivery of the transactions since the last
	// Flush waits for the store write: one not taken ahead (see Waiting).
	waiting bool
	// wholeAt is the webhooks' version with which every delivery of the
	// buffered events went ahead (store.Batch.WholeAt): 0 while none of
	// them was decided, -1 once one was not taken ahead or the copy's
	// version changed between decisions (see noteWhole).
	wholeAt int64
}

// noteWhole records how the deliveries of buffered events were decided:
// all taken ahead or not, with the copy of the webhooks of version
// (0: none read).
func (in *Ingester) noteWhole(all bool, version int64) {
	switch {
	case in.wholeAt < 0:
	case !all || version == 0 || (in.wholeAt != 0 && in.wholeAt != version):
		in.wholeAt = -1
	default:
		in.wholeAt = version
	}
}

// whole returns the Batch.WholeAt of the buffered events, and forgets it
// for the next ones.
func (in *Ingester) whole() int64 {
	v := max(in.wholeAt, 0)
	in.wholeAt = 0
	return v
}

// Waiting implements cdc.Handler: it reports whether a delivery of the
// transactions committed since the last Flush waits for their store write.
// When none does, every delivery's first attempt has started, and the feed
// gathers transactions for up to its group delay before it stores them,
// so that one store transaction records many source transactions.
func (in *Ingester) Waiting() bool { return in.waiting }

// sendAhead offers the sender the deliveries of events, buffered and not
// yet written: those of a source transaction read whole, or of a part (or
// the rest) of one stored in parts, to send at once; those it takes are
// stored with the next write, leased to it, whatever the webhooks are by
// then (store.Batch.Ahead).
//
// Which webhooks take an event is decided here from the ingester's copy of
// the webhooks, which must be as fresh as the store write's own decision
// would be: a change committed before the source transaction (disabling a
// webhook, subscribing it to an event type, a receiver's pause) is always
// seen. Where the relay's state is in the database it streams, every such
// change is announced in the feed in its place among the platform's
// transactions (store.WebhooksMessagePrefix), and the copy is read again
// after one (Message). Elsewhere the ingester reads the webhooks' version
// before deciding (one small query) and the webhooks again if it moved. Webhooks with a filter, paused ones and
// those the copy does not know are left to the write, as is everything
// when the version cannot be read: they are stored first and sent as
// before, only later.
func (in *Ingester) sendAhead(ctx context.Context, events []event.Event) (all bool) {
	var version int64 // of the copy that decided
	defer func() { in.noteWhole(all, version) }()
	owner, lease := in.opts.Handoff.AheadLease()
	if owner == "" || lease <= 0 {
		return false
	}
	now := time.Now()
	if in.fanOut != nil {
		if takers, subscribers := in.count(events, now); takers == 0 {
			// Whatever changed since the copy was read, the write decides:
			// it is no later for it.
			version = in.fanOut.Version
			return subscribers == 0
		}
	}
	if err := in.freshFanOut(ctx); err != nil {
		in.log.WarnContext(in.tel.txCtxOr(ctx), "deliveries not sent ahead of their store write; they are sent once stored", "err", err)
		return false
	}
	if in.key == nil {
		k, err := in.st.DeliveryKey(ctx)
		if err != nil {
			in.log.WarnContext(in.tel.txCtxOr(ctx), "deliveries not sent ahead of their store write; they are sent once stored", "err", err)
			return false
		}
		in.key = k
	}
	all, version = true, in.fanOut.Version
	for i := range events {
		e := &events[i]
		for _, w := range in.fanOut.ByCompany[e.CompanyID] {
			if !subscribed(&w, e) {
				continue
			}
			if !ahead(&w, now) {
				all = false
				continue
			}
			c := &store.Claimed{
				ID:        store.DeliveryID(in.key, in.opts.Slot, e.CommitLSN, e.Seq, w.ID, e.CommitTime),
				WebhookID: w.ID, EventType: e.Type, CompanyID: e.CompanyID, TraceParent: e.TraceParent,
				NextAttemptAt: now, LeaseUntil: now.Add(lease), Body: e.Body, CreatedAt: now, CommittedAt: e.CommitTime,
			}
			if in.fanOut.Fill(w.ID, c) && in.opts.Handoff.Ahead(c, e.CommitLSN, in.tx.mode == inParts) {
				in.ahead = append(in.ahead, store.Ahead{CommitLSN: e.CommitLSN, Seq: e.Seq, WebhookID: w.ID, ID: c.ID})
				in.aheadIDs = append(in.aheadIDs, c.ID)
				continue
			}
			all = false
		}
	}
	return all
}

// aheadBatch returns the deliveries taken ahead for the next write (see
// keptAhead).
func (in *Ingester) aheadBatch() []store.Ahead {
	in.ahead, in.aheadIDs = keptAhead(in.opts.Handoff, in.ahead, in.aheadIDs)
	return in.ahead
}

// keptAhead returns the deliveries taken ahead (ahead, their ids in ids)
// for a write, each with its first attempt's result if the attempt is
// over by now: the write then stores the delivery as the attempt left it,
// and nothing is left to record of it. Those the sender let go since it
// took them are left out: the write decides them as any other. It keeps
// the rest in place in both slices.
func keptAhead(h Handoff, ahead []store.Ahead, ids []uuid.UUID) ([]store.Ahead, []uuid.UUID) {
	kept := 0
	for i := range ahead {
		a := ahead[i]
		a.Result = nil
		r, done, ok := h.Finished(ids[i])
		if !ok {
			continue
		}
		if done {
			a.Result = &r
		}
		ahead[kept], ids[kept] = a, ids[i]
		kept++
	}
	return ahead[:kept], ids[:kept]
}

// keptWhole is keptAhead for a batch, whose WholeAt it clears when one
// was let go: the write must then decide those.
func keptWhole(h Handoff, b *store.Batch, ids []uuid.UUID) []uuid.UUID {
	n := len(b.Ahead)
	b.Ahead, ids = keptAhead(h, b.Ahead, ids)
	if len(b.Ahead) < n {
		b.WholeAt = 0
	}
	return ids
}

// count counts the deliveries of events that the copy of the webhooks
// would take ahead (takers), and those it would make in all (subscribers).
func (in *Ingester) count(events []event.Event, now time.Time) (takers, subscribers int) {
	for i := range events {
		for _, w := range in.fanOut.ByCompany[events[i].CompanyID] {
			if subscribed(&w, &events[i]) {
				subscribers++
				if ahead(&w, now) {
					takers++
				}
			}
		}
	}
	return takers, subscribers
}

// subscribed reports whether webhook w takes e, filters aside: subscribed
// to its type and existing when it was committed.
func subscribed(w *store.FanOutWebhook, e *event.Event) bool {
	return !w.CreatedAt.After(e.CommitTime) && slices.Contains(w.Events, e.Type)
}

// ahead reports whether a subscribed webhook w may be sent an event ahead
// of the store write: it has no filter (filters are decided with the
// write, see filtering) and is not paused.
func ahead(w *store.FanOutWebhook, now time.Time) bool {
	return !w.Filtered && !w.PausedUntil.After(now)
}

// freshFanOut makes the ingester's copy of the webhooks at least as fresh
// as the source transaction just read: unless the feed announces their
// changes, it reads their version, and the webhooks again when the copy is
// older (or older than fanOutAge).
func (in *Ingester) freshFanOut(ctx context.Context) error {
	if in.fanOut != nil && time.Since(in.fanOutRead) < fanOutAge {
		if in.inFeed {
			return nil // a change would have been announced (Message)
		}
		v, err := in.st.WebhooksVersion(ctx)
		if err != nil {
			return err
		}
		if v == in.fanOut.Version {
			return nil
		}
	}
	f, err := in.st.LoadFanOut(ctx)
	if err != nil {
		return err
	}
	in.fanOut, in.fanOutRead = f, time.Now()
	return nil
}

// fanOutAge is how long a copy of the webhooks is used, if their version
// does not move: what passing time changes without a write (a rotation's
// overlap window ending) is read again this often.
const fanOutAge = 30 * time.Second

// listen announces a probe in the feed as a session starts (see Message),
// and checks the webhooks' version for every decision until it comes back.
func (in *Ingester) listen(ctx context.Context) {
	in.inFeed = false
	in.probe = "probe " + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := in.st.AnnounceInFeed(ctx, in.probe); err != nil {
		in.log.Warn("the webhooks' changes are checked before each decision", "err", err)
	}
}

// Message implements cdc.Handler: a change to the webhooks, announced in
// the feed, makes the copy old; the session's own probe coming back says
// that the feed announces them.
func (in *Ingester) Message(_ context.Context, prefix string, content []byte) error {
	if prefix != store.WebhooksMessagePrefix {
		return nil
	}
	if in.probe != "" && string(content) == in.probe {
		if !in.inFeed {
			in.log.Debug("the webhooks' changes come in the change feed")
		}
		in.inFeed = true
		return nil
	}
	in.fanOut = nil
	return nil
}
