package ingest

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/smartmaintenance/relay/event"
)

// benchTx runs the tracing of one source transaction with n events, as the
// ingester does: begin, one span per event, commit.
func benchTx(b *testing.B, tp trace.TracerProvider, n int) {
	t, err := newTelem(tp, nil)
	if err != nil {
		b.Fatal(err)
	}
	tx := event.Tx{CommitLSN: 0x16B374D848, EndLSN: 0x16B374D900, CommitTime: time.Now(), XID: 7}
	e := event.Event{Type: "task.completed", CompanyID: 1, CommitLSN: tx.CommitLSN, Table: "tasks", Op: event.Update}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t.begin(tx)
		for j := 0; j < n; j++ {
			e.Seq = j
			e.TraceParent = t.event(&e)
		}
		t.txCommitted(tx, int64(n))
		t.committed(int64(n))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// Per-event cost of tracing: none (no provider), a provider whose sampler
// drops everything, a 1% ratio, and every event recorded (exported to a
// discarding batcher).
func BenchmarkEventTracing(b *testing.B) {
	discard := sdktrace.WithBatcher(tracetest.NewNoopExporter())
	for _, c := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", nil},
		{"sampled_out", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), discard)},
		{"ratio_1pct", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.TraceIDRatioBased(0.01)), discard)},
		{"always", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), discard)},
	} {
		b.Run(c.name, func(b *testing.B) { benchTx(b, c.tp, 10) })
	}
}

// The event span ends at the commit, is linked to the transaction span and
// its stored traceparent names it; a transaction without events leaves no
// span; the open-span bound ends spans past it early.
func TestEventSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := newTelem(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), nil)
	if err != nil {
		t.Fatal(err)
	}
	tx := event.Tx{CommitLSN: 0x10, EndLSN: 0x20, CommitTime: time.Now(), XID: 3}
	tel.begin(tx)
	tel.txCommitted(tx, 0)
	tel.committed(3)
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("a transaction without events left %d spans", n)
	}

	tel.begin(tx)
	var parents []string
	for i := 0; i < maxOpenEventSpans+5; i++ {
		parents = append(parents, tel.event(&event.Event{Type: "user.created", CompanyID: 2, Seq: i, Table: "users", Op: event.Insert}))
	}
	tel.written()
	if n := len(exp.GetSpans()); n != 5 {
		t.Fatalf("%d spans ended at the chunk write, want the 5 over the bound", n)
	}
	tel.txCommitted(tx, 3)
	tel.committed(3)
	spans := exp.GetSpans()
	if len(spans) != maxOpenEventSpans+5+1 {
		t.Fatalf("%d spans, want %d events and 1 transaction", len(spans), maxOpenEventSpans+5)
	}
	var txSpan tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "ingest transaction" {
			txSpan = s
		}
	}
	seen := map[string]bool{}
	for _, s := range spans {
		if s.Name != "event user.created" {
			continue
		}
		seen["00-"+s.SpanContext.TraceID().String()+"-"+s.SpanContext.SpanID().String()+"-01"] = true
		if len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != txSpan.SpanContext.SpanID() {
			t.Fatalf("event span not linked to the transaction span")
		}
	}
	for _, p := range parents {
		if !seen[p] {
			t.Fatalf("stored traceparent %s names no event span", p)
		}
	}
	_ = context.Background()
}
