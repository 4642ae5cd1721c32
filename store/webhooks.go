package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
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
	Active      bool
	ManagedBy   string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// webhookSyncLock is the advisory lock key that serialises SyncFileWebhooks.
const webhookSyncLock = 0x5e1a7_0002

// SyncFileWebhooks makes the file-managed webhooks equal to hooks: matching
// (company, name) rows are updated, new ones inserted, and file-managed ones
// no longer listed are deleted (soft: their history stays). Webhooks managed
// in the table are left alone; a file webhook whose name is taken by one is
// an error.
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
			if plain, openErr := s.box.Open(stored); openErr != nil || plain != h.Secret || !s.box.Current(stored) {
				if stored, err = s.box.Seal(h.Secret); err != nil {
					return err
				}
			}
			headers, err := s.sealHeaders(h.Headers, storedHeaders)
			if err != nil {
				return fmt.Errorf("webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			}
			err = tx.QueryRow(ctx, s.q(`SELECT id, managed_by,
					(url, events, coalesce(secret, ''), headers, description, active) IS DISTINCT FROM ($3, $4, $5, $6::jsonb, $7, $8)
				FROM {{schema}}.webhooks WHERE company_id = $1 AND name = $2 AND deleted_at IS NULL`),
				h.CompanyID, h.Name, h.URL, h.Events, stored, headers, h.Description, h.Active).Scan(&id, &managedBy, &changed)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				err = tx.QueryRow(ctx, s.q(`INSERT INTO {{schema}}.webhooks
						(company_id, name, url, events, secret, headers, description, active, managed_by)
					VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, 'file') RETURNING id`),
					h.CompanyID, h.Name, h.URL, h.Events, stored, headers, h.Description, h.Active).Scan(&id)
				if err != nil {
					return fmt.Errorf("add webhook %q of company %d: %w", h.Name, h.CompanyID, err)
				}
				added++
			case err != nil:
				return fmt.Errorf("read webhook %q of company %d: %w", h.Name, h.CompanyID, err)
			case managedBy != "file":
				return fmt.Errorf("webhook %q of company %d is managed in the webhooks table; rename one of them", h.Name, h.CompanyID)
			case changed:
				_, err = tx.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET url = $2, events = $3, secret = nullif($4, ''),
						headers = $5, description = $6, active = $7 WHERE id = $1`),
					id, h.URL, h.Events, stored, headers, h.Description, h.Active)
				if err != nil {
					return fmt.Errorf("update webhook %q of company %d: %w", h.Name, h.CompanyID, err)
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
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, company_id, name, url, events, coalesce(secret, ''), headers,
			description, active, managed_by, created_at, updated_at
		FROM {{schema}}.webhooks WHERE deleted_at IS NULL ORDER BY company_id, id`))
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	var out []Webhook
	var h Webhook
	_, err = pgx.ForEachRow(rows, []any{&h.ID, &h.CompanyID, &h.Name, &h.URL, &h.Events, &h.Secret, &h.Headers,
		&h.Description, &h.Active, &h.ManagedBy, &h.CreatedAt, &h.UpdatedAt}, func() error {
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

// openStored replaces h.Secret and h.Headers, as stored, by their plain
// text, or sets h.SecretError and h.HeaderError.
func (s *Store) openStored(h *Webhook) {
	h.Headers, h.HeaderError = s.openHeaders(h.Headers)
	plain, err := s.box.Open(h.Secret)
	if err != nil {
		h.Secret, h.SecretError = "", err.Error()
		return
	}
	h.Secret = plain
}

// ResealSecrets brings every stored secret and header value of a webhook
// that is not deleted to the current key: plain text is sealed once a key is
// configured, and values sealed with a previous key are sealed again with
// the current one. A value none of the keys opens is left as it is and
// reported in problems, one line per webhook; its deliveries fail until the
// key is configured or the value is saved again. resealed counts the
// webhooks written. Without a key nothing is changed (sealed values are
// never written back as plain text).
func (s *Store) ResealSecrets(ctx context.Context) (resealed int, problems []string, err error) {
	if s.box == nil {
		return 0, nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, company_id, name, coalesce(secret, ''), headers FROM {{schema}}.webhooks
		WHERE deleted_at IS NULL AND (coalesce(secret, '') <> '' OR headers <> '{}')`))
	if err != nil {
		return 0, nil, fmt.Errorf("reseal secrets: %w", err)
	}
	type row struct {
		id, company  int64
		name, secret string
		headers      map[string]string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.company, &x.name, &x.secret, &x.headers)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("reseal secrets: %w", err)
	}
	for _, x := range all {
		var bad []string
		secret, secretChanged, err := s.reseal(x.secret, s.box.Open, s.box.Seal)
		if err != nil {
			bad = append(bad, err.Error())
		}
		headers := make(map[string]string, len(x.headers))
		headersChanged := false
		for _, name := range slices.Sorted(maps.Keys(x.headers)) {
			v, changed, err := s.reseal(x.headers[name], s.box.OpenHeader, s.box.SealHeader)
			if err != nil {
				bad = append(bad, fmt.Sprintf("header %s: %v", name, err))
			}
			headers[name] = v
			headersChanged = headersChanged || changed
		}
		if len(bad) > 0 {
			problems = append(problems, fmt.Sprintf("webhook %d (%q of company %d): %s", x.id, x.name, x.company, strings.Join(bad, "; ")))
		}
		if !secretChanged && !headersChanged {
			continue
		}
		// Only if nobody changed it meanwhile.
		tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET secret = nullif($2, ''), headers = $3
			WHERE id = $1 AND coalesce(secret, '') = $4 AND headers = $5::jsonb`), x.id, secret, headers, x.secret, x.headers)
		if err != nil {
			return resealed, problems, fmt.Errorf("reseal secrets of webhook %d: %w", x.id, err)
		}
		resealed += int(tag.RowsAffected())
	}
	return resealed, problems, nil
}

// reseal returns stored sealed with the current key and whether that
// changed it. A value that does not open is returned as it is, with the
// reason.
func (s *Store) reseal(stored string, open, seal func(string) (string, error)) (string, bool, error) {
	if s.box.Current(stored) {
		return stored, false, nil
	}
	plain, err := open(stored)
	if err != nil {
		return stored, false, err
	}
	sealed, err := seal(plain)
	if err != nil {
		return stored, false, err
	}
	return sealed, true, nil
}
