// Package receiver is a sample webhook receiver: it verifies each request's
// X-SMTM-Signature with the signature package, prints the event with its
// delivery id, attempt and trace (from the W3C traceparent header), and
// answers 204. The demo and cmd/receiver (the docker-compose receiver) use
// it; it is also a starting point for a real receiver.
package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/smartmaintenance/relay/internal/termtext"
	"github.com/smartmaintenance/relay/signature"
)

// MaxBody is the largest body the handler reads; a larger one is answered
// 413. The relay sends a payload whole, with its rows' text fields as the
// platform stored them, so a receiver's limit must be above the largest
// event its platform can make, not a web form's 1 MiB.
const MaxBody = 64 << 20

// Handler receives the webhooks of several endpoints, one path each.
type Handler struct {
	secrets   map[string]string
	failEvery int
	out       io.Writer

	mu        sync.Mutex
	received  int
	verified  int
	rejected  int
	delivered int
	seen      map[string]int // delivery id -> attempts seen
}

// New returns a handler for the given paths and their signing secrets. With
// failEvery > 0 it answers 503 to every failEvery-th first attempt, to show
// that the relay retries with the same delivery id.
func New(secrets map[string]string, failEvery int, out io.Writer) *Handler {
	return &Handler{secrets: secrets, failEvery: failEvery, out: out, seen: map[string]int{}}
}

// Counts returns how many requests arrived, passed and failed verification.
func (h *Handler) Counts() (received, verified, rejected int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.received, h.verified, h.rejected
}

// Delivered returns how many requests were accepted (answered 2xx): the
// deliveries that arrived, without the attempts answered 503 on purpose or
// refused for their signature.
func (h *Handler) Delivered() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delivered
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	secret, ok := h.secrets[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	id := r.Header.Get(signature.DeliveryHeader)
	// Verify the raw bytes, never re-encoded JSON, and all of them: a
	// payload carries its rows' text whole, so it can be megabytes.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.count(func() { h.rejected++ })
			h.printf("✗ TOO LARGE %s delivery %s: the body is over %d MiB; not verified\n", safe(r.URL.Path), safe(id), MaxBody>>20)
			http.Error(w, fmt.Sprintf("body over %d MiB", MaxBody>>20), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	trace := traceID(r.Header.Get("Traceparent"))
	h.mu.Lock()
	h.received++
	n := h.received
	h.mu.Unlock()
	if err := signature.Verify([]byte(secret), body, r.Header.Get(signature.Header)); err != nil {
		h.count(func() { h.rejected++ })
		h.printf("✗ REJECTED %s delivery %s: %v\n", safe(r.URL.Path), safe(id), err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p struct {
		Event       string          `json:"event"`
		Timestamp   string          `json:"timestamp"`
		CompanyName string          `json:"company_name"`
		Data        json.RawMessage `json:"data"`
		Test        bool            `json:"test"`
		// Text is a Slack message's summary (a slack-format webhook).
		Text string `json:"text"`
	}
	_ = json.Unmarshal(body, &p)
	shown := string(p.Data)
	if p.Event == "" && p.Text != "" {
		// A Slack message: the event type travels in its header, and the
		// line to show is the message's own.
		p.Event = r.Header.Get(signature.EventHeader)
		shown = "Slack message: " + p.Text
	}
	var attempt int
	h.count(func() {
		h.verified++
		h.seen[id]++
		attempt = h.seen[id]
	})
	// A test event is never retried: answering it 503 would show nothing
	// but a failed test.
	if h.failEvery > 0 && attempt == 1 && n%h.failEvery == 0 && !p.Test {
		h.printf("  %s answered 503 to delivery %s: the relay retries it\n", safe(r.URL.Path), safe(id))
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	retry := ""
	if attempt > 1 {
		retry = " (a retry: same delivery id)"
	}
	if p.Test {
		retry += " (a test event)"
	}
	if trace != "" {
		trace = " trace " + trace
	}
	// What is printed comes from the platform's rows and the sender:
	// escaped, it cannot draw on the terminal.
	h.count(func() {
		h.delivered++
		fmt.Fprintf(h.out, "✓ %-22s %-14s %s  signature ok  delivery %s attempt %d%s%s\n    %s\n",
			safe(p.Event), safe(p.CompanyName), safe(p.Timestamp), safe(id), attempt, retry, trace, safe(shown))
	})
	w.WriteHeader(http.StatusNoContent)
}

var safe = termtext.Safe

func (h *Handler) count(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f()
}

func (h *Handler) printf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.out, format, args...)
}

// traceID returns the trace id of a W3C traceparent, or "".
func traceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}
