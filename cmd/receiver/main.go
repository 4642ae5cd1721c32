// Command receiver is a sample webhook receiver: it verifies each request's
// X-SMTM-Signature with the relay's signature package, prints the event
// with its delivery id and the trace it belongs to (from the W3C
// traceparent header), and answers 204. It is the receiver of the
// docker-compose setup, and a starting point for a real one.
//
//	receiver --listen :8080 --secret /kahatex=SECRET --secret /nordwerk=SECRET [--fail-every 7]
//
// Secrets may also come from RECEIVER_SECRETS ("/path=secret,/path=secret").
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/smartmaintenance/relay/signature"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(2)
	}
}

// secrets maps a URL path to its webhook's signing secret.
type secrets map[string]string

func (s secrets) String() string { return fmt.Sprintf("%d secret(s)", len(s)) }

func (s secrets) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		path, secret, ok := strings.Cut(item, "=")
		if !ok || !strings.HasPrefix(path, "/") || secret == "" {
			return fmt.Errorf("%q: want /path=secret", item)
		}
		s[path] = secret
	}
	return nil
}

func run(args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	keys := secrets{}
	fs.Var(keys, "secret", "/path=secret: the signing secret of the webhook posting to /path (repeatable)")
	failEvery := fs.Int("fail-every", 0, "answer 503 to every n-th first attempt, to show retries (0: never)")
	if err := keys.Set(getenv("RECEIVER_SECRETS")); err != nil {
		return fmt.Errorf("RECEIVER_SECRETS: %w", err)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("no secrets: pass --secret /path=secret or set RECEIVER_SECRETS")
	}
	h := &handler{keys: keys, failEvery: *failEvery, out: out, seen: map[string]int{}}
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(out, "receiver listening on %s for %s\n", *listen, strings.Join(paths(keys), ", "))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func paths(s secrets) []string {
	var out []string
	for p := range s {
		out = append(out, p)
	}
	return out
}

type handler struct {
	keys      secrets
	failEvery int
	out       io.Writer

	mu       sync.Mutex
	received int
	seen     map[string]int
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	secret, ok := h.keys[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Verify the raw bytes, never re-encoded JSON.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	id := r.Header.Get(signature.DeliveryHeader)
	trace := traceID(r.Header.Get("Traceparent"))
	if err := signature.Verify([]byte(secret), body, r.Header.Get(signature.Header)); err != nil {
		h.printf("REJECTED %s delivery %s: %v\n", r.URL.Path, id, err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	h.mu.Lock()
	h.received++
	h.seen[id]++
	attempt, n := h.seen[id], h.received
	h.mu.Unlock()
	if h.failEvery > 0 && attempt == 1 && n%h.failEvery == 0 {
		h.printf("503 to %s delivery %s (trace %s): the relay will retry it\n", r.URL.Path, id, trace)
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	var p struct {
		Event       string          `json:"event"`
		Timestamp   string          `json:"timestamp"`
		CompanyName string          `json:"company_name"`
		Data        json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(body, &p)
	h.printf("OK %-22s %-14s %s signature ok delivery %s attempt %d trace %s\n   %s\n",
		p.Event, p.CompanyName, p.Timestamp, id, attempt, trace, p.Data)
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) printf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.out, format, args...)
}

// traceID returns the trace id of a W3C traceparent, or "-".
func traceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return "-"
	}
	return parts[1]
}
