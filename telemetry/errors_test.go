package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/internal/syncbuf"
)

func TestErrorLogAtMostEvery30s(t *testing.T) {
	var buf syncbuf.Buffer
	e := &errorLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	t0 := time.Now()
	e.handle(t0, errors.New("traces export: Post \"http://c:4318/v1/traces\":\n\tconnection refused"))
	for i := range 5 {
		e.handle(t0.Add(time.Duration(i+1)*time.Second), errors.New("traces export: connection refused"))
	}
	e.handle(t0.Add(errorsEvery), errors.New("failed to upload metrics: connection refused"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 7 errors over 30 s, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `err="traces export: Post \"http://c:4318/v1/traces\": connection refused"`) || strings.Contains(lines[0], "more_since") {
		t.Errorf("first line: %s", lines[0])
	}
	if !strings.Contains(lines[1], "failed to upload metrics") || !strings.Contains(lines[1], "more_since_last_line=5") {
		t.Errorf("second line: %s", lines[1])
	}
}

// TestExportErrorsInTheRelaysLog: a collector that cannot be reached shows
// in the relay's own log, in its format, not through the standard logger.
func TestExportErrorsInTheRelaysLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+closed)
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	var buf syncbuf.Buffer
	p, err := Setup(context.Background(), Options{Getenv: os.Getenv, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if p.Tracer == nil {
		t.Fatal("no tracer for OTEL_TRACES_EXPORTER=otlp")
	}
	_, span := p.Tracer.Tracer("t").Start(context.Background(), "s")
	span.End()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(buf.String(), "telemetry: export failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no export failure in the relay's log:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"level":"WARN"`) {
			t.Errorf("not a line of the relay's JSON log: %s", line)
		}
	}
}
