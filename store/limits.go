package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrTooManyWebhooks: the company already has as many webhooks as it may.
var ErrTooManyWebhooks = errors.New("the company has reached its webhook limit")

// CreateOption changes how CreateWebhook creates a webhook.
type CreateOption func(*createOptions)

type createOptions struct {
	maxPerCompany int
}

// MaxPerCompany makes CreateWebhook refuse, with ErrTooManyWebhooks, a
// webhook whose company already has n webhooks (not deleted, from the
// table and from the file alike). n <= 0: no limit.
func MaxPerCompany(n int) CreateOption {
	return func(o *createOptions) { o.maxPerCompany = n }
}

// checkWebhookLimit runs inside CreateWebhook's transaction. Creations for
// one company take a transaction-scoped advisory lock first, so two at once
// cannot both see room for one more, also when several relays serve the
// admin API over the same state database.
func (s *Store) checkWebhookLimit(ctx context.Context, tx pgx.Tx, company int64, opts []CreateOption) error {
	var o createOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxPerCompany <= 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, $2))`,
		s.schema+".webhooks: create", company); err != nil {
		return fmt.Errorf("lock company %d's webhooks: %w", company, err)
	}
	var n int
	if err := tx.QueryRow(ctx, s.q(`SELECT count(*) FROM {{schema}}.webhooks WHERE company_id = $1 AND deleted_at IS NULL`),
		company).Scan(&n); err != nil {
		return fmt.Errorf("count company %d's webhooks: %w", company, err)
	}
	if n >= o.maxPerCompany {
		return fmt.Errorf("company %d has %d webhooks, at most %d: %w", company, n, o.maxPerCompany, ErrTooManyWebhooks)
	}
	return nil
}
