package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of the admin operations.
var (
	// ErrConflict: another webhook of the company has the name.
	ErrConflict = errors.New("name already used")
	// ErrFileManaged: the webhook is defined in the config file
	// (webhooks.source: file) and only the file may change it.
	ErrFileManaged = errors.New("webhook is managed in the config file")
	// ErrNotFinished: the delivery is still pending or retrying.
	ErrNotFinished = errors.New("delivery is not finished")
)

// AllCompanies is the scope of an operator: every company.
const AllCompanies int64 = 0

// WebhookStats is a webhook with the guide's list columns.
type WebhookStats struct {
	Webhook
	// LastFiredAt is the start of the latest recorded attempt; zero when
	// none is recorded (retention removes old attempts).
	LastFiredAt time.Time
	// Attempts24h and Succeeded24h count attempts started in the last 24
	// hours (but those a shutdown aborted), and those answered with a 2xx
	// status.
	Attempts24h  int
	Succeeded24h int
}

const webhookColumns = `w.id, w.company_id, w.name, w.url, w.events, coalesce(w.secret, ''), w.headers,
	w.description, w.active, w.managed_by, w.created_at, w.updated_at`

// countsSQL counts a webhook's attempts for the 24-hour success rate: those
// a shutdown aborted are not counted, and those answered with a 2xx are
// the successes.
const countsSQL = `count(*) FILTER (WHERE a.error IS DISTINCT FROM '` + AbortedError + `') AS total,
			count(*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS ok`

const statsSQL = `SELECT ` + webhookColumns + `, la.last, coalesce(st.total, 0), coalesce(st.ok, 0)
	FROM {{schema}}.webhooks w
	LEFT JOIN LATERAL (SELECT max(a.started_at) AS last FROM {{schema}}.attempts a WHERE a.webhook_id = w.id) la ON true
	LEFT JOIN LATERAL (SELECT ` + countsSQL + `
		FROM {{schema}}.attempts a WHERE a.webhook_id = w.id AND a.started_at > now() - interval '24 hours') st ON true
	WHERE w.deleted_at IS NULL AND ($1::bigint = 0 OR w.company_id = $1)`

// listStatsSQL is statsSQL for a list: the 24-hour counts of all listed
// webhooks come from one grouped pass over their recent attempts. Counted
// per webhook in a lateral join, a plan made for the busiest webhook (a
// scan of the whole attempts table) ran once per listed webhook: 200
// webhooks beside one with 10,000 attempts took 350 ms instead of a few.
const listStatsSQL = `SELECT ` + webhookColumns + `, la.last, coalesce(st.total, 0), coalesce(st.ok, 0)
	FROM {{schema}}.webhooks w
	LEFT JOIN LATERAL (SELECT max(a.started_at) AS last FROM {{schema}}.attempts a WHERE a.webhook_id = w.id) la ON true
	LEFT JOIN (SELECT a.webhook_id, ` + countsSQL + `
		FROM {{schema}}.attempts a
		WHERE a.started_at > now() - interval '24 hours'
		  AND a.webhook_id IN (SELECT id FROM {{schema}}.webhooks WHERE deleted_at IS NULL AND ($1::bigint = 0 OR company_id = $1))
		GROUP BY a.webhook_id) st ON st.webhook_id = w.id
	WHERE w.deleted_at IS NULL AND ($1::bigint = 0 OR w.company_id = $1)
	ORDER BY w.company_id, w.id`

func (s *Store) scanStats(row pgx.Row) (WebhookStats, error) {
	var w WebhookStats
	var last *time.Time
	err := row.Scan(&w.ID, &w.CompanyID, &w.Name, &w.URL, &w.Events, &w.Secret, &w.Headers,
		&w.Description, &w.Active, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt, &last, &w.Attempts24h, &w.Succeeded24h)
	if err != nil {
		return w, err
	}
	w.LastFiredAt = deref(last)
	s.openStored(&w.Webhook)
	return w, nil
}

// ListWebhooks lists the webhooks of company (AllCompanies: every one) that
// are not deleted, with their stats.
func (s *Store) ListWebhooks(ctx context.Context, company int64) ([]WebhookStats, error) {
	rows, err := s.pool.Query(ctx, s.q(listStatsSQL), company)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookStats, error) { return s.scanStats(r) })
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return out, nil
}

// WebhookByID reads one webhook of company (AllCompanies: any) that is not
// deleted; ErrNotFound when there is none, also when it belongs to another
// company.
func (s *Store) WebhookByID(ctx context.Context, company, id int64) (WebhookStats, error) {
	w, err := s.scanStats(s.pool.QueryRow(ctx, s.q(statsSQL+` AND w.id = $2`), company, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("webhook %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("read webhook %d: %w", id, err)
	}
	return w, nil
}

// Redacted is a webhook as the audit log keeps it: no secret, header values
// masked.
func Redacted(w Webhook) map[string]any {
	headers := make(map[string]string, len(w.Headers))
	for k := range w.Headers {
		headers[k] = "xxxxx"
	}
	return map[string]any{
		"id": w.ID, "company_id": w.CompanyID, "name": w.Name, "url": w.URL, "events": w.Events,
		"has_secret": w.Secret != "" || w.SecretError != "", "headers": headers, "description": w.Description,
		"active": w.Active, "managed_by": w.ManagedBy,
	}
}

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

// AuditLog returns the audit entries of a webhook, newest first, at most
// limit, whether or not the webhook is deleted. company scopes it
// (AllCompanies: any).
func (s *Store) AuditLog(ctx context.Context, company, webhookID int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, at, actor, coalesce(company_id, 0), action, coalesce(webhook_id, 0),
			delivery_id, before, after, details
		FROM {{schema}}.audit_log WHERE webhook_id = $1 AND ($2::bigint = 0 OR company_id = $2)
		ORDER BY at DESC, id DESC LIMIT $3`), webhookID, company, limit)
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

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// CreateWebhook saves a new table-managed webhook and its audit entry in one
// transaction. Its secret is sealed with the store's key. It returns the
// webhook as saved, or ErrConflict when the company already has a webhook
// of that name. The webhook gets the events committed after it is saved.
func (s *Store) CreateWebhook(ctx context.Context, actor string, w Webhook, opts ...CreateOption) (Webhook, error) {
	sealed, err := s.box.Seal(w.Secret)
	if err != nil {
		return w, err
	}
	headers, err := s.sealHeaders(w.Headers, nil)
	if err != nil {
		return w, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkWebhookLimit(ctx, tx, w.CompanyID, opts); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, s.q(`INSERT INTO {{schema}}.webhooks
				(company_id, name, url, events, secret, headers, description, active, managed_by)
			VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, 'table')
			RETURNING id, managed_by, created_at, updated_at`),
			w.CompanyID, w.Name, w.URL, w.Events, sealed, headers, w.Description, w.Active).
			Scan(&w.ID, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt)
		if err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "webhook.create",
			WebhookID: w.ID, After: Redacted(w)})
	})
	if isUniqueViolation(err) {
		return w, fmt.Errorf("webhook %q of company %d: %w", w.Name, w.CompanyID, ErrConflict)
	}
	if err != nil {
		return w, fmt.Errorf("create webhook: %w", err)
	}
	return w, nil
}

// lockWebhook reads a webhook for change inside tx.
func (s *Store) lockWebhook(ctx context.Context, tx pgx.Tx, company, id int64) (Webhook, error) {
	var w Webhook
	err := tx.QueryRow(ctx, s.q(`SELECT `+webhookColumns+` FROM {{schema}}.webhooks w
		WHERE w.id = $1 AND w.deleted_at IS NULL AND ($2::bigint = 0 OR w.company_id = $2) FOR UPDATE`), id, company).
		Scan(&w.ID, &w.CompanyID, &w.Name, &w.URL, &w.Events, &w.Secret, &w.Headers,
			&w.Description, &w.Active, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, fmt.Errorf("webhook %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return w, fmt.Errorf("read webhook %d: %w", id, err)
	}
	if w.ManagedBy == "file" {
		return w, fmt.Errorf("webhook %d: %w", id, ErrFileManaged)
	}
	s.openStored(&w)
	return w, nil
}

// UpdateWebhook changes a table-managed webhook of company (AllCompanies:
// any) with change, which gets the webhook with its plain secret, and
// records action in the audit log, in one transaction. It returns
// ErrNotFound, ErrFileManaged, ErrConflict, or change's error.
func (s *Store) UpdateWebhook(ctx context.Context, actor, action string, company, id int64, change func(*Webhook) error) (Webhook, error) {
	var after Webhook
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := s.lockWebhook(ctx, tx, company, id)
		if err != nil {
			return err
		}
		after = before
		after.Events = append([]string(nil), before.Events...)
		after.Headers = make(map[string]string, len(before.Headers))
		for k, v := range before.Headers {
			after.Headers[k] = v
		}
		if err := change(&after); err != nil {
			return err
		}
		secretChanged := after.Secret != before.Secret
		sealed, err := s.box.Seal(after.Secret)
		if err != nil {
			return err
		}
		var secretArg *string // nil keeps the stored value (it may not open)
		if secretChanged {
			secretArg = &sealed
		}
		// Unchanged headers keep their stored values, which may hold one
		// that does not open; changed ones are all sealed anew.
		headersChanged := !maps.Equal(after.Headers, before.Headers)
		var headersArg map[string]string
		if headersChanged {
			if headersArg, err = s.sealHeaders(after.Headers, nil); err != nil {
				return err
			}
		}
		err = tx.QueryRow(ctx, s.q(`UPDATE {{schema}}.webhooks SET name = $2, url = $3, events = $4,
				secret = CASE WHEN $5::boolean THEN nullif($6, '') ELSE secret END,
				headers = CASE WHEN $10::boolean THEN $7::jsonb ELSE headers END, description = $8, active = $9
			WHERE id = $1 RETURNING updated_at`),
			id, after.Name, after.URL, after.Events, secretChanged, secretArg, headersArg,
			after.Description, after.Active, headersChanged).Scan(&after.UpdatedAt)
		if err != nil {
			return err
		}
		if secretChanged {
			after.SecretError = ""
		}
		if headersChanged {
			after.HeaderError = ""
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: before.CompanyID, Action: action,
			WebhookID: id, Before: Redacted(before), After: Redacted(after),
			Details: map[string]any{"secret_changed": secretChanged}})
	})
	switch {
	case isUniqueViolation(err):
		return after, fmt.Errorf("webhook %q of company %d: %w", after.Name, after.CompanyID, ErrConflict)
	case err != nil:
		return after, fmt.Errorf("update webhook %d: %w", id, err)
	}
	return after, nil
}

// DeleteWebhook deletes a table-managed webhook (soft: its deliveries,
// attempts and audit trail stay) and ends its pending deliveries as failed.
func (s *Store) DeleteWebhook(ctx context.Context, actor string, company, id int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := s.lockWebhook(ctx, tx, company, id)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET deleted_at = now(), active = false WHERE id = $1`), id); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: before.CompanyID, Action: "webhook.delete",
			WebhookID: id, Before: Redacted(before)})
	})
	if err != nil {
		return fmt.Errorf("delete webhook %d: %w", id, err)
	}
	// Deliveries held by a sender right now are ended by the relay's
	// periodic pass once their lease ends.
	if _, err := s.FailDeletedWebhookDeliveries(ctx); err != nil {
		return err
	}
	return nil
}

// DeliveryFilter selects a webhook's deliveries, newest first.
type DeliveryFilter struct {
	WebhookID int64
	// Statuses keeps only these; empty keeps all.
	Statuses []Status
	// From and To bound created_at: From <= created_at < To; zero is open.
	From, To time.Time
	// After continues a listing after the delivery with this position.
	After *DeliveryCursor
	Limit int
}

// DeliveryCursor is a position in a listing: keyset pagination on
// (created_at, id), stable while deliveries are added.
type DeliveryCursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// DeliveryRecord is a delivery with every attempt.
type DeliveryRecord struct {
	Delivery
	Attempts []Attempt
}

// WebhookDeliveries lists deliveries by f with their attempts.
func (s *Store) WebhookDeliveries(ctx context.Context, f DeliveryFilter) ([]DeliveryRecord, error) {
	statuses := make([]string, len(f.Statuses))
	for i, st := range f.Statuses {
		statuses[i] = string(st)
	}
	var from, to, afterAt *time.Time
	var afterID *uuid.UUID
	if !f.From.IsZero() {
		from = &f.From
	}
	if !f.To.IsZero() {
		to = &f.To
	}
	if f.After != nil {
		afterAt, afterID = &f.After.CreatedAt, &f.After.ID
	}
	if len(statuses) == 0 {
		statuses = []string{string(StatusPending), string(StatusRetrying), string(StatusDelivered), string(StatusFailed)}
	}
	// One ordered range of the (webhook, status, created_at, id) index per
	// status, merged: the newest first of all of them, without an index of
	// its own for the unfiltered listing (every index on deliveries costs
	// each delivery an entry when it is stored and when it is recorded).
	rows, err := s.pool.Query(ctx, s.q(`SELECT d.* FROM unnest($2::text[]) AS st(status)
		CROSS JOIN LATERAL (
			SELECT id, event_id, webhook_id, company_id, event_type, status,
				attempts, retry_base, next_attempt_at, last_status_code, last_error, created_at, updated_at, finished_at
			FROM {{schema}}.deliveries
			WHERE webhook_id = $1
			  AND status = st.status
			  AND ($3::timestamptz IS NULL OR created_at >= $3)
			  AND ($4::timestamptz IS NULL OR created_at < $4)
			  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
			ORDER BY created_at DESC, id DESC
			LIMIT $7
		) d
		ORDER BY d.created_at DESC, d.id DESC
		LIMIT $7`), f.WebhookID, statuses, from, to, afterAt, afterID, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeliveryRecord, error) {
		var d DeliveryRecord
		var code *int
		var lastErr *string
		var finished *time.Time
		err := r.Scan(&d.ID, &d.EventID, &d.WebhookID, &d.CompanyID, &d.EventType, &d.Status, &d.Delivery.Attempts, &d.RetryBase,
			&d.NextAttemptAt, &code, &lastErr, &d.CreatedAt, &d.UpdatedAt, &finished)
		d.LastStatusCode, d.LastError, d.FinishedAt = deref(code), deref(lastErr), deref(finished)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	ids := make([]uuid.UUID, len(out))
	index := make(map[uuid.UUID]int, len(out))
	for i, d := range out {
		ids[i] = d.ID
		index[d.ID] = i
	}
	arows, err := s.pool.Query(ctx, s.q(`SELECT `+attemptColumns+`
		FROM {{schema}}.attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt`), ids)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	attempts, err := pgx.CollectRows(arows, scanAttempt)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	for _, a := range attempts {
		i := index[a.DeliveryID]
		out[i].Attempts = append(out[i].Attempts, a)
	}
	for i := range out {
		sort.Slice(out[i].Attempts, func(a, b int) bool { return out[i].Attempts[a].Attempt < out[i].Attempts[b].Attempt })
	}
	return out, nil
}

func scanAttempt(row pgx.CollectableRow) (Attempt, error) {
	var a Attempt
	var ms float64
	var code *int
	var errText, snippet, sentBy *string
	err := row.Scan(&a.DeliveryID, &a.WebhookID, &a.Attempt, &a.StartedAt, &ms, &code, &errText, &snippet, &sentBy)
	a.Duration = time.Duration(ms * float64(time.Millisecond))
	a.StatusCode = deref(code)
	a.Error = deref(errText)
	a.Snippet = deref(snippet)
	a.SentBy = deref(sentBy)
	return a, err
}

// refireSet is the change that sends a finished delivery again: see Refire.
const refireSet = `status = 'pending', retry_base = attempts, finished_at = NULL,
	next_attempt_at = now(), last_error = NULL, last_status_code = NULL, updated_at = now()`

// RefireDelivery sends a failed or delivered delivery of a webhook again,
// keeping its id (see Refire), and records it in the audit log. It returns
// ErrNotFound when the webhook has no such delivery and ErrNotFinished when
// the delivery is pending or retrying (it is sent anyway).
func (s *Store) RefireDelivery(ctx context.Context, actor string, w Webhook, id uuid.UUID) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status Status
		err := tx.QueryRow(ctx, s.q(`SELECT status FROM {{schema}}.deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE`),
			id, w.ID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if status != StatusFailed && status != StatusDelivered {
			return fmt.Errorf("delivery %s is %s: %w", id, status, ErrNotFinished)
		}
		if _, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.deliveries SET `+refireSet+` WHERE id = $1`), id); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "delivery.refire",
			WebhookID: w.ID, DeliveryID: id, Details: map[string]any{"previous_status": status}})
	})
	if err != nil {
		return fmt.Errorf("refire delivery %s: %w", id, err)
	}
	return nil
}

// RefireFailed sends every failed delivery of a webhook created in
// [from, to) again (zero bounds are open), keeping their ids, and records
// it in the audit log. It returns the ids re-fired.
func (s *Store) RefireFailed(ctx context.Context, actor string, w Webhook, from, to time.Time) ([]uuid.UUID, error) {
	var fromArg, toArg *time.Time
	if !from.IsZero() {
		fromArg = &from
	}
	if !to.IsZero() {
		toArg = &to
	}
	var ids []uuid.UUID
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q(`UPDATE {{schema}}.deliveries SET `+refireSet+`
			WHERE webhook_id = $1 AND status = 'failed'
			  AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
			RETURNING id`), w.ID, fromArg, toArg)
		if err != nil {
			return err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
			return err
		}
		details := map[string]any{"refired": len(ids)}
		if fromArg != nil {
			details["from"] = from
		}
		if toArg != nil {
			details["to"] = to
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: w.CompanyID, Action: "delivery.refire_bulk",
			WebhookID: w.ID, Details: details})
	})
	if err != nil {
		return nil, fmt.Errorf("refire failed deliveries of webhook %d: %w", w.ID, err)
	}
	return ids, nil
}

// DeliveryOf reads a delivery of a webhook with its attempts; ErrNotFound
// when the webhook has no such delivery.
func (s *Store) DeliveryOf(ctx context.Context, webhookID int64, id uuid.UUID) (DeliveryRecord, error) {
	d, err := s.DeliveryByID(ctx, id)
	if err != nil {
		return DeliveryRecord{}, err
	}
	if d.WebhookID != webhookID {
		return DeliveryRecord{}, fmt.Errorf("delivery %s: %w", id, ErrNotFound)
	}
	as, err := s.Attempts(ctx, id)
	if err != nil {
		return DeliveryRecord{}, err
	}
	return DeliveryRecord{Delivery: d, Attempts: as}, nil
}
