package telemetry

import (
	"log/slog"
	"strings"
	"sync"
	"time"
)

// errorsEvery is how often OpenTelemetry's own errors (an exporter that
// cannot reach its collector, say) are logged at most.
const errorsEvery = 30 * time.Second

// errorLog takes OpenTelemetry's errors (otel.SetErrorHandler), which it
// would print with the standard logger, out of the relay's log format and
// as often as an exporter retries: into the relay's log, one line at most
// every errorsEvery with how many came since the last.
type errorLog struct {
	log *slog.Logger

	mu     sync.Mutex
	next   time.Time
	unseen int // errors not logged since the last line
}

// Handle implements otel.ErrorHandler.
func (e *errorLog) Handle(err error) {
	e.handle(time.Now(), err)
}

func (e *errorLog) handle(now time.Time, err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.next) {
		e.unseen++
		return
	}
	e.next = now.Add(errorsEvery)
	attrs := []any{"err", strings.Join(strings.Fields(err.Error()), " ")}
	if e.unseen > 0 {
		attrs = append(attrs, "more_since_last_line", e.unseen)
	}
	e.unseen = 0
	e.log.Warn("telemetry: export failed; logged at most every "+errorsEvery.String()+" (check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL, and that the collector runs)", attrs...)
}
