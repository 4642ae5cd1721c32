package relay

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/smartmaintenance/relay/store"
	"github.com/smartmaintenance/relay/telemetry"
)

// instrumentation names the dispatcher's tracer and meter.
const instrumentation = "github.com/smartmaintenance/relay/relay"

// Outcomes of an attempt, as span and metric attributes.
const (
	outcomeDelivered = "delivered"
	outcomeRetrying  = "retrying"
	outcomeFailed    = "failed"
	outcomeAborted   = "aborted"
)

// telem traces each attempt as a child of the event's stored trace and
// counts what the store recorded.
type telem struct {
	tracer trace.Tracer
	// traced is false when tracing is off: attempts then start no span.
	traced     bool
	attempts   metric.Int64Counter
	finished   metric.Int64Counter
	attemptDur metric.Float64Histogram
	latency    metric.Float64Histogram
	byOutcome  map[store.Status]metric.MeasurementOption
}

func newTelem(tp trace.TracerProvider, mp metric.MeterProvider) (*telem, error) {
	traced := tp != nil
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	t := &telem{tracer: tp.Tracer(instrumentation), traced: traced, byOutcome: map[store.Status]metric.MeasurementOption{}}
	for _, s := range []store.Status{store.StatusDelivered, store.StatusRetrying, store.StatusFailed} {
		t.byOutcome[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", string(s))))
	}
	m := mp.Meter(instrumentation)
	var err error
	if t.attempts, err = m.Int64Counter("relay.delivery.attempts",
		metric.WithDescription("Recorded delivery attempts, by outcome: delivered (2xx), retrying (failed, another attempt is scheduled), failed (failed, no attempt left)."),
		metric.WithUnit("{attempt}")); err != nil {
		return t, err
	}
	if t.finished, err = m.Int64Counter("relay.deliveries",
		metric.WithDescription("Deliveries finished, by outcome: delivered or failed (permanently, after the last retry)."),
		metric.WithUnit("{delivery}")); err != nil {
		return t, err
	}
	// Every outcome's series exists from the start, at 0, so that an alert
	// on the increase of failures sees the first ones after a restart too.
	for s, opt := range t.byOutcome {
		t.attempts.Add(context.Background(), 0, opt)
		if s != store.StatusRetrying {
			t.finished.Add(context.Background(), 0, opt)
		}
	}
	if t.attemptDur, err = m.Float64Histogram("relay.delivery.attempt.duration",
		metric.WithDescription("Duration of one attempt, from sending the request to reading the response, by outcome."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)); err != nil {
		return t, err
	}
	if t.latency, err = m.Float64Histogram("relay.delivery.latency",
		metric.WithDescription("From the source transaction's commit to the receiver's 2xx answer, for delivered deliveries (retries included)."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)); err != nil {
		return t, err
	}
	return t, nil
}

// observeAhead reports, each time metrics are collected, the deliveries a
// dispatcher holds: in flight, queued with their payloads, and held as ids;
// and how long the change feed waited for room ahead (heldBack).
func observeAhead(mp metric.MeterProvider, read func() (inFlight, queued, held int), heldBack func() time.Duration) error {
	if mp == nil {
		return nil
	}
	if _, err := mp.Meter(instrumentation).Float64ObservableCounter("relay.feed.held_back",
		metric.WithDescription("Time the change feed was held back because the relay had no free worker (usually for want of CPU) and a webhook's deliveries waited for one, or, in a transaction too large to be read whole, a quick webhook's window was full: the source transactions wait in the replication slot rather than in memory or in the store."),
		metric.WithUnit("s"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(heldBack().Seconds())
			return nil
		})); err != nil {
		return err
	}
	states := [3]metric.ObserveOption{}
	for i, s := range []string{"in_flight", "queued", "held"} {
		states[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("state", s)))
	}
	_, err := mp.Meter(instrumentation).Int64ObservableGauge("relay.deliveries.ahead",
		metric.WithDescription("Deliveries this relay holds: in flight, queued with their payloads for a free slot of their webhook, and held as ids (leased as they were stored, read when their webhook has room)."),
		metric.WithUnit("{delivery}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			inFlight, queued, held := read()
			o.Observe(int64(inFlight), states[0])
			o.Observe(int64(queued), states[1])
			o.Observe(int64(held), states[2])
			return nil
		}))
	return err
}

// start opens the span of one attempt, a child of the event's trace as
// stored with the event (also after a restart). With tracing off it
// starts none: the span it returns records nothing and carries the
// stored trace's context, for the attempt's log lines.
func (t *telem) start(ctx context.Context, c *store.Claimed) (context.Context, trace.Span) {
	ctx = telemetry.WithTraceParent(ctx, c.TraceParent)
	if !t.traced {
		return ctx, trace.SpanFromContext(ctx)
	}
	ctx, span := t.tracer.Start(ctx, "delivery attempt")
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("relay.delivery_id", c.ID.String()),
			attribute.Int64("relay.webhook_id", c.WebhookID),
			attribute.Int64("relay.company_id", c.CompanyID),
			attribute.String("relay.event_type", c.EventType),
			attribute.Int("relay.attempt", c.Attempts+1),
		)
	}
	return ctx, span
}

// end closes an attempt's span with what it observed and decided.
func (t *telem) end(span trace.Span, f *finished, out *outcome) {
	if !span.IsRecording() {
		return
	}
	r := &f.result
	outcome := string(r.Status)
	if f.aborted {
		outcome = outcomeAborted
	}
	span.SetAttributes(
		attribute.String("relay.outcome", outcome),
		attribute.Float64("relay.duration_ms", float64(out.duration)/float64(time.Millisecond)),
	)
	if out.status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", out.status))
	}
	if r.Status == store.StatusRetrying && !f.aborted {
		span.SetAttributes(attribute.String("relay.next_attempt_at", out.started.Add(out.duration+r.RetryIn).UTC().Format(time.RFC3339Nano)))
	}
	if out.err != "" {
		span.SetStatus(codes.Error, out.err)
	}
	span.End()
}

// recorded counts an attempt the store recorded.
func (t *telem) recorded(ctx context.Context, f *finished) {
	r := &f.result
	opt := t.byOutcome[r.Status]
	t.attempts.Add(ctx, 1, opt)
	t.attemptDur.Record(ctx, r.Duration.Seconds(), opt)
	switch r.Status {
	case store.StatusDelivered:
		t.finished.Add(ctx, 1, opt)
		if !f.claim.CommittedAt.IsZero() {
			t.latency.Record(ctx, r.StartedAt.Add(r.Duration).Sub(f.claim.CommittedAt).Seconds())
		}
	case store.StatusFailed:
		t.finished.Add(ctx, 1, opt)
	}
}

// instrumentTransport wraps the client's transport with the HTTP client
// metrics (mp, naming at most maxHosts receiver hosts; see clientMetrics)
// and, with tracing on, otelhttp's client spans, which inject the W3C
// traceparent into each request. Webhook URLs may carry secrets in their
// path or query (Slack's do), so the spans record only the URL's scheme
// and host. The metrics are the relay's own and otelhttp records none.
func instrumentTransport(base http.RoundTripper, tp trace.TracerProvider, mp metric.MeterProvider, maxHosts int) (http.RoundTripper, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	rt := base
	var err error
	if mp != nil {
		var m *clientMetrics
		if m, err = newClientMetrics(mp, maxHosts); m != nil {
			rt = measured{base: base, metrics: m}
		}
	}
	if tp == nil {
		return instrumented{RoundTripper: rt, base: base}, err
	}
	traced := otelhttp.NewTransport(wholeBody{rt},
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "POST webhook" }),
		otelhttp.WithTracerProvider(redactingProvider{tp: tp}),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()))
	return instrumented{RoundTripper: traced, base: base, traced: true}, err
}

// wholeBody hands net/http a request's body as the bytes the sender made
// (withSentBody), so that its headers and its body leave in one write.
// otelhttp wraps a request's body to count its bytes, and net/http writes
// a body it does not know to be in memory only after flushing the headers
// on their own: with traces on, every attempt cost a second system call,
// and its receiver a second segment to read (docs/PERFORMANCE.md,
// "Metrics on, one write an attempt"). The wrapper is still read to its
// end and closed, as net/http would have, so that otelhttp finishes its
// bookkeeping of the request as it expects to.
type wholeBody struct{ base http.RoundTripper }

func (t wholeBody) RoundTrip(r *http.Request) (*http.Response, error) {
	body, ok := r.Context().Value(sentBodyKey{}).([]byte)
	if !ok || r.Body == nil || r.Body == http.NoBody || int64(len(body)) != r.ContentLength {
		return t.base.RoundTrip(r)
	}
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	// A RoundTripper does not change the request it is given.
	out := *r
	out.Body = io.NopCloser(bytes.NewReader(body))
	return t.base.RoundTrip(&out)
}

// sentBodyKey keys a request's body in its context (withSentBody).
type sentBodyKey struct{}

// withSentBody notes in ctx the body a request carries, for wholeBody.
func withSentBody(ctx context.Context, body []byte) context.Context {
	return context.WithValue(ctx, sentBodyKey{}, body)
}

// instrumented keeps the base transport's CloseIdleConnections, which the
// dispatcher calls when it stops and the wrappers do not pass on.
type instrumented struct {
	http.RoundTripper
	base http.RoundTripper
	// traced is set when otelhttp wraps the requests' bodies (wholeBody).
	traced bool
}

func (t instrumented) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// redactingProvider hands out tracers whose spans keep only the origin of
// url.full.
type redactingProvider struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (p redactingProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return redactingTracer{t: p.tp.Tracer(name, opts...)}
}

type redactingTracer struct {
	embedded.Tracer
	t trace.Tracer
}

func (r redactingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := r.t.Start(ctx, name, opts...)
	return ctx, redactingSpan{span}
}

// redactingSpan rewrites url.full as it is set.
type redactingSpan struct{ trace.Span }

func (s redactingSpan) SetAttributes(kv ...attribute.KeyValue) {
	for i, a := range kv {
		if a.Key == "url.full" {
			clean := make([]attribute.KeyValue, len(kv))
			copy(clean, kv)
			clean[i] = attribute.String("url.full", origin(a.Value.AsString()))
			kv = clean
			break
		}
	}
	s.Span.SetAttributes(kv...)
}

// origin reduces a URL to scheme://host[:port]/….
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "redacted"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
