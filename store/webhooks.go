package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Webhook is a registered endpoint of one company.
type Webhook struct {
	ID        int64
	CompanyID int64
	Name      string
	URL       string
	Events    []string
	// Secret is the plain text signing secret ("" for none).
	Secret string
	// SecretError says why a stored secret could not be decrypted.
	SecretError string
	// Headers are the webhook's extra headers with their plain values. A
	// value that could not be decrypted is left out and HeaderError says
	// why; the webhook's deliveries then fail rather than go without it.
	Headers     map[string]string
	HeaderError string
	Description string
	// Format is the payload format: FormatRaw, FormatSlack or FormatTeams;
	// "" is raw.
	Format string
	// Filter is a condition over the event (mapper.CompileFilter) that an
	// event must meet to be sent to the webhook; "" sends every event it
	// subscribes to.
	Filter    string
	Active    bool
	ManagedBy string
	CreatedAt time.Time
	UpdatedAt time.Time
	// StandardWebhooks: the webhook's requests also carry the Standard
	// Webhooks headers (webhook-id, webhook-timestamp, webhook-signature).
	StandardWebhooks bool
	// PreviousSecret is the plain text secret the last rotation replaced:
	// until PreviousSecretUntil every request is signed with it too. ""
	// (and PreviousSecretUntil zero) when there is none or its window has
	// ended. Read only: UpdateWebhook sets it when the secret changes (see
	// SecretOverlap).
	PreviousSecret      string
	PreviousSecretUntil time.Time
	previousUntil       *time.Time // as scanned
	// SecretOverlap, for SyncFileWebhooks only, is how long the secret a
	// changed file secret replaces keeps signing (see SecretOverlap); 0
	// drops it at once. Reads leave it zero.
	SecretOverlap time.Duration
}

// webhookSyncLock is the advisory lock key that serialises SyncFileWebhooks.
const webhookSyncLock = 0x5e1a7_0002

// SyncFileWebhooks makes the file-managed webhooks equal to hooks: matching
// (company, name) rows are updated, new ones inserted, and file-managed ones
// no longer listed are deleted (soft: their history stays). Webhooks managed
// in the table are left alone; a file webhook whose name is taken by one is
// an error. A changed secret is a rotation, as UpdateWebhook makes one: the
// replaced secret keeps signing for the webhook's SecretOverlap, and the
// audit log records it (webhook.rotate_secret, actor FileActor).
func (s *Store) SyncFileWebhooks(ctx context.Context, hooks []Webhook) (added, updated, removed int, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Relays started together sync the same file at once: one at a
		// time, or both insert the same webhook.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", webhookSyncLock); err != nil {
			return fmt.Errorf("lock webhooks for the sync: %w", err)
		}
		added, updated, removed = 0, 0, 0
		keep := make([]int64, 0, len(hooks))
		for _, h := range hooks {
			var id int64
			var managedBy string
			var changed bool
			// The stored form of the file's secret and header values: the
			// stored values themselves where they already hold the file's
			// under the current key (a new seal would differ every time),
			// else new seals.
			var stored string
			var storedHeaders map[string]string
			err := tx.QueryRow(ctx, s.q(`SELECT coalesce(secret, ''), headers FROM {{schema}}.webhooks
				WHERE company_id = $1 AND name = $2 AND deleted_at IS NULL`), h.CompanyID, h.Name).Scan(&stored, &storedHeaders)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("read webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			}
			found := err == nil
			rot, err := s.fileRotation(found, stored, h)
			if err != nil {
				return fmt.Errorf("webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			}
			if !found || rot.secretChanged || !s.box.Current(stored) {
				if stored, err = s.box.Seal(h.Secret); err != nil {
					return err
				}
			}
			headers, err := s.sealHeaders(h.Headers, storedHeaders)
			if err != nil {
				return fmt.Errorf("webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			}
			err = tx.QueryRow(ctx, s.q(`SELECT id, managed_by,
					(url, events, coalesce(secret, ''), headers, description, active, format, standard_webhooks, coalesce(filter, ''))
						IS DISTINCT FROM ($3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11)
				FROM {{schema}}.webhooks WHERE company_id = $1 AND name = $2 AND deleted_at IS NULL`),
				h.CompanyID, h.Name, h.URL, h.Events, stored, headers, h.Description, h.Active, formatOrRaw(h.Format), h.StandardWebhooks, h.Filter).
				Scan(&id, &managedBy, &changed)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				err = tx.QueryRow(ctx, s.q(`INSERT INTO {{schema}}.webhooks
						(company_id, name, url, events, secret, headers, description, active, managed_by, format, standard_webhooks, filter)
					VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, 'file', $9, $10, nullif($11, '')) RETURNING id`),
					h.CompanyID, h.Name, h.URL, h.Events, stored, headers, h.Description, h.Active, formatOrRaw(h.Format), h.StandardWebhooks, h.Filter).Scan(&id)
				if err != nil {
					return fmt.Errorf("add webhook %q of company %d: %w", h.Name, h.CompanyID, err)
				}
				added++
			case err != nil:
				return fmt.Errorf("read webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			case managedBy != "file":
				return fmt.Errorf("webhook %q of company %d is managed in the webhooks table; rename one of them", h.Name, h.CompanyID)
			case changed:
				var before Webhook
				if rot.secretChanged {
					if before, err = s.readForAudit(ctx, tx, id); err != nil {
						return err
					}
				}
				// The previous secret changes with the secret only: an edit
				// of anything else (or a reseal under a new key) keeps a
				// window that is running.
				var until *time.Time
				err = tx.QueryRow(ctx, s.q(`UPDATE {{schema}}.webhooks SET url = $2, events = $3, secret = nullif($4, ''),
						headers = $5, description = $6, active = $7, format = $8, standard_webhooks = $9, filter = nullif($10, ''),
						previous_secret = CASE WHEN $11::boolean THEN $12 ELSE previous_secret END,
						previous_secret_until = CASE WHEN $11::boolean
							THEN now() + $13::bigint * interval '1 microsecond' ELSE previous_secret_until END
					WHERE id = $1 RETURNING previous_secret_until`),
					id, h.URL, h.Events, stored, headers, h.Description, h.Active, formatOrRaw(h.Format), h.StandardWebhooks, h.Filter,
					rot.secretChanged, rot.prev.sealed, rot.prev.micros).Scan(&until)
				if err != nil {
					return fmt.Errorf("update webhook %q of company %d: %w", h.Name, h.CompanyID, err)
				}
				if rot.secretChanged {
					if err := s.auditFileRotation(ctx, tx, before, h, rot, until); err != nil {
						return fmt.Errorf("webhook %q of company %d: %w", h.Name, h.CompanyID, err)
					}
				}
				updated++
			}
			keep = append(keep, id)
		}
		tag, err := tx.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET deleted_at = now(), active = false
			WHERE managed_by = 'file' AND deleted_at IS NULL AND id <> ALL($1)`), keep)
		if err != nil {
			return fmt.Errorf("remove webhooks no longer in the file: %w", err)
		}
		removed = int(tag.RowsAffected())
		return nil
	})
	return added, updated, removed, err
}

// Webhooks lists the webhooks that are not deleted.
func (s *Store) Webhooks(ctx context.Context) ([]Webhook, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT `+webhookColumns+`
		FROM {{schema}}.webhooks w WHERE deleted_at IS NULL ORDER BY company_id, id`))
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	var out []Webhook
	var h Webhook
	_, err = pgx.ForEachRow(rows, []any{&h.ID, &h.CompanyID, &h.Name, &h.URL, &h.Events, &h.Secret, &h.Headers,
		&h.Description, &h.Format, &h.Filter, &h.Active, &h.ManagedBy, &h.CreatedAt, &h.UpdatedAt,
		&h.StandardWebhooks, &h.PreviousSecret, &h.previousUntil}, func() error {
		s.openStored(&h)
		out = append(out, h)
		h = Webhook{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return out, nil
}

// FailDeletedWebhookDeliveries ends the pending deliveries of deleted
// webhooks as failed ("webhook deleted"), so they neither wait forever nor
// escape retention. Deliveries of disabled webhooks stay pending and resume
// when the webhook is enabled again.
func (s *Store) FailDeletedWebhookDeliveries(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.deliveries d
		SET status = 'failed', last_error = 'webhook deleted', finished_at = now(), updated_at = now(),
		    lease_owner = NULL, lease_until = NULL
		FROM {{schema}}.webhooks w
		WHERE d.webhook_id = w.id AND w.deleted_at IS NOT NULL AND d.status IN ('pending', 'retrying')
		  AND (d.lease_until IS NULL OR d.lease_until < now())`))
	if err != nil {
		return 0, fmt.Errorf("fail deliveries of deleted webhooks: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Errors of the webhook operations.
var (
	// ErrConflict: another webhook of the company has the name.
	ErrConflict = errors.New("name already used")
	// ErrFileManaged: the webhook is defined in the config file
	// (webhooks.source: file) and only the file may change it.
	ErrFileManaged = errors.New("webhook is managed in the config file")
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
	w.description, w.format, coalesce(w.filter, ''), w.active, w.managed_by, w.created_at, w.updated_at, ` + signingColumns

// A webhook's attempts are in two places (migration 0023): the rows of
// attempt_rows, and the first attempts answered 2xx kept in their
// deliveries' rows. Last fired and the 24-hour counts read each through its
// own index (attempts_webhook_time, deliveries_first_attempt) and add them
// up; read through the attempts view, which unites them, the planner could
// not use the second index in order, and listing 50 webhooks took 200 ms
// instead of 25 (BenchmarkAdminQueries).

// lastFiredSQL is when webhook w's latest attempt started.
const lastFiredSQL = `SELECT greatest(
		(SELECT max(a.started_at) FROM {{schema}}.attempt_rows a WHERE a.webhook_id = w.id),
		(SELECT max(d.first_started_at) FROM {{schema}}.deliveries d WHERE d.webhook_id = w.id AND d.first_started_at IS NOT NULL)) AS last`

// countsSQL counts a webhook's attempt rows for the 24-hour success rate:
// those a shutdown aborted are not counted, and those answered with a 2xx
// are the successes.
const countsSQL = `count(*) FILTER (WHERE a.error IS DISTINCT FROM '` + AbortedError + `') AS total,
			count(*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS ok`

// firstCounts counts webhook w's first attempts kept in deliveries' rows
// that started after since, and those answered 2xx (all of them, as the
// relay keeps them; counted, not assumed), from deliveries_first_attempt
// alone where vacuum has marked the pages all visible.
func firstCounts(since string) string {
	return `SELECT count(*) AS total, count(*) FILTER (WHERE d.first_status_code BETWEEN 200 AND 299) AS ok
		FROM {{schema}}.deliveries d WHERE d.webhook_id = w.id AND d.first_started_at > ` + since
}

// day is the 24-hour success rate's window.
const day = `now() - interval '24 hours'`

var statsSQL = `SELECT ` + webhookColumns + `, la.last, coalesce(st.total, 0) + fs.total, coalesce(st.ok, 0) + fs.ok
	FROM {{schema}}.webhooks w
	LEFT JOIN LATERAL (` + lastFiredSQL + `) la ON true
	LEFT JOIN LATERAL (SELECT ` + countsSQL + `
		FROM {{schema}}.attempt_rows a WHERE a.webhook_id = w.id AND a.started_at > ` + day + `) st ON true
	CROSS JOIN LATERAL (` + firstCounts(day) + `) fs
	WHERE w.deleted_at IS NULL AND ($1::bigint = 0 OR w.company_id = $1)`

// listStatsSQL is statsSQL for a list: the 24-hour counts of all listed
// webhooks' attempt rows come from one grouped pass over the recent ones.
// Counted per webhook in a lateral join, a plan made for the busiest
// webhook (a scan of the whole attempts table) ran once per listed
// webhook: 200 webhooks beside one with 10,000 attempts took 350 ms
// instead of a few. The first attempts in deliveries' rows are counted
// per webhook, each a range of an index that holds nothing else.
var listStatsSQL = `SELECT ` + webhookColumns + `, la.last, coalesce(st.total, 0) + fs.total, coalesce(st.ok, 0) + fs.ok
	FROM {{schema}}.webhooks w
	LEFT JOIN LATERAL (` + lastFiredSQL + `) la ON true
	LEFT JOIN (SELECT a.webhook_id, ` + countsSQL + `
		FROM {{schema}}.attempt_rows a
		WHERE a.started_at > ` + day + `
		  AND a.webhook_id IN (SELECT id FROM {{schema}}.webhooks WHERE deleted_at IS NULL AND ($1::bigint = 0 OR company_id = $1))
		GROUP BY a.webhook_id) st ON st.webhook_id = w.id
	CROSS JOIN LATERAL (` + firstCounts(day) + `) fs
	WHERE w.deleted_at IS NULL AND ($1::bigint = 0 OR w.company_id = $1)
	ORDER BY w.company_id, w.id`

func (s *Store) scanStats(row pgx.Row) (WebhookStats, error) {
	var w WebhookStats
	var last *time.Time
	err := row.Scan(&w.ID, &w.CompanyID, &w.Name, &w.URL, &w.Events, &w.Secret, &w.Headers,
		&w.Description, &w.Format, &w.Filter, &w.Active, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt, &w.StandardWebhooks, &w.PreviousSecret, &w.previousUntil,
		&last, &w.Attempts24h, &w.Succeeded24h)
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

// changedValues names, sorted, the headers that before and after both have
// with different values.
func changedValues(before, after map[string]string) []string {
	var names []string
	for k, v := range after {
		if old, ok := before[k]; ok && old != v {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
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
		"active": w.Active, "managed_by": w.ManagedBy, "format": formatOrRaw(w.Format), "standard_webhooks": w.StandardWebhooks,
		"previous_secret_until": redactedUntil(w), "filter": w.Filter,
	}
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
				(company_id, name, url, events, secret, headers, description, active, managed_by, format, standard_webhooks, filter)
			VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, 'table', $9, $10, nullif($11, ''))
			RETURNING id, managed_by, format, created_at, updated_at`),
			w.CompanyID, w.Name, w.URL, w.Events, sealed, headers, w.Description, w.Active, formatOrRaw(w.Format), w.StandardWebhooks, w.Filter).
			Scan(&w.ID, &w.ManagedBy, &w.Format, &w.CreatedAt, &w.UpdatedAt)
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
			&w.Description, &w.Format, &w.Filter, &w.Active, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt,
			&w.StandardWebhooks, &w.PreviousSecret, &w.previousUntil)
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
func (s *Store) UpdateWebhook(ctx context.Context, actor, action string, company, id int64, change func(*Webhook) error, opts ...UpdateOption) (Webhook, error) {
	var o updateOptions
	for _, opt := range opts {
		opt(&o)
	}
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
		prev, err := s.previousSecret(before, after, secretChanged, o)
		if err != nil {
			return err
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
				headers = CASE WHEN $10::boolean THEN $7::jsonb ELSE headers END, description = $8, active = $9,
				format = $11, standard_webhooks = $12,
				previous_secret = CASE WHEN $5::boolean THEN $13 ELSE previous_secret END,
				previous_secret_until = CASE WHEN $5::boolean
					THEN now() + $14::bigint * interval '1 microsecond' ELSE previous_secret_until END,
				filter = nullif($15, '')
			WHERE id = $1 RETURNING format, updated_at, previous_secret_until`),
			id, after.Name, after.URL, after.Events, secretChanged, secretArg, headersArg,
			after.Description, after.Active, headersChanged, formatOrRaw(after.Format), after.StandardWebhooks, prev.sealed, prev.micros,
			after.Filter).
			Scan(&after.Format, &after.UpdatedAt, &after.previousUntil)
		if err != nil {
			return err
		}
		if secretChanged {
			after.SecretError = ""
			after.PreviousSecret, after.PreviousSecretUntil = prev.plain, deref(after.previousUntil)
		}
		if headersChanged {
			after.HeaderError = ""
		}
		details := secretDetails(secretChanged, o, after)
		if names := changedValues(before.Headers, after.Headers); len(names) > 0 {
			// The masked headers of Before and After are alike: name the
			// ones whose value changed, never the values.
			details["header_values_changed"] = names
		}
		return s.writeAudit(ctx, tx, AuditEntry{Actor: actor, CompanyID: before.CompanyID, Action: action,
			WebhookID: id, Before: Redacted(before), After: Redacted(after), Details: details})
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

// formatOrRaw is a webhook's format as stored: "" is raw.
func formatOrRaw(f string) string {
	if f == "" {
		return FormatRaw
	}
	return f
}
