package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/service"
	"github.com/smartmaintenance/relay/signature"
)

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// One event whose first attempt fails and whose retry succeeds after a
// restart of the relay is one trace: the event's span (a root, linked to
// its source transaction's span), two attempt spans that are its children
// (the second from a new tracer provider, as in a new process), each with an
// HTTP client span whose context the receiver got as traceparent.
func TestOneTracePerEventAcrossRestart(t *testing.T) {
	e := newRelay(t)
	e.cfg.Delivery.RetrySchedule = []time.Duration{2 * time.Second}
	e.recv.setRespond(func(_ request, n int) int {
		if n == 1 {
			return 503
		}
		return 200
	})
	exp := tracetest.NewInMemoryExporter()
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e.tel = service.Telemetry{TracerProvider: tp1}
	e.start()
	e.exec(`INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 7)`)
	e.waitFor("first attempt", func() bool { return len(e.recv.requests("/one")) == 1 })
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e.tel = service.Telemetry{TracerProvider: tp2}
	e.start()
	e.waitFor("the retry", func() bool { return len(e.recv.requests("/one")) == 2 })
	e.waitFor("delivered", func() bool {
		var status string
		e.pool.QueryRow(context.Background(), `SELECT status FROM relay.deliveries`).Scan(&status)
		return status == "delivered"
	})
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()

	events := spansNamed(spans, "event audit.exported")
	if len(events) != 1 {
		t.Fatalf("%d event spans, want 1; spans: %v", len(events), names(spans))
	}
	ev := events[0]
	if ev.Parent.IsValid() {
		t.Errorf("event span has a parent %v; it must start its own trace", ev.Parent)
	}
	for key, want := range map[string]string{"relay.table": "activity_log_exports", "relay.operation": "insert", "relay.event_type": "audit.exported"} {
		if v, _ := attr(ev, key); v.AsString() != want {
			t.Errorf("event span %s = %q, want %q", key, v.AsString(), want)
		}
	}
	if v, _ := attr(ev, "relay.company_id"); v.AsInt64() != 1 {
		t.Errorf("event span relay.company_id = %v", v.AsInt64())
	}
	var commitLSN int64
	e.pool.QueryRow(context.Background(), `SELECT commit_lsn FROM relay.events`).Scan(&commitLSN)
	if v, _ := attr(ev, "relay.commit_lsn"); v.AsString() != event.LSN(commitLSN).String() {
		t.Errorf("event span relay.commit_lsn = %q, want %s", v.AsString(), event.LSN(commitLSN))
	}
	txs := spansNamed(spans, "ingest transaction")
	if len(txs) != 1 || len(ev.Links) != 1 || ev.Links[0].SpanContext.SpanID() != txs[0].SpanContext.SpanID() {
		t.Errorf("event span links %v, want the one source transaction span of %d", ev.Links, len(txs))
	}
	// The transaction's span shows the feed's delay on each side: the
	// commit, the server's send, and its own start when the relay read it.
	if len(txs) == 1 {
		committed, _ := attr(txs[0], "relay.commit_time")
		sent, _ := attr(txs[0], "relay.sent_time")
		c, errC := time.Parse(time.RFC3339Nano, committed.AsString())
		s, errS := time.Parse(time.RFC3339Nano, sent.AsString())
		if errC != nil || errS != nil || s.Before(c) || txs[0].StartTime.Before(s) {
			t.Errorf("transaction span: committed %q, sent %q, read at %s", committed.AsString(), sent.AsString(), txs[0].StartTime)
		}
	}
	var stored string
	e.pool.QueryRow(context.Background(), `SELECT traceparent FROM relay.events`).Scan(&stored)
	if want := fmt.Sprintf("00-%s-%s-01", ev.SpanContext.TraceID(), ev.SpanContext.SpanID()); stored != want {
		t.Errorf("stored traceparent %q, want %q", stored, want)
	}

	attempts := spansNamed(spans, "delivery attempt")
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans, want 2; spans: %v", len(attempts), names(spans))
	}
	reqs := e.recv.requests("/one")
	delivery := reqs[0].Header.Get(signature.DeliveryHeader)
	wantOutcome := []string{"retrying", "delivered"}
	wantStatus := []int64{503, 200}
	for i, a := range attempts {
		if a.Parent.SpanID() != ev.SpanContext.SpanID() || a.SpanContext.TraceID() != ev.SpanContext.TraceID() {
			t.Errorf("attempt %d: parent %v, want the event span %v", i+1, a.Parent, ev.SpanContext)
		}
		if v, _ := attr(a, "relay.attempt"); v.AsInt64() != int64(i+1) {
			t.Errorf("attempt span %d: relay.attempt = %d", i+1, v.AsInt64())
		}
		if v, _ := attr(a, "relay.delivery_id"); v.AsString() != delivery {
			t.Errorf("attempt span %d: relay.delivery_id = %q, want %q", i+1, v.AsString(), delivery)
		}
		if v, ok := attr(a, "relay.webhook_id"); !ok || v.AsInt64() == 0 {
			t.Errorf("attempt span %d: no relay.webhook_id", i+1)
		}
		if v, _ := attr(a, "relay.outcome"); v.AsString() != wantOutcome[i] {
			t.Errorf("attempt span %d: relay.outcome = %q, want %q", i+1, v.AsString(), wantOutcome[i])
		}
		if v, _ := attr(a, "http.response.status_code"); v.AsInt64() != wantStatus[i] {
			t.Errorf("attempt span %d: status %d, want %d", i+1, v.AsInt64(), wantStatus[i])
		}
		if _, ok := attr(a, "relay.duration_ms"); !ok {
			t.Errorf("attempt span %d: no relay.duration_ms", i+1)
		}
		next, ok := attr(a, "relay.next_attempt_at")
		if ok != (i == 0) {
			t.Errorf("attempt span %d: relay.next_attempt_at present = %v", i+1, ok)
		}
		if i == 0 {
			at, err := time.Parse(time.RFC3339Nano, next.AsString())
			if err != nil || at.Before(a.StartTime.Add(2*time.Second)) {
				t.Errorf("attempt span 1: next attempt at %q, want >= 2s after %v", next.AsString(), a.StartTime)
			}
		}

		// The HTTP client span below the attempt carried the trace to the
		// receiver, and the signed body is untouched.
		var client *tracetest.SpanStub
		for _, s := range spans {
			if s.Parent.SpanID() == a.SpanContext.SpanID() {
				client = &s
			}
		}
		if client == nil || client.SpanKind != trace.SpanKindClient {
			t.Fatalf("attempt %d has no HTTP client span", i+1)
		}
		want := fmt.Sprintf("00-%s-%s-01", client.SpanContext.TraceID(), client.SpanContext.SpanID())
		if got := reqs[i].Header.Get("Traceparent"); got != want {
			t.Errorf("request %d traceparent %q, want %q", i+1, got, want)
		}
		if u, _ := attr(*client, "url.full"); strings.Contains(u.AsString(), "/one") {
			t.Errorf("HTTP span records the webhook URL's path: %q", u.AsString())
		}
		if err := signature.Verify([]byte(secret1), reqs[i].Body, reqs[i].Header.Get(signature.Header)); err != nil {
			t.Errorf("request %d: %v", i+1, err)
		}
	}
	if attempts[1].StartTime.Sub(attempts[0].StartTime) < 2*time.Second {
		t.Errorf("second attempt span started %v after the first", attempts[1].StartTime.Sub(attempts[0].StartTime))
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// A webhook header named traceparent never replaces the relay's.
func TestWebhookCannotOverrideTraceparent(t *testing.T) {
	e := newRelay(t)
	e.cfg.Webhooks.Endpoints[0].Headers = map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
	if err := e.cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Traceparent is set by the relay") {
		t.Fatalf("config accepted a traceparent header: %v", err)
	}
	// Webhooks edited into the table skip the file's validation: the
	// sender still drops the header.
	e.cfg.Webhooks.Endpoints[0].Headers = nil
	exp := tracetest.NewInMemoryExporter()
	e.tel = service.Telemetry{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))}
	e.start()
	e.exec(`UPDATE relay.webhooks SET headers = '{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tracestate": "x=y"}' WHERE name = 'one'`)
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`)
	e.waitFor("delivery", func() bool { return len(e.recv.requests("/one")) == 1 })
	r := e.recv.requests("/one")[0]
	if got := r.Header.Get("Traceparent"); got == "" || strings.Contains(got, "1111111111") {
		t.Errorf("traceparent %q: want the relay's own", got)
	}
	if r.Header.Get("Tracestate") == "x=y" {
		t.Errorf("webhook header replaced tracestate")
	}
}

// sumOf returns the value of an Int64 sum or gauge data point with the
// given attribute (or any, when key is "").
func point(t *testing.T, rm metricdata.ResourceMetrics, name, key, val string) (float64, bool) {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			match := func(set attribute.Set) bool {
				if key == "" {
					return true
				}
				v, ok := set.Value(attribute.Key(key))
				return ok && v.Emit() == val
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return float64(p.Value), true
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return float64(p.Value), true
					}
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return p.Value, true
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return float64(p.Count), true
					}
				}
			}
		}
	}
	return 0, false
}

// Counters and gauges move as deliveries succeed, retry and fail.
func TestMetricsFollowDeliveries(t *testing.T) {
	e := newRelay(t)
	e.cfg.Delivery.RetrySchedule = []time.Duration{1500 * time.Millisecond}
	e.recv.setRespond(func(r request, _ int) int {
		if r.Path == "/two" {
			return 500
		}
		return 204
	})
	reader := sdkmetric.NewManualReader()
	e.tel = service.Telemetry{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}
	e.start()
	collect := func() metricdata.ResourceMetrics {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		return rm
	}
	expect := func(rm metricdata.ResourceMetrics, name, key, val string, want float64) {
		t.Helper()
		if got, ok := point(t, rm, name, key, val); !ok || got != want {
			t.Errorf("%s{%s=%q} = %v (present %v), want %v", name, key, val, got, ok, want)
		}
	}
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1), (2, 2)`)
	e.waitFor("first attempts", func() bool { return len(e.recv.requests("")) == 2 })
	// First attempts go out before the store records them (within a tenth
	// of a second); the success rates, read from the store, are kept for
	// successRefresh once read.
	e.waitFor("both attempts stored", func() bool {
		var n int
		e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.attempts`).Scan(&n)
		return n == 2
	})
	var rm1 metricdata.ResourceMetrics
	e.waitFor("both attempts recorded", func() bool {
		rm1 = collect()
		d, _ := point(t, rm1, "relay.delivery.attempts", "outcome", "delivered")
		r, _ := point(t, rm1, "relay.delivery.attempts", "outcome", "retrying")
		// The stored-deliveries gauge reads the store, which records
		// attempts in batches just after they are counted.
		stored, _ := point(t, rm1, "relay.deliveries.stored", "status", "retrying")
		return d == 1 && r == 1 && stored == 1
	})
	expect(rm1, "relay.events", "event_type", "audit.exported", 2)
	expect(rm1, "relay.deliveries.created", "", "", 2)
	expect(rm1, "relay.deliveries", "outcome", "delivered", 1)
	expect(rm1, "relay.deliveries.stored", "status", "retrying", 1)
	expect(rm1, "relay.deliveries.stored", "status", "failed", 0)
	expect(rm1, "relay.delivery.latency", "", "", 1)
	expect(rm1, "relay.webhook.success_rate", "webhook", "one", 1)
	expect(rm1, "relay.webhook.success_rate", "webhook", "two", 0)
	expect(rm1, "relay.webhook.attempts.24h", "webhook", "two", 1)
	if v, ok := point(t, rm1, "relay.replication.slot.retained_wal", "", ""); !ok || v <= 0 {
		t.Errorf("retained WAL = %v (present %v), want > 0", v, ok)
	}
	if _, ok := point(t, rm1, "relay.replication.lag.bytes", "", ""); !ok {
		t.Errorf("no replication lag in bytes")
	}
	if _, ok := point(t, rm1, "relay.replication.lag.seconds", "", ""); !ok {
		t.Errorf("no replication lag in seconds")
	}
	// The feed's delay, per source transaction and stage: the two
	// transactions that fired, at least, each in seconds (this machine's
	// server sends a commit within a second, and the relay reads it).
	for _, stage := range []string{"server", "relay"} {
		n, ok := point(t, rm1, "relay.replication.read.delay", "stage", stage)
		longest := histogramMax(rm1, "relay.replication.read.delay", stage)
		if !ok || n < 1 || longest < 0 || longest > 1 {
			t.Errorf("read delay, %s: %v transactions (present %v), longest %v s", stage, n, ok, longest)
		}
	}

	e.waitFor("the failure", func() bool {
		var n int
		e.pool.QueryRow(context.Background(), `SELECT count(*) FROM relay.deliveries WHERE status = 'failed'`).Scan(&n)
		return n == 1
	})
	var rm2 metricdata.ResourceMetrics
	e.waitFor("failure counted", func() bool {
		rm2 = collect()
		f, _ := point(t, rm2, "relay.deliveries", "outcome", "failed")
		return f == 1
	})
	expect(rm2, "relay.delivery.attempts", "outcome", "failed", 1)
	expect(rm2, "relay.delivery.attempts", "outcome", "delivered", 1)
	expect(rm2, "relay.deliveries.stored", "status", "retrying", 0)
	expect(rm2, "relay.deliveries.stored", "status", "failed", 1)
	expect(rm2, "relay.delivery.attempt.duration", "outcome", "failed", 1)
	expect(rm2, "relay.delivery.latency", "", "", 1)
}

// histogramMax is the largest value a histogram recorded for stage, or -1.
func histogramMax(rm metricdata.ResourceMetrics, name, stage string) float64 {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			d, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != name || !ok {
				continue
			}
			for _, p := range d.DataPoints {
				v, _ := p.Attributes.Value("stage")
				if longest, ok := p.Max.Value(); ok && v.Emit() == stage {
					return longest
				}
			}
		}
	}
	return -1
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runObservable runs the relay as service.Run does, with the
// observability endpoints on and no OTLP export, until the test ends, and
// returns a GET of one of its paths: the status and the body.
func (e *relayEnv) runObservable() func(path string) (int, string) {
	t := e.t
	e.cfg.Observability.Listen = freeAddr(t)
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		t.Setenv(k, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- service.Run(ctx, e.cfg, slog.New(slog.NewTextHandler(e.logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	base := "http://" + e.cfg.Observability.Listen
	return func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

// service.Run serves /healthz, /readyz and the Prometheus /metrics on
// observability.listen, with the relay's metrics under their documented
// names.
func TestObservabilityEndpoints(t *testing.T) {
	e := newRelay(t)
	get := e.runObservable()
	e.waitFor("ready", func() bool { code, _ := get("/readyz"); return code == 200 })
	code, body := get("/readyz")
	var checks map[string]string
	if err := json.Unmarshal([]byte(body), &checks); err != nil || checks["database"] != "ok" || checks["replication"] != "ok" || checks["store"] != "ok" {
		t.Errorf("readyz %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	e.exec(`INSERT INTO activity_log_exports (company_id, row_count) VALUES (1, 1)`)
	e.waitFor("delivery", func() bool { return len(e.recv.requests("/one")) == 1 })
	var metrics string
	e.waitFor("metrics", func() bool {
		_, metrics = get("/metrics")
		return strings.Contains(metrics, `relay_delivery_attempts_total{outcome="delivered"} 1`)
	})
	for _, want := range []string{
		`relay_events_total{event_type="audit.exported"} 1`,
		`relay_deliveries_created_total 1`,
		`relay_deliveries_total{outcome="delivered"} 1`,
		// Outcomes that have not happened yet are there at 0, so that an
		// alert on their increase sees the first one after a start.
		`relay_deliveries_total{outcome="failed"} 0`,
		`relay_delivery_attempts_total{outcome="failed"} 0`,
		`relay_delivery_attempts_total{outcome="retrying"} 0`,
		`relay_delivery_attempt_duration_seconds_bucket{`,
		`relay_delivery_latency_seconds_bucket{`,
		`relay_deliveries_stored{status="pending"}`,
		`relay_replication_lag_bytes `,
		`relay_replication_lag_seconds `,
		`relay_replication_read_delay_seconds_count{stage="server"} `,
		`relay_replication_read_delay_seconds_count{stage="relay"} `,
		`relay_replication_slot_retained_wal_bytes `,
		`relay_webhook_success_rate_ratio{company_id="1",webhook="one",webhook_id=`,
		`relay_webhook_attempts_24h{`,
		`go_goroutines `,
		`http_client_request_duration_seconds_bucket{`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", metrics)
	}
}

// While the database is down, /readyz says why in one line per check, and
// the scrapes that cannot read the gauges are logged once, not each time.
func TestObservabilityWhileTheDatabaseIsDown(t *testing.T) {
	e := newRelay(t)
	get := e.runObservable()
	e.waitFor("ready", func() bool { code, _ := get("/readyz"); return code == 200 })

	srv := pgtest.Shared(t)
	e.pool.Reset()
	if err := srv.StopServer(context.Background(), "fast"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = srv.StartServer(context.Background())
		}
	}()
	// The first answers may come from connections the server ended as it
	// stopped; then each check connects anew, and fails.
	var checks map[string]string
	var code int
	var body string
	e.waitFor("readyz's checks trying to connect", func() bool {
		code, body = get("/readyz")
		checks = nil
		_ = json.Unmarshal([]byte(body), &checks)
		return strings.Contains(checks["database"], "failed to connect") && strings.Contains(checks["store"], "failed to connect")
	})
	if code != 503 {
		t.Errorf("readyz with the database down: %d %s", code, body)
	}
	for _, name := range []string{"database", "store"} {
		if c := checks[name]; strings.ContainsAny(c, "\n\t") || !strings.Contains(c, "(is PostgreSQL running") {
			t.Errorf("readyz's %s: %q, want one line with the cause and what to check", name, c)
		}
	}
	for range 3 {
		get("/metrics")
	}
	if err := srv.StartServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	e.waitFor("ready again", func() bool { code, _ := get("/readyz"); return code == 200 })
	e.waitFor("the gauges read again", func() bool {
		get("/metrics")
		return strings.Contains(e.logs.String(), "metrics: reading the gauges from the databases works again")
	})
	logs := e.logs.String()
	failed := regexp.MustCompile(`(?m)^.*metrics: reading the gauges from the databases failed.*$`).FindAllString(logs, -1)
	if len(failed) != 1 || !strings.Contains(failed[0], "(is PostgreSQL running") {
		t.Errorf("%d lines of the gauges failing over 3 scrapes, want 1 with the cause and what to check:\n%s", len(failed), strings.Join(failed, "\n"))
	}
}

// A relay standing by for another one (which streams the slot) is ready:
// it sends deliveries and takes over when the other dies.
func TestReadyWhileStandingBy(t *testing.T) {
	e := newRelay(t)
	e.start()
	second := *e.cfg
	second.Observability.Listen = freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- service.RunWith(ctx, &second, slog.New(slog.NewTextHandler(logs, nil)), service.Telemetry{})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second relay: %v", err)
		}
	}()
	e.waitFor("the second relay standing by", func() bool { return strings.Contains(logs.String(), "standing by") })
	resp, err := http.Get("http://" + second.Observability.Listen + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"replication":"ok"`) {
		t.Errorf("readyz of a relay standing by: %d %s", resp.StatusCode, body)
	}
}
