package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// signingColumns are the webhook columns of Standard Webhooks and secret
// rotation, in the order Webhook's scans read them: the previous secret
// and its end only while its window lasts, so that an ended window signs
// nothing even before ForgetExpiredSecrets has erased it.
const signingColumns = `w.standard_webhooks,
	CASE WHEN w.previous_secret_until > now() THEN coalesce(w.previous_secret, '') ELSE '' END,
	CASE WHEN w.previous_secret_until > now() THEN w.previous_secret_until END`

// claimPreviousSecret is the stored previous secret a claim sends with
// and the end of its window, both NULL once the window has ended: two
// columns. The sender signs with it only until that end (see
// Claimed.PreviousSecretUntil), however long the delivery waits in memory.
const (
	claimPreviousSecret = `CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret,
       CASE WHEN w.previous_secret_until > now() THEN w.previous_secret_until END AS previous_until`
	// claimPreviousAgg is the same two columns, aggregated over the rows.
	claimPreviousAgg = `array_agg(CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END),
       array_agg(CASE WHEN w.previous_secret_until > now() THEN w.previous_secret_until END)`
)

// MaxSecretOverlap bounds a rotation's overlap window.
const MaxSecretOverlap = 7 * 24 * time.Hour

// UpdateOption changes how UpdateWebhook saves a webhook.
type UpdateOption func(*updateOptions)

type updateOptions struct {
	overlap time.Duration
}

// SecretOverlap makes UpdateWebhook keep the secret it replaces, if the
// secret changes, valid for d more: until then every request is signed with
// the new and the old secret. Without it, or with d <= 0, the old secret is
// dropped at once, and so is any previous secret still kept from an
// earlier rotation. Only one previous secret is kept: rotating again
// within a window replaces it with the secret being replaced.
func SecretOverlap(d time.Duration) UpdateOption {
	return func(o *updateOptions) { o.overlap = min(d, MaxSecretOverlap) }
}

// previous is what UpdateWebhook stores as the previous secret when the
// secret changes: nil sealed and micros store none.
type previous struct {
	sealed *string
	micros *int64
	plain  string
}

func (s *Store) previousSecret(before, after Webhook, secretChanged bool, o updateOptions) (previous, error) {
	// An unreadable secret (SecretError) reads as "": there is nothing to
	// sign with, so nothing to keep.
	if !secretChanged || o.overlap <= 0 || before.Secret == "" || after.Secret == "" {
		return previous{}, nil
	}
	sealed, err := s.box.Seal(before.Secret)
	if err != nil {
		return previous{}, err
	}
	micros := o.overlap.Microseconds()
	return previous{sealed: &sealed, micros: &micros, plain: before.Secret}, nil
}

// secretDetails are the audit details of an update: whether the secret
// changed and, when it did, the overlap window chosen and its end. Never a
// secret.
func secretDetails(secretChanged bool, o updateOptions, after Webhook) map[string]any {
	d := map[string]any{"secret_changed": secretChanged}
	if secretChanged {
		d["secret_overlap"] = o.overlap.String()
		if !after.PreviousSecretUntil.IsZero() {
			d["previous_secret_until"] = after.PreviousSecretUntil.UTC()
		}
	}
	return d
}

// redactedUntil is the end of w's previous secret's window for the audit
// log, nil when it has none.
func redactedUntil(w Webhook) any {
	if w.PreviousSecretUntil.IsZero() {
		return nil
	}
	return w.PreviousSecretUntil.UTC()
}

// openPrevious replaces h.PreviousSecret, as stored, by its plain text and
// sets PreviousSecretUntil from the scanned end. A previous secret that
// does not open is a secret error: requests must not go without the
// signature the receiver may still check.
func (s *Store) openPrevious(h *Webhook) {
	h.PreviousSecretUntil = deref(h.previousUntil)
	h.previousUntil = nil
	if h.PreviousSecret == "" {
		return
	}
	plain, err := s.box.Open(h.PreviousSecret)
	if err != nil {
		h.PreviousSecret = ""
		if h.SecretError == "" {
			h.SecretError = "previous secret: " + err.Error()
		}
		return
	}
	h.PreviousSecret = plain
}

// ForgetExpiredSecrets erases the previous secrets whose overlap window
// has ended; it returns how many.
func (s *Store) ForgetExpiredSecrets(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET previous_secret = NULL, previous_secret_until = NULL
		WHERE previous_secret_until <= now()`))
	if err != nil {
		return 0, fmt.Errorf("forget expired previous secrets: %w", err)
	}
	return tag.RowsAffected(), nil
}

// resealPrevious is ResealSecrets for the previous secrets still in their
// window.
func (s *Store) resealPrevious(ctx context.Context) (resealed int, problems []string, err error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, company_id, name, previous_secret FROM {{schema}}.webhooks
		WHERE deleted_at IS NULL AND previous_secret IS NOT NULL AND previous_secret_until > now()`))
	if err != nil {
		return 0, nil, fmt.Errorf("reseal previous secrets: %w", err)
	}
	type row struct {
		id, company  int64
		name, secret string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.company, &x.name, &x.secret)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("reseal previous secrets: %w", err)
	}
	for _, x := range all {
		sealed, changed, err := s.reseal(x.secret, s.box.Open, s.box.Seal)
		if err != nil {
			problems = append(problems, fmt.Sprintf("webhook %d (%q of company %d): previous secret: %v", x.id, x.name, x.company, err))
		}
		if !changed {
			continue
		}
		tag, err := s.pool.Exec(ctx, s.q(`UPDATE {{schema}}.webhooks SET previous_secret = $2
			WHERE id = $1 AND previous_secret = $3`), x.id, sealed, x.secret)
		if err != nil {
			return resealed, problems, fmt.Errorf("reseal previous secret of webhook %d: %w", x.id, err)
		}
		resealed += int(tag.RowsAffected())
	}
	return resealed, problems, nil
}

// FileActor is the audit log's actor of the changes SyncFileWebhooks
// makes.
const FileActor = "config file"

// fileRotationResult is what a sync does to a file webhook's secret.
type fileRotationResult struct {
	// secretChanged: the file's secret differs from the stored one (or the
	// stored one does not open).
	secretChanged bool
	// prev is the previous secret to store when secretChanged.
	prev    previous
	overlap time.Duration
}

// fileRotation compares the file's secret of h with the one stored (found:
// h's row exists; stored: its secret as stored) as UpdateWebhook compares
// an update's: a changed secret keeps the stored one for h.SecretOverlap.
func (s *Store) fileRotation(found bool, stored string, h Webhook) (fileRotationResult, error) {
	if !found {
		return fileRotationResult{}, nil
	}
	var before Webhook
	plain, err := s.box.Open(stored)
	if err == nil {
		// An unreadable secret reads as "": nothing to keep.
		before.Secret = plain
	}
	r := fileRotationResult{secretChanged: err != nil || plain != h.Secret, overlap: max(min(h.SecretOverlap, MaxSecretOverlap), 0)}
	if !r.secretChanged {
		return r, nil
	}
	r.prev, err = s.previousSecret(before, h, true, updateOptions{overlap: r.overlap})
	return r, err
}

// readForAudit reads webhook id inside tx as the audit log shows it before
// a change.
func (s *Store) readForAudit(ctx context.Context, tx pgx.Tx, id int64) (Webhook, error) {
	var w Webhook
	err := tx.QueryRow(ctx, s.q(`SELECT `+webhookColumns+` FROM {{schema}}.webhooks w WHERE w.id = $1`), id).
		Scan(&w.ID, &w.CompanyID, &w.Name, &w.URL, &w.Events, &w.Secret, &w.Headers,
			&w.Description, &w.Format, &w.Filter, &w.Active, &w.ManagedBy, &w.CreatedAt, &w.UpdatedAt,
			&w.StandardWebhooks, &w.PreviousSecret, &w.previousUntil)
	if err != nil {
		return w, fmt.Errorf("read webhook %d: %w", id, err)
	}
	s.openStored(&w)
	return w, nil
}

// auditFileRotation records that a sync changed the secret of the file
// webhook before to h's: webhook.rotate_secret with the window, or
// webhook.update when the file removed the secret. Never a secret.
func (s *Store) auditFileRotation(ctx context.Context, tx pgx.Tx, before, h Webhook, r fileRotationResult, until *time.Time) error {
	after := h
	after.ID, after.ManagedBy, after.Format = before.ID, before.ManagedBy, formatOrRaw(h.Format)
	after.PreviousSecretUntil = deref(until)
	action := "webhook.rotate_secret"
	if h.Secret == "" {
		action = "webhook.update"
	}
	var o updateOptions
	if r.prev.sealed != nil {
		// The window the rotation opened; none when nothing was kept (no
		// secret before or after, or secret_overlap 0).
		o.overlap = r.overlap
	}
	return s.writeAudit(ctx, tx, AuditEntry{Actor: FileActor, CompanyID: before.CompanyID, Action: action,
		WebhookID: before.ID, Before: Redacted(before), After: Redacted(after),
		Details: secretDetails(true, o, after)})
}
