package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/secrets"
	"github.com/smartmaintenance/relay/store"
)

// webhookView is a webhook as the API shows it: never its secret, and
// header values masked (they usually carry credentials).
type webhookView struct {
	ID          int64             `json:"id"`
	CompanyID   int64             `json:"company_id"`
	Name        string            `json:"name"`
	URL         string            `json:"url"`
	Events      []string          `json:"events"`
	Headers     map[string]string `json:"headers"`
	Description string            `json:"description"`
	Format      string            `json:"format"`
	Filter      string            `json:"filter"`
	Active      bool              `json:"active"`
	ManagedBy   string            `json:"managed_by"`
	HasSecret   bool              `json:"has_secret"`
	SecretError string            `json:"secret_error,omitempty"`
	HeaderError string            `json:"header_error,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	LastFiredAt *time.Time        `json:"last_fired_at"`
	// SuccessRate24h is 2xx attempts / attempts in the last 24 hours; null
	// without attempts.
	SuccessRate24h *float64 `json:"success_rate_24h"`
	Attempts24h    int      `json:"attempts_24h"`
	Succeeded24h   int      `json:"succeeded_24h"`
	signingView
}

func view(w store.WebhookStats) webhookView {
	v := webhookView{ID: w.ID, CompanyID: w.CompanyID, Name: w.Name, URL: w.URL, Events: w.Events,
		Headers: map[string]string{}, Description: w.Description, Format: w.Format, Filter: w.Filter, Active: w.Active, ManagedBy: w.ManagedBy,
		HasSecret: w.Secret != "" || w.SecretError != "", SecretError: w.SecretError, HeaderError: w.HeaderError,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		Attempts24h: w.Attempts24h, Succeeded24h: w.Succeeded24h, signingView: viewSigning(w.Webhook)}
	if v.Events == nil {
		v.Events = []string{}
	}
	if v.Format == "" {
		v.Format = store.FormatRaw
	}
	for k := range w.Headers {
		v.Headers[k] = config.Mask
	}
	if !w.LastFiredAt.IsZero() {
		t := w.LastFiredAt
		v.LastFiredAt = &t
	}
	if w.Attempts24h > 0 {
		r := float64(w.Succeeded24h) / float64(w.Attempts24h)
		v.SuccessRate24h = &r
	}
	return v
}

// savedView answers a create or an update.
type savedView struct {
	Webhook webhookView `json:"webhook"`
	// Secret is set only when the relay generated it: shown this once.
	Secret string `json:"secret,omitempty"`
	// StandardSecret is Secret in the whsec_ form of Standard Webhooks.
	StandardSecret string   `json:"standard_webhooks_secret,omitempty"`
	Warnings       []string `json:"warnings"`
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, _ principal) error {
	writeJSON(w, http.StatusOK, map[string]any{"events": s.o.Events})
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, who principal) error {
	scope := who.company
	if q := r.URL.Query().Get("company_id"); q != "" {
		id, err := strconv.ParseInt(q, 10, 64)
		if err != nil || id <= 0 {
			return newError(http.StatusBadRequest, "bad_parameter", "company_id", "company_id: want a positive integer")
		}
		if who.operator {
			scope = id
		} else if id != who.company {
			// Another company's list is empty to this token, as if the
			// company had no webhooks.
			writeJSON(w, http.StatusOK, map[string]any{"webhooks": []webhookView{}})
			return nil
		}
	}
	hooks, err := s.o.Store.ListWebhooks(r.Context(), scope)
	if err != nil {
		return err
	}
	out := make([]webhookView, len(hooks))
	for i, h := range hooks {
		out[i] = view(h)
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhook": view(h), "warnings": s.nonNil(s.warnings(h.Webhook))})
	return nil
}

func (s *Server) nonNil(w []string) []string {
	if w == nil {
		return []string{}
	}
	return w
}

// webhookInput is the body of a create (all fields) or an update (any).
type webhookInput struct {
	CompanyID   *int64             `json:"company_id"`
	Name        *string            `json:"name"`
	URL         *string            `json:"url"`
	Events      *[]string          `json:"events"`
	Secret      *string            `json:"secret"`
	Headers     *map[string]string `json:"headers"`
	Description *string            `json:"description"`
	// Format is the payload format: raw, slack or teams.
	Format *string `json:"format"`
	Filter *string `json:"filter"`
	Active *bool   `json:"active"`
	// RotateSecret (update only) replaces the secret with a generated one.
	RotateSecret bool `json:"rotate_secret"`
	// StandardWebhooks adds the Standard Webhooks headers.
	StandardWebhooks *bool `json:"standard_webhooks"`
	// SecretOverlap (update with rotate_secret or secret) is how long the
	// replaced secret keeps signing too: a duration such as "24h"
	// (default), "0" for none.
	SecretOverlap *string `json:"secret_overlap"`
}

// validate checks a webhook about to be saved, with the config file's rules
// plus the API's: known event types, an allowed destination, a secret that
// is not empty.
func (s *Server) validate(ctx context.Context, h store.Webhook, in webhookInput) error {
	var problems []problem
	if in.Secret != nil && *in.Secret == "" {
		problems = append(problems, problem{"secret", "empty; omit it to have the relay generate one"})
	}
	problems = append(problems, fromCheck(config.CheckWebhook(config.Webhook{CompanyID: h.CompanyID, Name: h.Name,
		URL: h.URL, Events: h.Events, Secret: h.Secret, Headers: h.Headers, Description: h.Description, Filter: h.Filter,
		Active: h.Active, StandardWebhooks: h.StandardWebhooks && h.SecretError == ""}, s.o.Production))...)
	problems = append(problems, checkFormat(in.Format)...)
	if !slices.ContainsFunc(problems, func(p problem) bool { return p.Field == "filter" || strings.HasPrefix(p.Field, "events") }) {
		if p := s.checkFilter(h); p != nil {
			problems = append(problems, *p)
		}
	}
	if in.Events != nil {
		for i, ev := range h.Events {
			if ev != "" && !slices.Contains(s.o.Events, ev) {
				problems = append(problems, problem{fmt.Sprintf("events[%d]", i),
					fmt.Sprintf("%q is not an event type this installation offers (GET /v1/events lists them)", ev)})
			}
		}
	}
	urlBad := slices.ContainsFunc(problems, func(p problem) bool { return p.Field == "url" })
	if in.URL != nil && !urlBad { // a malformed URL is not worth a DNS look-up
		if p := s.checkURL(ctx, h.URL); p != nil {
			problems = append(problems, *p)
		}
	}
	if len(problems) > 0 {
		return invalid("invalid_webhook", problems)
	}
	return nil
}

func (in webhookInput) apply(h *store.Webhook) {
	if in.Name != nil {
		h.Name = strings.TrimSpace(*in.Name)
	}
	if in.URL != nil {
		h.URL = strings.TrimSpace(*in.URL)
	}
	if in.Events != nil {
		h.Events = *in.Events
		if h.Events == nil {
			h.Events = []string{}
		}
	}
	if in.Secret != nil {
		h.Secret = *in.Secret
	}
	if in.Headers != nil {
		h.Headers = *in.Headers
	}
	if in.Description != nil {
		h.Description = *in.Description
	}
	if in.Format != nil {
		h.Format = *in.Format
	}
	if in.Filter != nil {
		h.Filter = strings.TrimSpace(*in.Filter)
	}
	if in.Active != nil {
		h.Active = *in.Active
	}
	if in.StandardWebhooks != nil {
		h.StandardWebhooks = *in.StandardWebhooks
	}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, who principal) error {
	var in webhookInput
	if err := decode(r, &in); err != nil {
		return err
	}
	saved, generated, err := s.createWebhook(r.Context(), who, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, savedView{Webhook: view(store.WebhookStats{Webhook: saved}), Secret: generated,
		StandardSecret: standardSecret(generated), Warnings: s.nonNil(s.warnings(saved))})
	return nil
}

// createWebhook registers a webhook; generated is the secret the relay
// generated, if it did. The JSON API and the console share it.
func (s *Server) createWebhook(ctx context.Context, who principal, in webhookInput) (saved store.Webhook, generated string, err error) {
	h := store.Webhook{CompanyID: who.company, Active: true, Events: []string{}}
	switch {
	case in.CompanyID != nil && who.operator:
		h.CompanyID = *in.CompanyID
	case in.CompanyID != nil && *in.CompanyID != who.company:
		return saved, "", newError(http.StatusForbidden, "forbidden", "company_id",
			fmt.Sprintf("company_id: this token manages company %d only", who.company))
	case who.operator:
		return saved, "", invalid("invalid_webhook", []problem{{"company_id", "required with an operator token"}})
	}
	if in.RotateSecret {
		return saved, "", invalid("invalid_webhook", []problem{{"rotate_secret", "only for updates; omit secret to have one generated"}})
	}
	if in.SecretOverlap != nil {
		return saved, "", invalid("invalid_webhook", []problem{{"secret_overlap", "only for updates that change the secret"}})
	}
	if in.Events == nil {
		in.Events = &h.Events // CheckWebhook says "at least one event type is required"
	}
	if in.URL == nil {
		in.URL = &h.URL
	}
	in.apply(&h)
	if in.Secret == nil {
		g, err := secrets.Generate()
		if err != nil {
			return saved, "", err
		}
		h.Secret, generated = g, g
	}
	if err := s.validate(ctx, h, in); err != nil {
		return saved, "", err
	}
	saved, err = s.o.Store.CreateWebhook(ctx, who.name, h, store.MaxPerCompany(s.o.MaxWebhooks))
	if errors.Is(err, store.ErrTooManyWebhooks) {
		return saved, "", newError(http.StatusConflict, "too_many_webhooks", "", fmt.Sprintf(
			"this company already has %d webhooks, the most allowed (admin.max_webhooks_per_company); delete one it no longer needs first",
			s.o.MaxWebhooks))
	}
	if err != nil {
		return saved, "", err
	}
	return saved, generated, nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, who principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in webhookInput
	if err := decode(r, &in); err != nil {
		return err
	}
	saved, generated, err := s.updateWebhook(r.Context(), who, id, in)
	if err != nil {
		return err
	}
	return s.answerSaved(w, r, who, saved, generated)
}

// updateWebhook changes a webhook; generated is the secret the relay
// generated (rotate_secret), if it did. The JSON API and the console share
// it.
func (s *Server) updateWebhook(ctx context.Context, who principal, id int64, in webhookInput) (saved store.Webhook, generated string, err error) {
	if in.CompanyID != nil {
		return saved, "", invalid("invalid_webhook", []problem{{"company_id", "cannot be changed; create a webhook in the other company"}})
	}
	if in.RotateSecret && in.Secret != nil {
		return saved, "", invalid("invalid_webhook", []problem{{"rotate_secret", "give either secret or rotate_secret, not both"}})
	}
	overlap, err := secretOverlap(in)
	if err != nil {
		return saved, "", err
	}
	action := "webhook.update"
	if in.RotateSecret {
		if generated, err = secrets.Generate(); err != nil {
			return saved, "", err
		}
		in.Secret = &generated
		action = "webhook.rotate_secret"
	}
	saved, err = s.o.Store.UpdateWebhook(ctx, who.name, action, who.company, id, func(h *store.Webhook) error {
		in.apply(h)
		return s.validate(ctx, *h, in)
	}, store.SecretOverlap(overlap))
	if err != nil {
		return saved, "", err
	}
	return saved, generated, nil
}

func (s *Server) answerSaved(w http.ResponseWriter, r *http.Request, who principal, saved store.Webhook, generated string) error {
	full, err := s.o.Store.WebhookByID(r.Context(), who.company, saved.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, savedView{Webhook: view(full), Secret: generated, StandardSecret: standardSecret(generated),
		Warnings: s.nonNil(s.warnings(full.Webhook))})
	return nil
}

func (s *Server) setActive(w http.ResponseWriter, r *http.Request, who principal, active bool) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	saved, err := s.setWebhookActive(r.Context(), who, id, active)
	if err != nil {
		return err
	}
	return s.answerSaved(w, r, who, saved, "")
}

// setWebhookActive is the Active toggle, shared by the JSON API and the
// console.
func (s *Server) setWebhookActive(ctx context.Context, who principal, id int64, active bool) (store.Webhook, error) {
	action := "webhook.disable"
	if active {
		action = "webhook.enable"
	}
	saved, err := s.o.Store.UpdateWebhook(ctx, who.name, action, who.company, id, func(h *store.Webhook) error {
		h.Active = active
		return nil
	})
	if err != nil {
		return saved, err
	}
	if active {
		s.o.Notify() // deliveries held while it was disabled are due
	}
	return saved, nil
}

func (s *Server) enable(w http.ResponseWriter, r *http.Request, who principal) error {
	return s.setActive(w, r, who, true)
}

func (s *Server) disable(w http.ResponseWriter, r *http.Request, who principal) error {
	return s.setActive(w, r, who, false)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, who principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if err := s.o.Store.DeleteWebhook(r.Context(), who.name, who.company, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// testPayload is a test event: the product's payload with "test": true.
type testPayload struct {
	Event       string          `json:"event"`
	Timestamp   string          `json:"timestamp"`
	CompanyID   int64           `json:"company_id"`
	CompanyName string          `json:"company_name"`
	Data        json.RawMessage `json:"data"`
	Test        bool            `json:"test"`
}

// syntheticData fills an event type's data fields with recognisable
// stand-in values shaped by their names: the fallback when Options.Sample
// cannot say the columns' types.
func syntheticData(fields []string, now time.Time) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f)
		b.Write(k)
		b.WriteByte(':')
		var v any
		switch {
		case strings.HasSuffix(f, "_id") || f == "id" || strings.HasSuffix(f, "_by"):
			v = 0
		case strings.HasSuffix(f, "_at") || strings.HasPrefix(f, "range_"):
			v = now.UTC().Format(time.RFC3339)
		case f == "active":
			v = true
		case strings.HasSuffix(f, "_count"):
			v = 0
		case f == "email":
			v = "test@example.com"
		default:
			v = "test"
		}
		vb, _ := json.Marshal(v)
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func (s *Server) testFire(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	var in struct {
		EventType string `json:"event_type"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	res, err := s.sendTest(r.Context(), who, h, in.EventType)
	if err != nil {
		return err
	}
	out := map[string]any{
		"delivery_id":      res.DeliveryID,
		"ok":               res.Error == "",
		"status_code":      nullInt(res.StatusCode),
		"duration_ms":      float64(res.Duration.Microseconds()) / 1000,
		"error":            res.Error,
		"response_snippet": res.Snippet,
		"payload":          json.RawMessage(res.Payload),
		"filter_passed":    res.FilterPassed,
	}
	if res.Rendered() {
		out["body_sent"] = string(res.Sent)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// TestResult is what a test event got back.
type TestResult struct {
	DeliveryID uuid.UUID
	// StatusCode is 0 without a response.
	StatusCode int
	Duration   time.Duration
	Error      string
	Snippet    string
	// Payload is the test event's payload.
	Payload []byte
	// Sent is the body sent and signed: Payload, or the message the
	// webhook's format rendered from it; nil when no request was made.
	Sent []byte
	// FilterPassed says whether the webhook's filter takes the test event
	// (nil: the webhook has no filter). A test event is sent whatever the
	// filter says: the admin asked for it.
	FilterPassed *bool
}

// Rendered reports whether the body sent was a message rendered from the
// payload (a slack or teams webhook) rather than the payload itself.
func (r TestResult) Rendered() bool { return r.Sent != nil && !bytes.Equal(r.Sent, r.Payload) }

// sendTest sends a test event of eventType to h and audits it; the JSON
// API and the console share it.
func (s *Server) sendTest(ctx context.Context, who principal, h store.WebhookStats, eventType string) (TestResult, error) {
	in := struct{ EventType string }{eventType}
	switch {
	case in.EventType == "":
		return TestResult{}, invalid("invalid_test", []problem{{"event_type", "required"}})
	case !slices.Contains(s.o.Events, in.EventType):
		return TestResult{}, invalid("invalid_test", []problem{{"event_type",
			fmt.Sprintf("%q is not an event type this installation offers (GET /v1/events lists them)", in.EventType)}})
	}
	if h.SecretError != "" {
		return TestResult{}, newError(http.StatusConflict, "secret_unreadable", "secret", "secret: "+h.SecretError)
	}
	if h.HeaderError != "" {
		return TestResult{}, newError(http.StatusConflict, "header_unreadable", "headers", "headers: "+h.HeaderError)
	}
	if !s.tests.take(h.CompanyID) {
		return TestResult{}, tooManyTests(s.o.MaxConcurrentTests)
	}
	defer s.tests.release(h.CompanyID)
	now := time.Now()
	company, err := s.company(ctx, h.CompanyID)
	if err != nil {
		s.log.Warn("test event: company not found; sending an empty company_name", "company_id", h.CompanyID, "error", err)
	}
	data := syntheticData(s.o.Fields[in.EventType], now)
	if s.o.Sample != nil {
		if d, err := s.o.Sample(ctx, in.EventType, now); err == nil {
			data = d
		} else if d != nil {
			data = d // fields whose expression failed are null
			s.log.Warn("test event: some data fields could not be computed", "event_type", in.EventType, "error", err)
		} else {
			s.log.Warn("test event: data types unknown; using stand-ins by name", "event_type", in.EventType, "error", err)
		}
	}
	body, err := json.Marshal(testPayload{Event: in.EventType, Timestamp: now.In(company.Location).Format(mapper.TimestampLayout),
		CompanyID: h.CompanyID, CompanyName: company.Name, Data: data, Test: true})
	if err != nil {
		return TestResult{}, err
	}
	id := uuid.New()
	res := s.o.Sender.Send(ctx, relay.Message{URL: h.URL, EventType: in.EventType, DeliveryID: id,
		Body: body, Secret: h.Secret, Headers: h.Headers, Format: h.Format, PreviousSecret: h.PreviousSecret,
		StandardWebhooks: h.StandardWebhooks})
	out := TestResult{DeliveryID: id, StatusCode: res.StatusCode, Duration: res.Duration, Error: res.Error,
		Snippet: res.Snippet, Payload: body, Sent: res.Sent, FilterPassed: filterPasses(h.Filter, body)}
	if err := s.o.Store.Audit(ctx, store.AuditEntry{Actor: who.name, CompanyID: h.CompanyID, Action: "webhook.test",
		WebhookID: h.ID, DeliveryID: id, Details: map[string]any{"event_type": in.EventType, "status_code": res.StatusCode,
			"error": res.Error, "duration_ms": res.Duration.Milliseconds()}}); err != nil {
		return TestResult{}, err
	}
	return out, nil
}

func nullID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}

func nullInt(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

// deliveryView is a delivery with its attempts.
type deliveryView struct {
	ID             uuid.UUID    `json:"id"`
	EventID        int64        `json:"event_id"`
	EventType      string       `json:"event_type"`
	Status         store.Status `json:"status"`
	AttemptCount   int          `json:"attempt_count"`
	NextAttemptAt  *time.Time   `json:"next_attempt_at"`
	LastStatusCode *int         `json:"last_status_code"`
	LastError      string       `json:"last_error"`
	CreatedAt      time.Time    `json:"created_at"`
	FinishedAt     *time.Time   `json:"finished_at"`
	// ReplayID names the replay that made the delivery due again; null
	// for a live one.
	ReplayID *int64        `json:"replay_id"`
	Attempts []attemptView `json:"attempts"`
}

type attemptView struct {
	Attempt         int       `json:"attempt"`
	StartedAt       time.Time `json:"started_at"`
	DurationMS      float64   `json:"duration_ms"`
	StatusCode      *int      `json:"status_code"`
	Error           string    `json:"error"`
	ResponseSnippet string    `json:"response_snippet"`
	// ReplayID names the replay the attempt was made for (it carried
	// X-SMTM-Replay); null for a live one.
	ReplayID *int64 `json:"replay_id"`
}

func deliveryOut(d store.DeliveryRecord) deliveryView {
	v := deliveryView{ID: d.ID, EventID: d.EventID, EventType: d.EventType, Status: d.Status, AttemptCount: d.Delivery.Attempts,
		LastStatusCode: nullInt(d.LastStatusCode), LastError: d.LastError, CreatedAt: d.CreatedAt,
		Attempts: make([]attemptView, len(d.Attempts))}
	if d.Status == store.StatusPending || d.Status == store.StatusRetrying {
		t := d.NextAttemptAt
		v.NextAttemptAt = &t
	}
	if !d.FinishedAt.IsZero() {
		t := d.FinishedAt
		v.FinishedAt = &t
	}
	v.ReplayID = nullID(d.ReplayID)
	for i, a := range d.Attempts {
		v.Attempts[i] = attemptView{Attempt: a.Attempt, StartedAt: a.StartedAt,
			DurationMS: float64(a.Duration.Microseconds()) / 1000, StatusCode: nullInt(a.StatusCode),
			Error: a.Error, ResponseSnippet: a.Snippet, ReplayID: nullID(a.ReplayID)}
	}
	return v
}

const (
	defaultPage = 50
	maxPage     = 200
)

func encodeCursor(c store.DeliveryCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "." + c.ID.String()))
}

func decodeCursor(s string) (*store.DeliveryCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	at, id, ok := strings.Cut(string(b), ".")
	if !ok {
		return nil, fmt.Errorf("malformed")
	}
	us, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return nil, err
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, err
	}
	return &store.DeliveryCursor{CreatedAt: time.UnixMicro(us), ID: u}, nil
}

func parseTime(q, name string) (time.Time, *apiError) {
	if q == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, q)
	if err != nil {
		return time.Time{}, newError(http.StatusBadRequest, "bad_parameter", name,
			fmt.Sprintf("%s: %q is not an RFC 3339 time such as 2026-04-24T09:15:30Z", name, q))
	}
	return t, nil
}

func (s *Server) deliveries(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.DeliveryFilter{WebhookID: h.ID, Limit: defaultPage}
	for _, v := range q["status"] {
		for st := range strings.SplitSeq(v, ",") {
			switch status := store.Status(strings.TrimSpace(st)); status {
			case store.StatusPending, store.StatusRetrying, store.StatusDelivered, store.StatusFailed:
				f.Statuses = append(f.Statuses, status)
			default:
				return newError(http.StatusBadRequest, "bad_parameter", "status",
					fmt.Sprintf("status: %q is not one of pending, retrying, delivered, failed", st))
			}
		}
	}
	var ae *apiError
	if f.From, ae = parseTime(q.Get("from"), "from"); ae != nil {
		return ae
	}
	if f.To, ae = parseTime(q.Get("to"), "to"); ae != nil {
		return ae
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxPage {
			return newError(http.StatusBadRequest, "bad_parameter", "limit", fmt.Sprintf("limit: want 1 to %d", maxPage))
		}
		f.Limit = n
	}
	if c := q.Get("cursor"); c != "" {
		cur, err := decodeCursor(c)
		if err != nil {
			return newError(http.StatusBadRequest, "bad_parameter", "cursor", "cursor: not a cursor this API returned")
		}
		f.After = cur
	}
	ds, err := s.o.Store.WebhookDeliveries(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]deliveryView, len(ds))
	for i, d := range ds {
		out[i] = deliveryOut(d)
	}
	var next *string
	if len(ds) == f.Limit {
		c := encodeCursor(store.DeliveryCursor{CreatedAt: ds[len(ds)-1].CreatedAt, ID: ds[len(ds)-1].ID})
		next = &c
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": out, "next_cursor": next})
	return nil
}

func (s *Server) deliveryID(r *http.Request) (uuid.UUID, error) {
	id, err := uuid.Parse(r.PathValue("delivery_id"))
	if err != nil {
		return uuid.Nil, errDeliveryNotFound
	}
	return id, nil
}

// webhookDelivery resolves the webhook and the delivery id a delivery route
// names, within the caller's scope.
func (s *Server) webhookDelivery(r *http.Request, who principal) (store.WebhookStats, uuid.UUID, error) {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return h, uuid.Nil, err
	}
	id, err := s.deliveryID(r)
	return h, id, err
}

func (s *Server) delivery(w http.ResponseWriter, r *http.Request, who principal) error {
	h, id, err := s.webhookDelivery(r, who)
	if err != nil {
		return err
	}
	d, err := s.o.Store.DeliveryOf(r.Context(), h.ID, id)
	if err != nil {
		return deliveryError(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"delivery": deliveryOut(d)})
	return nil
}

func (s *Server) refire(w http.ResponseWriter, r *http.Request, who principal) error {
	h, id, err := s.webhookDelivery(r, who)
	if err != nil {
		return err
	}
	d, err := s.refireOne(r.Context(), who, h, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"delivery": deliveryOut(d), "warnings": s.nonNil(refireWarnings(h))})
	return nil
}

// refireOne sends a finished delivery of h again; the JSON API and the
// console share it.
func (s *Server) refireOne(ctx context.Context, who principal, h store.WebhookStats, id uuid.UUID) (store.DeliveryRecord, error) {
	if err := s.o.Store.RefireDelivery(ctx, who.name, h.Webhook, id); err != nil {
		return store.DeliveryRecord{}, deliveryError(err)
	}
	s.o.Notify()
	return s.o.Store.DeliveryOf(ctx, h.ID, id)
}

func refireWarnings(h store.WebhookStats) []string {
	if !h.Active {
		return []string{"the webhook is disabled: re-fired deliveries wait until it is enabled"}
	}
	return nil
}

func (s *Server) refireBulk(w http.ResponseWriter, r *http.Request, who principal) error {
	h, err := s.webhook(r.Context(), r, who)
	if err != nil {
		return err
	}
	var in struct {
		From *time.Time `json:"from"`
		To   *time.Time `json:"to"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var problems []problem
	if in.From == nil {
		problems = append(problems, problem{"from", "required (RFC 3339): re-fire failed deliveries created at or after it"})
	}
	if in.To == nil {
		problems = append(problems, problem{"to", "required (RFC 3339): re-fire failed deliveries created before it"})
	}
	if in.From != nil && in.To != nil && !in.To.After(*in.From) {
		problems = append(problems, problem{"to", "must be after from"})
	}
	if len(problems) > 0 {
		return invalid("invalid_range", problems)
	}
	ids, err := s.refireFailed(r.Context(), who, h, *in.From, *in.To)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"refired": len(ids), "delivery_ids": ids, "warnings": s.nonNil(refireWarnings(h))})
	return nil
}

// refireFailed sends h's failed deliveries created in [from, to) again;
// the JSON API and the console share it.
func (s *Server) refireFailed(ctx context.Context, who principal, h store.WebhookStats, from, to time.Time) ([]uuid.UUID, error) {
	ids, err := s.o.Store.RefireFailed(ctx, who.name, h.Webhook, from, to)
	if err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []uuid.UUID{}
	}
	s.o.Notify()
	return ids, nil
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, who principal) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	// The trail outlives the webhook: a deleted webhook's trail is still
	// readable, by its company only.
	entries, err := s.o.Store.AuditLog(r.Context(), who.company, id, 200)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return errNotFound
	}
	type entry struct {
		At         time.Time      `json:"at"`
		Actor      string         `json:"actor"`
		Action     string         `json:"action"`
		DeliveryID *uuid.UUID     `json:"delivery_id,omitempty"`
		Before     map[string]any `json:"before"`
		After      map[string]any `json:"after"`
		Details    map[string]any `json:"details"`
	}
	out := make([]entry, len(entries))
	for i, e := range entries {
		out[i] = entry{At: e.At, Actor: e.Actor, Action: e.Action, Before: e.Before, After: e.After, Details: e.Details}
		if e.DeliveryID != uuid.Nil {
			d := e.DeliveryID
			out[i].DeliveryID = &d
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": out})
	return nil
}

// checkFilter checks a webhook's filter against the data fields of the
// event types it subscribes to: a filter that reads a field none of them
// has could never pass (CheckWebhook has checked that it compiles).
func (s *Server) checkFilter(h store.Webhook) *problem {
	if h.Filter == "" || s.o.Fields == nil {
		return nil
	}
	fields := make(map[string][]string, len(h.Events))
	for _, ev := range h.Events {
		fields[ev] = s.o.Fields[ev]
	}
	if _, err := mapper.CompileFilter(h.Filter, fields); err != nil {
		return &problem{Field: "filter", Message: err.Error()}
	}
	return nil
}

// filterPasses says whether filter takes the event whose payload is body;
// nil when there is no filter.
func filterPasses(filter string, body []byte) *bool {
	if filter == "" {
		return nil
	}
	ok := false
	if f, err := mapper.CompileFilter(filter, nil); err == nil {
		if env, err := mapper.NewFilterEnv(body); err == nil {
			ok, _ = f.Match(env)
		}
	}
	return &ok
}
