package relay

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

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
// the dispatcher stops.
func TestInstrumentedTransportClosesIdleConnections(t *testing.T) {
	base := &closeCounter{RoundTripper: http.DefaultTransport}
	c := &http.Client{Transport: instrumentTransport(base, sdktrace.NewTracerProvider(), nil)}
	c.CloseIdleConnections()
	if base.closed != 1 {
		t.Fatalf("CloseIdleConnections reached the base transport %d times", base.closed)
	}
}

type closeCounter struct {
	http.RoundTripper
	closed int
}

func (c *closeCounter) CloseIdleConnections() { c.closed++ }
