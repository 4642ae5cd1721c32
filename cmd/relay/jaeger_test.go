package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/internal/pgtest"
	"github.com/smartmaintenance/relay/internal/syncbuf"
	"github.com/smartmaintenance/relay/platform"
	"github.com/smartmaintenance/relay/signature"
)

// jaegerTrace is the part of Jaeger's query API answer the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
}

// TestJaegerEndToEnd runs the relay binary with OTLP pointed at a real
// Jaeger, delivers one event, and finds its trace through Jaeger's query
// API by the delivery id the receiver got. It needs the Jaeger binary:
// `make jaeger-e2e` builds it (v1.75.0) and sets JAEGER_BIN.
func TestJaegerEndToEnd(t *testing.T) {
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		t.Skip("JAEGER_BIN is not set; run make jaeger-e2e")
	}
	const query = "http://127.0.0.1:16686"
	jaeger := exec.Command(bin)
	jaeger.Env = append(os.Environ(), "JAEGER_LISTEN_HOST=127.0.0.1")
	jlog := &syncText{}
	jaeger.Stdout, jaeger.Stderr = jlog, jlog
	if err := jaeger.Start(); err != nil {
		t.Fatal(err)
	}
	jdone := make(chan error, 1)
	go func() { jdone <- jaeger.Wait() }()
	t.Cleanup(func() {
		_ = jaeger.Process.Kill()
		<-jdone
		if t.Failed() {
			t.Logf("jaeger output (tail):\n%s", tail(jlog.String(), 3000))
		}
	})
	waitFor(t, "jaeger's query API", time.Minute, func() bool {
		resp, err := http.Get(query + "/api/services")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	dbURL := pgtest.NewDatabase(t, platform.Schema, platform.Sample)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var mu sync.Mutex
	var got []http.Header
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if signature.Verify([]byte(secret), body, r.Header.Get(signature.Header)) != nil {
			w.WriteHeader(401)
			return
		}
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer recv.Close()

	service := fmt.Sprintf("smtm-relay-e2e-%d", time.Now().UnixNano())
	for k, v := range map[string]string{
		"OTEL_SERVICE_NAME":           service,
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_METRICS_EXPORTER":       "none",
		"OTEL_BSP_SCHEDULE_DELAY":     "200",
	} {
		t.Setenv(k, v)
	}
	p := startRelay(t, "run", "--config", writeConfig(t, dbURL, recv.URL+"/hook", ""))
	waitStreaming(t, pool)
	if _, err := pool.Exec(context.Background(), `INSERT INTO activity_log_exports (company_id, exported_by, row_count) VALUES (1, 2, 42)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	mu.Lock()
	delivery := got[0].Get(signature.DeliveryHeader)
	traceparent := got[0].Get("Traceparent")
	mu.Unlock()
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		t.Fatalf("receiver got traceparent %q", traceparent)
	}

	tags, _ := json.Marshal(map[string]string{"relay.delivery_id": delivery})
	search := query + "/api/traces?" + url.Values{"service": {service}, "tags": {string(tags)}, "lookback": {"1h"}, "limit": {"20"}}.Encode()
	var traces []jaegerTrace
	waitFor(t, "the trace in Jaeger", 30*time.Second, func() bool {
		resp, err := http.Get(search)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Data []jaegerTrace `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&body) != nil {
			return false
		}
		traces = body.Data
		// The whole trace: event, attempt and HTTP client spans.
		return len(traces) == 1 && len(traces[0].Spans) >= 3
	})
	tr := traces[0]
	if tr.TraceID != parts[1] {
		t.Errorf("Jaeger found trace %s by delivery id, the receiver's traceparent names %s", tr.TraceID, parts[1])
	}
	ops := map[string]string{}
	for _, s := range tr.Spans {
		ops[s.OperationName] = s.SpanID
	}
	for _, want := range []string{"event audit.exported", "delivery attempt", "POST webhook"} {
		if ops[want] == "" {
			t.Errorf("trace lacks span %q; has %v", want, ops)
		}
	}
	for _, s := range tr.Spans {
		if s.OperationName == "delivery attempt" && (len(s.References) == 0 || s.References[0].SpanID != ops["event audit.exported"]) {
			t.Errorf("attempt span's references %v: want the event span %s", s.References, ops["event audit.exported"])
		}
	}
	_ = p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// syncText collects output written from many goroutines.
type syncText = syncbuf.Buffer
