package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/event"
)

// WebhookFilter is a webhook's filter as a write of events checks it: the
// filter and the events it applies to (the webhook's subscriptions).
type WebhookFilter struct {
	WebhookID int64
	CompanyID int64
	Events    []string
	Filter    string
}

// WebhookFilters lists the filters of the webhooks that are not deleted.
func (s *Store) WebhookFilters(ctx context.Context) ([]WebhookFilter, error) {
	rows, err := s.pool.Query(ctx, s.q(`SELECT id, company_id, events, filter FROM {{schema}}.webhooks
		WHERE filter IS NOT NULL AND deleted_at IS NULL ORDER BY id`))
	if err != nil {
		return nil, fmt.Errorf("read webhook filters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookFilter, error) {
		var f WebhookFilter
		err := r.Scan(&f.WebhookID, &f.CompanyID, &f.Events, &f.Filter)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("read webhook filters: %w", err)
	}
	return out, nil
}

// Filtering is what the webhooks' filters decided about a write's events.
// The write creates no delivery of an event to a webhook that Excluded
// names, and stores the event only if some webhook still takes it.
//
// Known are the filters the decisions were made with: every webhook of
// the events' companies that has a filter, with its filter and events as
// the caller read them (WebhookFilters). The write checks them against
// the webhooks' current ones in the statement that creates the
// deliveries, so that the filter applied is always the one current when
// the event is written: when one differs (a filter was set, changed or
// removed, or a filtered webhook's events changed, since they were read)
// the write stores no event and fails with ErrFiltersChanged, and the
// caller reads the filters again and decides anew.
type Filtering struct {
	Known    []WebhookFilter
	Excluded []Exclusion
}

// Exclusion says that the filter of a webhook refuses an event.
type Exclusion struct {
	CommitLSN event.LSN
	Seq       int
	WebhookID int64
}

// ErrFiltersChanged is returned by a write whose Filtering.Known are not
// the webhooks' current filters: no event of it was stored (see Filtering).
var ErrFiltersChanged = errors.New("webhook filters changed since they were read")

// filterArgs are a Filtering as writeEventsSQL's parameters.
func filterArgs(f Filtering) []any {
	ids := make([]int64, len(f.Known))
	filters, events := make([]string, len(f.Known)), make([]string, len(f.Known))
	for i, k := range f.Known {
		ids[i], filters[i], events[i] = k.WebhookID, k.Filter, strings.Join(k.Events, ",")
	}
	lsns, seqs := make([]int64, len(f.Excluded)), make([]int32, len(f.Excluded))
	hooks := make([]int64, len(f.Excluded))
	for i, x := range f.Excluded {
		lsns[i], seqs[i], hooks[i] = int64(x.CommitLSN), int32(x.Seq), x.WebhookID
	}
	return []any{ids, filters, events, lsns, seqs, hooks}
}
