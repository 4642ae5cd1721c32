package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/store"
	"github.com/smartmaintenance/relay/telemetry"
)

// The log line of a permanent failure carries the failed attempt's trace
// and span ids, and no log line carries the secret or a signature. An event
// stored without a trace still gets a trace of its own per attempt.
func TestFailureLogLeadsToTrace(t *testing.T) {
	e := newEnv(t)
	const secret = "a-webhook-secret-never-logged"
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusBadGateway) })
	hook := e.webhook(rc.URL+"/path?token=query-secret", secret, map[string]string{"Authorization": "Bearer header-secret"})
	id := e.delivery(hook, []byte(`{"event":"task.completed"}`))

	exp := tracetest.NewInMemoryExporter()
	logs := &logBuffer{}
	e.start(Options{
		Schedule:       Schedule{},
		PollInterval:   20 * time.Millisecond,
		Logger:         slog.New(telemetry.LogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)),
	})
	e.waitStatus(id, store.StatusFailed, 10*time.Second)
	eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "failed permanently") },
		func() string { return "no failure log:\n" + logs.String() })

	var attempt tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "delivery attempt" {
			attempt = s
		}
	}
	if !attempt.SpanContext.IsValid() {
		t.Fatalf("no attempt span among %d", len(exp.GetSpans()))
	}
	if attempt.Parent.IsValid() {
		t.Errorf("untraced event: attempt span has parent %v", attempt.Parent)
	}
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "failed permanently") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line["trace_id"] != attempt.SpanContext.TraceID().String() || line["span_id"] != attempt.SpanContext.SpanID().String() {
		t.Errorf("log line %v does not name the attempt's span %v", line, attempt.SpanContext)
	}
	if line["delivery_id"] != id.String() {
		t.Errorf("log line %v lacks the delivery id", line)
	}
	all := logs.String()
	for _, s := range exp.GetSpans() {
		b, _ := json.Marshal(s.Attributes)
		all += string(b)
	}
	for _, leak := range []string{secret, "sha256=", "header-secret", "query-secret"} {
		if strings.Contains(all, leak) {
			t.Errorf("logs or spans contain %q", leak)
		}
	}
}

// The instrumented transport still closes the pool's idle connections when
// the dispatcher stops, with traces on and with metrics alone.
func TestInstrumentedTransportClosesIdleConnections(t *testing.T) {
	for _, traced := range []bool{true, false} {
		base := &closeCounter{RoundTripper: http.DefaultTransport}
		var tp trace.TracerProvider
		var mp metric.MeterProvider = sdkmetric.NewMeterProvider()
		if traced {
			tp, mp = sdktrace.NewTracerProvider(), nil
		}
		rt, err := instrumentTransport(base, tp, mp, 20)
		if err != nil {
			t.Fatal(err)
		}
		(&http.Client{Transport: rt}).CloseIdleConnections()
		if base.closed != 1 {
			t.Errorf("traced %v: CloseIdleConnections reached the base transport %d times", traced, base.closed)
		}
	}
}

type closeCounter struct {
	http.RoundTripper
	closed int
}

func (c *closeCounter) CloseIdleConnections() { c.closed++ }

// The deliveries a relay holds are visible in its metrics: in flight,
// queued with their payloads, and held as ids.
func TestAheadGauge(t *testing.T) {
	e := newEnv(t)
	e.ready()
	rc, _ := heldReceiver(t)
	e.webhook(rc.URL, "", nil)
	reader := sdkmetric.NewManualReader()
	d, _ := e.start(fast(Options{PollInterval: time.Hour, Workers: 2, PerWebhook: 2,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}))
	time.Sleep(50 * time.Millisecond)
	d.Handoff(e.handoffWrite(d, 100, 2*prefetch+50))
	ahead := func() map[string]int64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "relay.deliveries.ahead" {
					for _, p := range g.DataPoints {
						v, _ := p.Attributes.Value("state")
						out[v.AsString()] = p.Value
					}
				}
			}
		}
		return out
	}
	var got map[string]int64
	eventually(t, 5*time.Second, func() bool {
		got = ahead()
		return got["in_flight"] == 2 && got["queued"] == 2*prefetch-2 && got["held"] == 50
	}, func() string {
		return fmt.Sprintf("deliveries ahead %v, want 2 in flight, %d queued, 50 held", got, 2*prefetch-2)
	})
}
