package relay

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/smartmaintenance/relay/store"
)

// With traces and metrics on, an attempt's headers and body still leave in
// one write (otelhttp's wrapping of the body made net/http flush the
// headers on their own), the receiver reads the body whole, and the HTTP
// client metric counts the bytes sent.
func TestInstrumentedAttemptIsOneWrite(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	var writes atomic.Int64
	base := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}}
	t.Cleanup(base.CloseIdleConnections)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	rt, err := instrumentTransport(base, sdktrace.NewTracerProvider(), mp, 20)
	if err != nil {
		t.Fatal(err)
	}
	s := sender{
		client:    &http.Client{Transport: rt},
		userAgent: "relay-test", timeout: 5 * time.Second, snippetBytes: 64,
	}
	body := []byte(`{"event":"task.assigned","data":{"task_id":42,"title":"Replace the pump seal"}}`)
	for i := range 3 {
		before := writes.Load()
		out := s.send(context.Background(), &store.Claimed{ID: uuid.New(), EventType: "task.assigned", Body: body, URL: srv.URL + "/hook", Secret: "s3cret"})
		if out.err != "" {
			t.Fatalf("attempt %d: %s", i+1, out.err)
		}
		if n := writes.Load() - before; n != 1 {
			t.Errorf("attempt %d left in %d writes, want 1", i+1, n)
		}
		mu.Lock()
		if string(got) != string(body) {
			t.Errorf("attempt %d: the receiver read %q", i+1, got)
		}
		mu.Unlock()
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var sum, count int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Histogram[int64]); ok && m.Name == "http.client.request.body.size" {
				for _, p := range d.DataPoints {
					sum, count = sum+p.Sum, count+int64(p.Count)
				}
			}
		}
	}
	if count != 3 || sum != 3*int64(len(body)) {
		t.Errorf("request body size: %d bytes over %d requests, want %d over 3", sum, count, 3*len(body))
	}
}

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}
