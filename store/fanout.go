package store

import (
	"context"
	"fmt"
)

// WebhooksVersion returns the webhooks' current version (migration 0022):
// it moves on every change to a webhook or a pause.
func (s *Store) WebhooksVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, s.q(`SELECT version FROM {{schema}}.webhooks_version`)).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the webhooks' version: %w", err)
	}
	return v, nil
}
