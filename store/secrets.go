package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// openStored replaces h.Secret and h.Headers, as stored, by their plain
// text, or sets h.SecretError and h.HeaderError.
func (s *Store) openStored(h *Webhook) {
	h.Headers, h.HeaderError = s.openHeaders(h.Headers)
	defer s.openPrevious(h)
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
// the current one. Without a key, the values stored encrypted are reported
// in problems, as none can be opened. A value none of the keys opens is left as it is and
// reported in problems, one line per webhook; its deliveries fail until the
// key is configured or the value is saved again. resealed counts the
// webhooks written. Without a key nothing is changed (sealed values are
// never written back as plain text).
func (s *Store) ResealSecrets(ctx context.Context) (resealed int, problems []string, err error) {
	if s.box == nil {
		problems, err := SealedWithoutKey(ctx, s.pool, s.name)
		return 0, problems, err
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
	n, more, err := s.resealPrevious(ctx)
	return resealed + n, append(problems, more...), err
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

// SealedWithoutKey reports, for a relay without a secrets key, each webhook
// of the state schema schema (its name, unquoted) whose secret or header
// values are stored encrypted: its deliveries fail until the key is
// configured. db is a connection or a pool; relay check asks it of a
// store it does not open.
func SealedWithoutKey(ctx context.Context, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, schema string) ([]string, error) {
	qs := pgx.Identifier{schema}.Sanitize()
	rows, err := db.Query(ctx, `SELECT w.id, w.company_id, w.name, coalesce(w.secret, '') LIKE 'enc:%',
			coalesce((SELECT string_agg(h.key, ', ' ORDER BY h.key) FROM jsonb_each_text(w.headers) h WHERE h.value LIKE 'enc:%'), '')
		FROM `+qs+`.webhooks w
		WHERE w.deleted_at IS NULL AND (coalesce(w.secret, '') LIKE 'enc:%'
			OR EXISTS (SELECT 1 FROM jsonb_each_text(w.headers) h WHERE h.value LIKE 'enc:%'))
		ORDER BY w.id`)
	if err != nil {
		return nil, fmt.Errorf("read the encrypted secrets: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var id, company int64
		var name, headers string
		var secret bool
		if err := r.Scan(&id, &company, &name, &secret, &headers); err != nil {
			return "", err
		}
		var what []string
		if secret {
			what = append(what, "its secret")
		}
		if headers != "" {
			what = append(what, "header "+headers)
		}
		return fmt.Sprintf("webhook %d (%q of company %d): %s stored encrypted, and secrets.key is not set (set RELAY_SECRETS__KEY to the key that sealed it)",
			id, name, company, strings.Join(what, " and ")), nil
	})
}
