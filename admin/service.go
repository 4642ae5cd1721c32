package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/smartmaintenance/relay/store"
)

// The exported methods below are the API's operations without HTTP and
// JSON: the console (the Webhooks page in a browser) calls them, so that
// the page and the API share validation, tenancy, audit and sending, and
// nothing can be done in one that the other refuses.

// Actor is who acts: a configured token's name, company and role.
type Actor struct{ p principal }

// Name is the token's name, written to the audit log.
func (a Actor) Name() string { return a.p.name }

// Operator reports whether the token is an operator's.
func (a Actor) Operator() bool { return a.p.operator }

// CompanyID is the company the actor manages; store.AllCompanies for an
// operator who has not picked one.
func (a Actor) CompanyID() int64 { return a.p.company }

// InCompany is an operator acting within one company: scoped to it exactly
// as the company's own token is, with the operator's name in the audit log.
func (a Actor) InCompany(id int64) Actor {
	return Actor{principal{name: a.p.name, company: id}}
}

// Authenticate finds the actor of a token.
func (s *Server) Authenticate(token string) (Actor, bool) {
	return s.ActorByHash(sha256.Sum256([]byte(strings.TrimSpace(token))))
}

// ActorByHash finds the actor of a token by its SHA-256: a session keeps
// the hash, never the token, and asks on every request, so that a token
// removed from the configuration ends its sessions.
func (s *Server) ActorByHash(sum [sha256.Size]byte) (Actor, bool) {
	p, ok := s.byHash(sum)
	return Actor{p}, ok
}

// Events are the event types this installation offers (GET /v1/events).
func (s *Server) Events() []string { return slices.Clone(s.o.Events) }

// Production reports whether non-HTTPS URLs are refused.
func (s *Server) Production() bool { return s.o.Production }

// CompanyInfo returns a company's name and time zone; an unknown company
// has no name and UTC.
func (s *Server) CompanyInfo(ctx context.Context, id int64) Company {
	c, _ := s.company(ctx, id)
	return c
}

// company is CompanyInfo with the error of a failed look-up.
func (s *Server) company(ctx context.Context, id int64) (Company, error) {
	c := Company{Location: time.UTC}
	var err error
	if s.o.Company != nil && id != store.AllCompanies {
		var got Company
		if got, err = s.o.Company(ctx, id); err == nil {
			c = got
		}
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	return c, err
}

// Warnings are what a saved webhook should know (the HTTPS warning among
// them).
func (s *Server) Warnings(w store.Webhook) []string { return s.warnings(w) }

// ListWebhooks lists the actor's webhooks with their stats.
func (s *Server) ListWebhooks(ctx context.Context, a Actor) ([]store.WebhookStats, error) {
	return s.o.Store.ListWebhooks(ctx, a.p.company)
}

// Webhook reads one of the actor's webhooks; ErrNotFound (see Explain)
// also for another company's.
func (s *Server) Webhook(ctx context.Context, a Actor, id int64) (store.WebhookStats, error) {
	if id <= 0 {
		return store.WebhookStats{}, errNotFound
	}
	return s.o.Store.WebhookByID(ctx, a.p.company, id)
}

// WebhookInput is a create (Name, URL and Events required) or a change
// (nil fields are kept).
type WebhookInput struct {
	Name, URL, Description *string
	// Format is the payload format: raw, slack or teams.
	Format *string
	// Filter: "" removes the webhook's filter; nil keeps it.
	Filter *string
	Events *[]string
	// Secret nil: generated on create, kept on update.
	Secret  *string
	Headers *map[string]string
	Active  *bool
	// RotateSecret (update only) replaces the secret with a generated one.
	RotateSecret bool
	// StandardWebhooks nil: off on create, kept on update.
	StandardWebhooks *bool
	// SecretOverlap (update that changes the secret): how long the
	// replaced secret keeps signing, as ParseSecretOverlap reads it; nil:
	// DefaultSecretOverlap.
	SecretOverlap *string
}

func (in WebhookInput) internal() webhookInput {
	return webhookInput{Name: in.Name, URL: in.URL, Events: in.Events, Secret: in.Secret, Headers: in.Headers,
		Description: in.Description, Format: in.Format, Filter: in.Filter, Active: in.Active, RotateSecret: in.RotateSecret,
		StandardWebhooks: in.StandardWebhooks, SecretOverlap: in.SecretOverlap}
}

// Saved is a webhook just saved.
type Saved struct {
	Webhook store.Webhook
	// Secret is set only when the relay generated it: shown this once.
	Secret   string
	Warnings []string
}

// StandardSecret is Secret in the whsec_ form of Standard Webhooks; "" when
// no secret was generated.
func (s Saved) StandardSecret() string { return standardSecret(s.Secret) }

// CreateWebhook registers a webhook in the actor's company.
func (s *Server) CreateWebhook(ctx context.Context, a Actor, in WebhookInput) (Saved, error) {
	h, gen, err := s.createWebhook(ctx, a.p, in.internal())
	if err != nil {
		return Saved{}, err
	}
	return Saved{Webhook: h, Secret: gen, Warnings: s.warnings(h)}, nil
}

// UpdateWebhook changes one of the actor's webhooks.
func (s *Server) UpdateWebhook(ctx context.Context, a Actor, id int64, in WebhookInput) (Saved, error) {
	h, gen, err := s.updateWebhook(ctx, a.p, id, in.internal())
	if err != nil {
		return Saved{}, err
	}
	return Saved{Webhook: h, Secret: gen, Warnings: s.warnings(h)}, nil
}

// SetActive enables or disables one of the actor's webhooks.
func (s *Server) SetActive(ctx context.Context, a Actor, id int64, active bool) (store.Webhook, error) {
	return s.setWebhookActive(ctx, a.p, id, active)
}

// DeleteWebhook deletes one of the actor's webhooks; its history stays.
func (s *Server) DeleteWebhook(ctx context.Context, a Actor, id int64) error {
	return s.o.Store.DeleteWebhook(ctx, a.p.name, a.p.company, id)
}

// SendTest sends a test event to one of the actor's webhooks.
func (s *Server) SendTest(ctx context.Context, a Actor, id int64, eventType string) (TestResult, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return TestResult{}, err
	}
	return s.sendTest(ctx, a.p, h, eventType)
}

// Deliveries lists deliveries of one of the actor's webhooks (f.WebhookID)
// with their attempts, and the request bodies they sent by event id.
func (s *Server) Deliveries(ctx context.Context, a Actor, f store.DeliveryFilter) ([]store.DeliveryRecord, map[int64][]byte, error) {
	h, err := s.Webhook(ctx, a, f.WebhookID)
	if err != nil {
		return nil, nil, err
	}
	f.WebhookID = h.ID
	if f.Limit < 1 || f.Limit > maxPage {
		f.Limit = defaultPage
	}
	ds, err := s.o.Store.WebhookDeliveries(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]int64, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.EventID)
	}
	bodies, err := s.o.Store.EventBodies(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	return ds, bodies, nil
}

// Refire sends a finished delivery of one of the actor's webhooks again.
// The warnings say when it will wait (a disabled webhook).
func (s *Server) Refire(ctx context.Context, a Actor, id int64, delivery uuid.UUID) (store.DeliveryRecord, []string, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return store.DeliveryRecord{}, nil, err
	}
	d, err := s.refireOne(ctx, a.p, h, delivery)
	return d, refireWarnings(h), err
}

// RefireFailed sends the failed deliveries of one of the actor's webhooks
// created in [from, to) again.
func (s *Server) RefireFailed(ctx context.Context, a Actor, id int64, from, to time.Time) ([]uuid.UUID, []string, error) {
	h, err := s.Webhook(ctx, a, id)
	if err != nil {
		return nil, nil, err
	}
	var problems []problem
	if from.IsZero() {
		problems = append(problems, problem{"from", "required"})
	}
	if to.IsZero() {
		problems = append(problems, problem{"to", "required"})
	}
	if !from.IsZero() && !to.IsZero() && !to.After(from) {
		problems = append(problems, problem{"to", "must be after from"})
	}
	if len(problems) > 0 {
		return nil, nil, invalid("invalid_range", problems)
	}
	ids, err := s.refireFailed(ctx, a.p, h, from, to)
	return ids, refireWarnings(h), err
}

// AuditLog is the audit trail of one of the actor's webhooks, deleted or
// not, newest first; ErrNotFound when the actor's company has none.
func (s *Server) AuditLog(ctx context.Context, a Actor, id int64, limit int) ([]store.AuditEntry, error) {
	entries, err := s.o.Store.AuditLog(ctx, a.p.company, id, limit)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errNotFound
	}
	return entries, nil
}

// CompanyAuditLog is the audit trail of the actor's company's webhooks,
// newest first; before > 0 continues after that entry.
func (s *Server) CompanyAuditLog(ctx context.Context, a Actor, before int64, limit int) ([]store.AuditEntry, error) {
	if a.p.company == store.AllCompanies {
		return nil, errors.New("company audit log: pick a company first")
	}
	return s.o.Store.CompanyAuditLog(ctx, a.p.company, before, limit)
}

// FieldError is a validation problem of one field ("url", "events[2]").
type FieldError struct {
	Field, Message string
}

// Problem is an error as the API answers it.
type Problem struct {
	Status        int
	Code, Message string
	Fields        []FieldError
}

// Explain says how the API answers err; ok is false for internal errors,
// whose cause only the log should have.
func Explain(err error) (p Problem, ok bool) {
	ae := storeError(err)
	if ae == nil {
		return Problem{Status: http.StatusInternalServerError, Code: "internal",
			Message: "internal error; the relay's log has the cause"}, false
	}
	p = Problem{Status: ae.status, Code: ae.Code, Message: ae.Message}
	for _, d := range ae.Details {
		p.Fields = append(p.Fields, FieldError{Field: d.Field, Message: d.Message})
	}
	if len(p.Fields) == 0 && ae.Field != "" {
		msg := strings.TrimPrefix(ae.Message, ae.Field+": ")
		p.Fields = []FieldError{{Field: ae.Field, Message: msg}}
	}
	return p, true
}
