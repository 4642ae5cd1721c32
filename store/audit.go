package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID         int64
	At         time.Time
	Actor      string
	CompanyID  int64
	Action     string
	WebhookID  int64
	DeliveryID uuid.UUID
	// Before and After are the webhook before and after the change, as
	// Redacted returns it; nil when absent.
	Before, After map[string]any
	Details       map[string]any
}

func (s *Store) writeAudit(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, e AuditEntry) error {
	var delivery *uuid.UUID
	if e.DeliveryID != uuid.Nil {
		delivery = &e.DeliveryID
	}
	var webhook *int64
	if e.WebhookID != 0 {
		webhook = &e.WebhookID
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	_, err := q.Exec(ctx, s.q(`INSERT INTO {{schema}}.audit_log
			(actor, company_id, action, webhook_id, delivery_id, before, after, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`),
		e.Actor, e.CompanyID, e.Action, webhook, delivery, jsonOrNil(e.Before), jsonOrNil(e.After), details)
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

func jsonOrNil(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

// Audit writes one audit entry on its own.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error { return s.writeAudit(ctx, s.pool, e) }

// auditColumns are the columns readAudit scans, in its order.
const auditColumns = `id, at, actor, coalesce(company_id, 0), action, coalesce(webhook_id, 0),
			delivery_id, before, after, details`

// AuditLog returns the audit entries of a webhook, newest first, at most
// limit, whether or not the webhook is deleted. company scopes it
// (AllCompanies: any).
func (s *Store) AuditLog(ctx context.Context, company, webhookID int64, limit int) ([]AuditEntry, error) {
	return s.readAudit(ctx, `SELECT `+auditColumns+`
		FROM {{schema}}.audit_log WHERE webhook_id = $1 AND ($2::bigint = 0 OR company_id = $2)
		ORDER BY at DESC, id DESC LIMIT $3`, webhookID, company, limit)
}

// CompanyAuditLog returns the audit entries of company's webhooks (deleted
// ones included), newest first, at most limit; before > 0 continues after
// the entry with that id. company must name one company.
func (s *Store) CompanyAuditLog(ctx context.Context, company int64, before int64, limit int) ([]AuditEntry, error) {
	return s.readAudit(ctx, `SELECT `+auditColumns+`
		FROM {{schema}}.audit_log WHERE company_id = $1 AND ($2::bigint = 0 OR id < $2)
		ORDER BY id DESC LIMIT $3`, company, before, limit)
}

// readAudit runs a query selecting auditColumns and reads its entries.
func (s *Store) readAudit(ctx context.Context, query string, args ...any) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var delivery *uuid.UUID
		err := r.Scan(&e.ID, &e.At, &e.Actor, &e.CompanyID, &e.Action, &e.WebhookID, &delivery, &e.Before, &e.After, &e.Details)
		e.DeliveryID = deref(delivery)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}
