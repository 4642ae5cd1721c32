// Package admin is the relay's control plane: a JSON HTTP API for the
// admin guide's Webhooks page (list with last fired and 24-hour success
// rate, register, update, enable, disable, delete, available event types,
// test events, delivery history, re-fire), described by openapi.yaml.
//
// Every request carries a bearer token from admin.tokens; a company token
// sees and changes one company's webhooks only, and a webhook of another
// company answers 404 exactly like one that does not exist. Every change is
// written to the audit log with the webhook before and after, without its
// secret. Secrets are accepted or generated, stored through the store's
// encryption, and returned only once, when generated.
package admin

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/store"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the API's OpenAPI document.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// Company is what a test event says about its company.
type Company struct {
	Name     string
	Location *time.Location
}

// webhookStore is what the admin API asks of the store: the webhooks of
// the companies it serves, their deliveries and audit log. *store.Store
// implements it.
type webhookStore interface {
	ListWebhooks(ctx context.Context, company int64) ([]store.WebhookStats, error)
	WebhookByID(ctx context.Context, company, id int64) (store.WebhookStats, error)
	CreateWebhook(ctx context.Context, actor string, w store.Webhook, opts ...store.CreateOption) (store.Webhook, error)
	UpdateWebhook(ctx context.Context, actor, action string, company, id int64, change func(*store.Webhook) error, opts ...store.UpdateOption) (store.Webhook, error)
	DeleteWebhook(ctx context.Context, actor string, company, id int64) error
	WebhookDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.DeliveryRecord, error)
	DeliveryOf(ctx context.Context, webhookID int64, id uuid.UUID) (store.DeliveryRecord, error)
	EventBodies(ctx context.Context, ids []int64) (map[int64][]byte, error)
	RefireDelivery(ctx context.Context, actor string, w store.Webhook, id uuid.UUID) error
	RefireFailed(ctx context.Context, actor string, w store.Webhook, from, to time.Time) ([]uuid.UUID, error)
	Audit(ctx context.Context, e store.AuditEntry) error
	AuditLog(ctx context.Context, company, webhookID int64, limit int) ([]store.AuditEntry, error)
	CompanyAuditLog(ctx context.Context, company int64, before int64, limit int) ([]store.AuditEntry, error)
	replayStore
}

var _ webhookStore = (*store.Store)(nil)

// Options configure a Server.
type Options struct {
	Store  webhookStore
	Tokens []config.AdminToken
	// Events are the event types this installation offers, in order.
	Events []string
	// Fields names the data fields of each event type, for test events.
	Fields map[string][]string
	// Sample returns a test event's data with the field types of a real
	// event of the type (see service). When nil or failing, test events
	// fill Fields with stand-ins shaped by their names.
	Sample func(ctx context.Context, eventType string, now time.Time) (json.RawMessage, error)
	// Production refuses non-HTTPS URLs instead of warning.
	Production bool
	// Egress decides which destinations webhooks may have; the same policy
	// guards the relay's own connections.
	Egress *egress.Policy
	// Sender sends test events exactly as deliveries are sent.
	Sender *relay.Sender
	// Company looks up a company's name and time zone for test events; nil
	// or an error leaves the name empty and uses UTC.
	Company func(ctx context.Context, id int64) (Company, error)
	// Notify is called after deliveries become due (re-fire) and after a
	// replay is created or cancelled, so that the deliveries are sent, and
	// the replay runs, at once. Optional.
	Notify func()
	// Logger receives one line per request and errors. Default: discard.
	Logger *slog.Logger
	// MaxWebhooks is the most webhooks a company may have; creating one
	// more answers 409 too_many_webhooks. 0: no limit.
	MaxWebhooks int
	// MaxConcurrentTests is the most test events of one company in flight
	// at once; one more answers 429 with Retry-After. 0: no limit.
	MaxConcurrentTests int
	// ReplayWindow is how far back a replay may reach: how long events are
	// kept at least (the longer of retention.delivered and
	// retention.failed). 0 refuses every replay.
	ReplayWindow time.Duration
}

// Server is the admin API.
type Server struct {
	o Options
	// creds is replaced whole by SetTokens; each request reads it once.
	creds atomic.Pointer[[]credential]
	log   *slog.Logger
	mux   *http.ServeMux
	tests testSlots
}

// route is one operation of the API; Routes lists them for the OpenAPI test.
type route struct {
	method, pattern string
	handle          func(*Server, http.ResponseWriter, *http.Request, principal) error
}

var routes = []route{
	{"GET", "/v1/events", (*Server).events},
	{"GET", "/v1/webhooks", (*Server).list},
	{"POST", "/v1/webhooks", (*Server).create},
	{"GET", "/v1/webhooks/{id}", (*Server).get},
	{"PATCH", "/v1/webhooks/{id}", (*Server).update},
	{"DELETE", "/v1/webhooks/{id}", (*Server).delete},
	{"POST", "/v1/webhooks/{id}/enable", (*Server).enable},
	{"POST", "/v1/webhooks/{id}/disable", (*Server).disable},
	{"POST", "/v1/webhooks/{id}/test", (*Server).testFire},
	{"GET", "/v1/webhooks/{id}/deliveries", (*Server).deliveries},
	{"GET", "/v1/webhooks/{id}/deliveries/{delivery_id}", (*Server).delivery},
	{"POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/refire", (*Server).refire},
	{"POST", "/v1/webhooks/{id}/refire", (*Server).refireBulk},
	{"GET", "/v1/webhooks/{id}/audit", (*Server).audit},
	{"POST", "/v1/webhooks/{id}/replays", (*Server).createReplay},
	{"GET", "/v1/webhooks/{id}/replays", (*Server).listReplays},
	{"GET", "/v1/webhooks/{id}/replays/{replay_id}", (*Server).getReplay},
	{"POST", "/v1/webhooks/{id}/replays/{replay_id}/cancel", (*Server).cancelReplayRoute},
}

// Routes lists "METHOD /path" of every operation, plus the unauthenticated
// GET /openapi.yaml.
func Routes() []string {
	out := []string{"GET /openapi.yaml"}
	for _, r := range routes {
		out = append(out, r.method+" "+r.pattern)
	}
	return out
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

// New returns the API server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Notify == nil {
		o.Notify = func() {}
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux(), tests: testSlots{perCom: o.MaxConcurrentTests}}
	s.SetTokens(o.Tokens)
	s.mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPI)
	})
	for _, rt := range routes {
		s.mux.HandleFunc(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, newError(http.StatusNotFound, "no_route", "", "no such endpoint; see GET /openapi.yaml"))
	})
	return s
}

// Handle serves h for pattern on the API's listener, next to the API: the
// console is served this way.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// statusWriter remembers the status of an answer, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		who, ok := s.authenticate(r)
		if !ok {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="relay-admin"`)
			writeError(sw, newError(http.StatusUnauthorized, "unauthorized", "",
				"missing or unknown bearer token (Authorization: Bearer <token>)"))
		} else {
			r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
			if err := rt.handle(s, sw, r, who); err != nil {
				ae := storeError(err)
				if ae == nil {
					s.log.Error("admin request failed", "route", rt.method+" "+rt.pattern, "actor", who.name, "error", err)
					ae = newError(http.StatusInternalServerError, "internal", "", "internal error; the relay's log has the cause")
				}
				writeError(sw, ae)
			}
		}
		// Never the body or the headers: they carry secrets and tokens.
		s.log.Info("admin request", "method", r.Method, "route", rt.pattern, "path", r.URL.Path,
			"status", sw.status, "actor", who.name, "duration_ms", time.Since(start).Milliseconds())
	}
}

// Run serves the API on listen until ctx is done, then shuts down, giving
// requests in flight a few seconds.
func (s *Server) Run(ctx context.Context, listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("admin API: listen on %s: %w", listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // a test event may wait for its receiver
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("admin API listening", "addr", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("admin API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin API: %w", err)
	}
	return nil
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors (400), naming the field where possible.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return newError(http.StatusBadRequest, "bad_json", "", "empty body; send a JSON object")
		case errors.As(err, &tooBig):
			return newError(http.StatusRequestEntityTooLarge, "too_large", "", fmt.Sprintf("body larger than %d bytes", maxBody))
		case errors.As(err, &syn):
			return newError(http.StatusBadRequest, "bad_json", "", fmt.Sprintf("not valid JSON at byte %d: %v", syn.Offset, err))
		case errors.As(err, &typ):
			return newError(http.StatusBadRequest, "bad_type", typ.Field, fmt.Sprintf("%s: want %s, got %s", typ.Field, typ.Type, typ.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return newError(http.StatusBadRequest, "unknown_field", f, fmt.Sprintf("%s: unknown field", f))
		}
		return newError(http.StatusBadRequest, "bad_json", "", err.Error())
	}
	if dec.More() {
		return newError(http.StatusBadRequest, "bad_json", "", "more than one JSON value in the body")
	}
	return nil
}

// pathID reads the {id} path value; a malformed id is simply not found.
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, errNotFound
	}
	return id, nil
}

// webhook reads the webhook of the path, as the principal may see it.
func (s *Server) webhook(ctx context.Context, r *http.Request, who principal) (store.WebhookStats, error) {
	id, err := pathID(r)
	if err != nil {
		return store.WebhookStats{}, err
	}
	return s.o.Store.WebhookByID(ctx, who.company, id)
}

// checkURL applies the egress policy to a webhook URL at registration.
func (s *Server) checkURL(ctx context.Context, raw string) *problem {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil // CheckWebhook reports it
	}
	if err := s.o.Egress.CheckHost(ctx, u.Hostname()); err != nil {
		return &problem{Field: "url", Message: err.Error()}
	}
	return nil
}

// warnings are what a saved webhook should know.
func (s *Server) warnings(w store.Webhook) []string {
	var out []string
	if u, err := url.Parse(w.URL); err == nil && u.Scheme == "http" {
		out = append(out, "url: not HTTPS; payloads may contain personal data (user names, task details) and travel unencrypted")
	}
	for _, ev := range w.Events {
		if !slices.Contains(s.o.Events, ev) {
			out = append(out, fmt.Sprintf("events: %q is not offered by this installation", ev))
		}
	}
	if w.SecretError != "" {
		out = append(out, "secret: "+w.SecretError)
	}
	if w.HeaderError != "" {
		out = append(out, "headers: "+w.HeaderError)
	}
	return append(out, s.filterWarnings(w)...)
}

// filterWarnings name the subscribed event types that lack a data field
// the filter reads: for their events it reads as null, which a filter such
// as data.priority == "critical" never passes. (A field no subscribed type
// has is refused: checkFilter.)
func (s *Server) filterWarnings(w store.Webhook) []string {
	if w.Filter == "" || s.o.Fields == nil {
		return nil
	}
	f, err := mapper.CompileFilter(w.Filter, nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, field := range f.DataFields() {
		var lacking []string
		for _, ev := range w.Events {
			if fs, known := s.o.Fields[ev]; known && !slices.Contains(fs, field) {
				lacking = append(lacking, ev)
			}
		}
		if len(lacking) > 0 {
			out = append(out, fmt.Sprintf("filter: %s events have no data.%s, which is null for them: a comparison such as data.%s == \"x\" never passes them",
				strings.Join(lacking, ", "), field, field))
		}
	}
	return out
}
