package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// CompanyAuditLog returns the audit entries of company's webhooks (deleted
// ones included), newest first, at most limit; before > 0 continues after
// the entry with that id. company must name one company.
func (s *Store) CompanyAuditLog(ctx context.Context, company int64, before int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, at, actor, coalesce(company_id, 0), action, coalesce(webhook_id, 0),
			delivery_id, before, after, details
		FROM {{schema}}.audit_log WHERE company_id = $1 AND ($2::bigint = 0 OR id < $2)
		ORDER BY id DESC LIMIT $3`), company, before, limit)
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

// EventBodies returns the stored bodies of events by id: the request body
// each delivery of the event sent. Events no longer stored are absent.
func (s *Store) EventBodies(ctx context.Context, ids []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, body FROM {{schema}}.events WHERE id = ANY($1)`), ids)
	if err != nil {
		return nil, fmt.Errorf("read event bodies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return nil, fmt.Errorf("read event bodies: %w", err)
		}
		out[id] = body
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read event bodies: %w", err)
	}
	return out, nil
}
