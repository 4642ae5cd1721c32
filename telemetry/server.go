package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// Check is one readiness condition: nil when it holds.
type Check struct {
	Name string
	Run  func(context.Context) error
}

// Server serves /metrics, /healthz and /readyz. Create it with NewServer
// and run it with Run.
type Server struct {
	// Profiling adds Go's runtime profiles under /debug/pprof/. Set it
	// before Run.
	Profiling bool

	addr    string
	metrics http.Handler
	checks  []Check
	log     *slog.Logger
	ln      net.Listener
}

// checkTimeout bounds one readiness probe.
const checkTimeout = 3 * time.Second

// NewServer listens on addr (host:port; port 0 picks a free one) so that a
// taken port fails the start at once. metrics may be nil (404).
func NewServer(addr string, metrics http.Handler, checks []Check, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("observability.listen %q: %w", addr, err)
	}
	return &Server{addr: addr, metrics: metrics, checks: checks, log: log, ln: ln}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.ready)
	if s.Profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ready runs every check and answers 200 when all hold, 503 otherwise, with
// a JSON object naming each check's result.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	out := make(map[string]string, len(s.checks))
	ok := true
	for _, c := range s.checks {
		if err := c.Run(ctx); err != nil {
			ok = false
			// One line, as a probe's log or a dashboard shows it.
			out[c.Name] = strings.Join(strings.Fields(err.Error()), " ")
		} else {
			out[c.Name] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(out)
}

// Run serves until ctx is done, then shuts down gracefully, giving open
// requests a few seconds.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	paths := "/metrics /healthz /readyz"
	if s.Profiling {
		paths += " /debug/pprof/"
	}
	s.log.Info("observability endpoints listening", "addr", s.Addr(), "paths", paths)
	select {
	case err := <-errc:
		return fmt.Errorf("observability server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("observability server: %w", err)
	}
	return nil
}
