package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "x")
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	log.InfoContext(ctx, "inside")
	span.End()
	log.Info("outside")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var in, out map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &in)
	_ = json.Unmarshal([]byte(lines[1]), &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() || in["component"] != "x" {
		t.Errorf("inside a span: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("outside a span: %v", out)
	}
}

func TestTraceParentRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	_, span := tp.Tracer("t").Start(context.Background(), "s")
	tp0 := TraceParent(span.SpanContext())
	ctx := WithTraceParent(context.Background(), tp0)
	_, child := tp.Tracer("t").Start(ctx, "child")
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Errorf("child of %q is in trace %s", tp0, child.SpanContext().TraceID())
	}
	if got := WithTraceParent(context.Background(), "garbage"); got != context.Background() {
		if _, c := tp.Tracer("t").Start(got, "x"); c.SpanContext().TraceID() == span.SpanContext().TraceID() {
			t.Error("malformed traceparent joined a trace")
		}
	}
	if TraceParent(child.SpanContext()) == "" || TraceParent(trace.SpanContext{}) != "" {
		t.Error("TraceParent of valid/invalid contexts")
	}
}

// Nothing is exported unless the environment asks for it.
func TestSetupFollowsEnvironment(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	ctx := context.Background()
	p, err := Setup(ctx, Options{Getenv: os.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	if p.Tracer != nil || p.Meter != nil || p.Metrics != nil {
		t.Errorf("unset environment: %+v", p)
	}

	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if p, err = Setup(ctx, Options{Getenv: os.Getenv}); err != nil || p.Tracer != nil {
		t.Errorf("OTEL_TRACES_EXPORTER=none: %+v, %v", p, err)
	}

	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	p, err = Setup(ctx, Options{Getenv: os.Getenv, Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Tracer == nil || p.Meter == nil || p.Metrics == nil {
		t.Errorf("OTLP endpoint and Prometheus: %+v", p)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = p.Shutdown(sctx) // nothing listens there: a failed flush is expected
}

func TestServer(t *testing.T) {
	p, err := Setup(context.Background(), Options{Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := p.Meter.Meter("t").Int64Counter("relay.test.things", metric.WithUnit("{thing}"))
	c.Add(context.Background(), 3)

	var failing atomic.Bool
	failing.Store(true)
	srv, err := NewServer("127.0.0.1:0", p.Metrics, []Check{
		{Name: "store", Run: func(context.Context) error { return nil }},
		{Name: "replication", Run: func(context.Context) error {
			if failing.Load() {
				return errors.New("slot lost")
			}
			return nil
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, `"replication":"slot lost"`) || !strings.Contains(body, `"store":"ok"`) {
		t.Errorf("readyz with a failing check: %d %s", code, body)
	}
	failing.Store(false)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("readyz with passing checks: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "relay_test_things_total 3") {
		t.Errorf("metrics %d:\n%s", code, body)
	}
	if _, err := NewServer(srv.Addr(), nil, nil, nil); err == nil || !strings.Contains(err.Error(), "observability.listen") {
		t.Errorf("second listener on a taken port: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
}

// Runtime profiles are served only when asked for.
func TestServerProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		srv, err := NewServer("127.0.0.1:0", nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv.Profiling = on
		ts := httptest.NewServer(srv.Handler())
		resp, err := http.Get(ts.URL + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ts.Close()
		srv.ln.Close()
		served := resp.StatusCode == 200 && strings.Contains(string(body), "goroutine profile")
		if served != on {
			t.Errorf("Profiling=%v: /debug/pprof/goroutine answered %d", on, resp.StatusCode)
		}
	}
}

// OTEL_TRACES_SAMPLER decides what is recorded; the decision travels in
// the traceparent, so the children of an event that was not sampled are
// not recorded either.
func TestSamplerFromEnvironment(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")
	p, err := Setup(context.Background(), Options{Getenv: os.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	tr := p.Tracer.Tracer("t")
	_, root := tr.Start(context.Background(), "event")
	if root.IsRecording() || !root.SpanContext().IsValid() {
		t.Fatalf("ratio 0: root recording %v, valid %v", root.IsRecording(), root.SpanContext().IsValid())
	}
	stored := TraceParent(root.SpanContext())
	if !strings.HasSuffix(stored, "-00") {
		t.Errorf("stored traceparent %q does not carry the not-sampled flag", stored)
	}
	if _, child := tr.Start(WithTraceParent(context.Background(), stored), "attempt"); child.IsRecording() {
		t.Error("the attempt of an event that was not sampled is recorded")
	}
	sampled := "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
	if _, child := tr.Start(WithTraceParent(context.Background(), sampled), "attempt"); !child.IsRecording() {
		t.Error("the attempt of a sampled event is not recorded")
	}
}
