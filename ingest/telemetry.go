package ingest

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/telemetry"
)

// instrumentation is the name of the ingester's tracer and meter.
const instrumentation = "github.com/smartmaintenance/relay/ingest"

// maxOpenEventSpans bounds the event spans a source transaction keeps open
// until its commit; the spans of a larger transaction's later events end
// when their chunk is written, so memory stays bounded.
const maxOpenEventSpans = 1000

// Trace design: each event is the root of its own trace (one trace per
// event, whatever the size of its source transaction). Its span runs from
// the moment the transaction's begin was decoded to the store commit of its
// deliveries, and links to one span per source transaction
// ("ingest transaction"), which spans the same interval and carries the
// transaction's own figures. The event span's context is stored with the
// event as a traceparent; every delivery attempt is a child of it.
type telem struct {
	// tracer is nil when tracing is off: then no span is even started.
	tracer  trace.Tracer
	events  metric.Int64Counter
	created metric.Int64Counter
	// readDelay is the feed's delay per source transaction, by stage
	// (readStages).
	readDelay metric.Float64Histogram
	// readStages holds each stage's attribute set as the option list
	// Record takes, built once: a list built at each call would be
	// allocated at each call, two per source transaction.
	readStages [2][]metric.RecordOption
	lagNano    atomic.Int64
	reg        metric.Registration

	// Source transactions committed into the open store transaction (group
	// commit), waiting for it to commit.
	group []groupTx

	// The open source transaction.
	tx       event.Tx
	txCtx    context.Context
	txSpan   trace.Span
	txStart  time.Time
	open     []trace.Span            // recording event spans waiting for the commit
	evOpts   []trace.SpanStartOption // the open transaction's event span options
	txLink   trace.Link
	perType  map[string]int64
	attrSets map[string]metric.MeasurementOption
	names    map[string]string // event type -> span name
}

// groupTx is a committed source transaction waiting for its group's store
// commit.
type groupTx struct {
	tx     event.Tx
	span   trace.Span // nil when it produced no event or tracing is off
	events int64
}

func newTelem(tp trace.TracerProvider, mp metric.MeterProvider) (*telem, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	t := &telem{perType: map[string]int64{}, attrSets: map[string]metric.MeasurementOption{}, names: map[string]string{}}
	if tp != nil {
		t.tracer = tp.Tracer(instrumentation)
	}
	meter := mp.Meter(instrumentation)
	var err error
	if t.events, err = meter.Int64Counter("relay.events",
		metric.WithDescription("Events derived from committed changes, by event type (each fans out to one delivery per subscribed webhook; one that no webhook takes is not stored)."),
		metric.WithUnit("{event}")); err != nil {
		return t, err
	}
	if t.created, err = meter.Int64Counter("relay.deliveries.created",
		metric.WithDescription("Deliveries created: one per event and subscribed, active webhook of its company."),
		metric.WithUnit("{delivery}")); err != nil {
		return t, err
	}
	if t.readDelay, err = meter.Float64Histogram("relay.replication.read.delay",
		metric.WithDescription("From a source transaction's commit to the relay reading it, by stage: server (commit to the server sending it: the commit's WAL flush, decoding, the walsender's turn; the server's clock) and relay (sent to read)."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)); err != nil {
		return t, err
	}
	for i, stage := range []string{"server", "relay"} {
		t.readStages[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("stage", stage)))}
	}
	lag, err := meter.Float64ObservableGauge("relay.replication.lag.seconds",
		metric.WithDescription("Commit-to-stored delay of the last source transaction the relay stored; 0 once the feed is idle and caught up."),
		metric.WithUnit("s"))
	if err != nil {
		return t, err
	}
	t.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(lag, time.Duration(t.lagNano.Load()).Seconds())
		return nil
	}, lag)
	return t, err
}

// begin notes the start of a source transaction. Its span is opened with
// its first event, so transactions that produce no event leave no trace.
// It records the feed's delay for the transaction, in two stages split
// at the server's send time: a late event shows whether the database
// (a slow WAL flush, a walsender short of CPU) or the relay was late.
func (t *telem) begin(tx event.Tx) {
	t.txStart = time.Now()
	t.tx = tx
	ctx := context.Background()
	if !tx.SentAt.IsZero() && t.readDelay.Enabled(ctx) {
		t.readDelay.Record(ctx, max(tx.SentAt.Sub(tx.CommitTime), 0).Seconds(), t.readStages[0]...)
		t.readDelay.Record(ctx, max(t.txStart.Sub(tx.SentAt), 0).Seconds(), t.readStages[1]...)
	}
}

// event starts the span of a new event, before it is written, and returns
// the traceparent to store with it.
func (t *telem) event(e *event.Event) string {
	t.perType[e.Type]++
	if t.tracer == nil {
		return ""
	}
	if t.txSpan == nil {
		t.txCtx, t.txSpan = t.tracer.Start(context.Background(), "ingest transaction", trace.WithTimestamp(t.txStart))
		t.evOpts = append(t.evOpts[:0], trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithTimestamp(t.txStart))
		t.txLink = trace.LinkFromContext(t.txCtx)
		if t.txSpan.IsRecording() {
			t.txSpan.SetAttributes(
				attribute.String("relay.commit_lsn", t.tx.CommitLSN.String()),
				attribute.Int64("relay.source_xid", int64(t.tx.XID)),
				attribute.String("relay.commit_time", t.tx.CommitTime.UTC().Format(time.RFC3339Nano)),
			)
			if !t.tx.SentAt.IsZero() {
				t.txSpan.SetAttributes(attribute.String("relay.sent_time", t.tx.SentAt.UTC().Format(time.RFC3339Nano)))
			}
		}
	}
	name, ok := t.names[e.Type]
	if !ok {
		name = "event " + e.Type
		t.names[e.Type] = name
	}
	_, span := t.tracer.Start(context.Background(), name, t.evOpts...)
	if !span.IsRecording() {
		// Not sampled: nothing to end or export, but the trace's decision
		// travels with the event so its attempts are not sampled either.
		return telemetry.TraceParent(span.SpanContext())
	}
	// Linked once recording: an event that is not sampled costs no link.
	span.AddLink(t.txLink)
	span.SetAttributes(
		attribute.String("relay.event_type", e.Type),
		attribute.Int64("relay.company_id", e.CompanyID),
		attribute.String("relay.table", e.Table),
		attribute.String("relay.operation", string(e.Op)),
		attribute.String("relay.commit_lsn", e.CommitLSN.String()),
		attribute.Int("relay.event_seq", e.Seq),
	)
	t.open = append(t.open, span)
	return telemetry.TraceParent(span.SpanContext())
}

// written ends the spans over the open-span bound once their chunk is in
// the store transaction.
func (t *telem) written() {
	if len(t.open) <= maxOpenEventSpans {
		return
	}
	for _, s := range t.open[maxOpenEventSpans:] {
		s.SetAttributes(attribute.Bool("relay.ended_before_commit", true))
		s.End()
	}
	clear(t.open[maxOpenEventSpans:])
	t.open = t.open[:maxOpenEventSpans]
}

// txCommitted notes that the open source transaction, which produced
// events, was mapped into the store transaction; its spans end when that
// commits.
func (t *telem) txCommitted(tx event.Tx, events int64) {
	t.group = append(t.group, groupTx{tx: tx, span: t.txSpan, events: events})
	t.txSpan, t.txCtx = nil, nil
}

// committed ends the spans of the source transactions in the store
// transaction that just committed, and counts their events and the
// deliveries it created.
func (t *telem) committed(deliveries int64) {
	t.finish(t.detach(), deliveries, time.Now())
}

// storeTel is one store write's share of the telemetry: the spans and
// event counts of what it stores, taken from the feed's (detach) so that
// the write can end them wherever and whenever it commits (finish), or
// fail them (abort).
type storeTel struct {
	open   []trace.Span
	group  []groupTx
	counts []typeCount
}

type typeCount struct {
	n   int64
	opt metric.MeasurementOption
}

// detach takes the open spans, the committed source transactions and the
// event counts for the store write about to store them.
func (t *telem) detach() *storeTel {
	g := &storeTel{}
	if len(t.open) > 0 {
		g.open = slices.Clone(t.open)
	}
	if len(t.group) > 0 {
		g.group = slices.Clone(t.group)
	}
	for typ, n := range t.perType {
		opt, ok := t.attrSets[typ]
		if !ok {
			opt = metric.WithAttributeSet(attribute.NewSet(attribute.String("event_type", typ)))
			t.attrSets[typ] = opt
		}
		g.counts = append(g.counts, typeCount{n: n, opt: opt})
	}
	clear(t.perType)
	t.reset()
	return g
}

// finish ends the spans of a store write that committed at, and counts
// its events and the deliveries it created. It touches nothing of the
// feed's, so the write's own goroutine may call it.
func (t *telem) finish(g *storeTel, deliveries int64, at time.Time) {
	if n := len(g.group); n > 0 {
		t.lagNano.Store(int64(max(at.Sub(g.group[n-1].tx.CommitTime), 0)))
	}
	for _, c := range g.counts {
		t.events.Add(context.Background(), c.n, c.opt)
	}
	if deliveries > 0 {
		t.created.Add(context.Background(), deliveries)
	}
	for _, s := range g.open {
		s.End(trace.WithTimestamp(at))
	}
	for _, gt := range g.group {
		if gt.span == nil {
			continue
		}
		if gt.span.IsRecording() {
			gt.span.SetAttributes(attribute.String("relay.end_lsn", gt.tx.EndLSN.String()), attribute.Int64("relay.events", gt.events))
		}
		gt.span.End(trace.WithTimestamp(at))
	}
}

// abort fails the spans of a store write that did not commit.
func (g *storeTel) abort(reason string) {
	for _, s := range g.open {
		s.SetStatus(codes.Error, reason)
		s.End()
	}
	for _, gt := range g.group {
		if gt.span != nil {
			gt.span.SetStatus(codes.Error, reason)
			gt.span.End()
		}
	}
}

// aborted ends the spans of the source transactions whose store
// transaction was rolled back: their events are stored again (with new
// traces) when they are streamed again.
func (t *telem) aborted(reason string) {
	txSpan := t.txSpan
	t.detach().abort(reason)
	if txSpan != nil {
		txSpan.SetStatus(codes.Error, reason)
		txSpan.End()
	}
}

func (t *telem) reset() {
	clear(t.open)
	t.open = t.open[:0]
	clear(t.group)
	t.group = t.group[:0]
	t.txSpan, t.txCtx = nil, nil
}

// idle notes that the feed is caught up.
func (t *telem) idle() { t.lagNano.Store(0) }

// txCtxOr returns the open transaction's span context for logging, or ctx.
func (t *telem) txCtxOr(ctx context.Context) context.Context {
	if t.txCtx != nil {
		return t.txCtx
	}
	return ctx
}
