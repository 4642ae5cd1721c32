// Webhook filters: which of a write's events each filtered webhook refuses,
// decided before the write so that a refused event costs no delivery row.

package ingest

import (
	"context"
	"errors"
	"slices"

	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

// filterSet is the webhooks' filters as the ingester last read them
// (store.WebhookFilters), compiled. The store checks, in every write, that
// they are still the current ones (store.Filtering); when they are not,
// the ingester reads them again and decides anew (see retryFilters), so
// the filter applied to an event is the one current when it is written.
type filterSet struct {
	byCompany map[int64][]filterOf
	// warned are the webhooks whose filter failed, logged once per read.
	warned map[int64]bool
}

type filterOf struct {
	store.WebhookFilter
	f   *mapper.Filter // nil: it does not compile (saved past the checks), so it refuses every event
	err error
}

// maxFilterTries is how many times a write is decided anew when the
// filters change under it, before the ingester gives up (the session
// restarts and the transactions are streamed again).
const maxFilterTries = 5

// loadFilters reads the webhooks' filters unless they are read already.
func (in *Ingester) loadFilters(ctx context.Context) error {
	if in.filters != nil {
		return nil
	}
	all, err := in.st.WebhookFilters(ctx)
	if err != nil {
		return err
	}
	fs := &filterSet{byCompany: map[int64][]filterOf{}, warned: map[int64]bool{}}
	for _, w := range all {
		f, err := mapper.CompileFilter(w.Filter, nil)
		fs.byCompany[w.CompanyID] = append(fs.byCompany[w.CompanyID], filterOf{WebhookFilter: w, f: f, err: err})
	}
	in.filters = fs
	return nil
}

// filtering decides which of events the filtered webhooks of their
// companies refuse, reading the filters first if need be.
func (in *Ingester) filtering(ctx context.Context, events []event.Event) (store.Filtering, error) {
	if err := in.loadFilters(ctx); err != nil {
		return store.Filtering{}, err
	}
	var out store.Filtering
	if len(in.filters.byCompany) == 0 {
		return out, nil
	}
	var companies []int64
	for i := range events {
		e := &events[i]
		hooks := in.filters.byCompany[e.CompanyID]
		if len(hooks) == 0 {
			continue
		}
		if !slices.Contains(companies, e.CompanyID) {
			companies = append(companies, e.CompanyID)
			for _, h := range hooks {
				out.Known = append(out.Known, h.WebhookFilter)
			}
		}
		var env mapper.FilterEnv
		for _, h := range hooks {
			if !slices.Contains(h.Events, e.Type) {
				continue
			}
			ok, err := false, h.err
			if h.f != nil {
				if env == nil {
					if env, err = mapper.NewFilterEnv(e.Body); err != nil {
						env = nil
					}
				}
				if env != nil {
					ok, err = h.f.Match(env)
				}
			}
			if err != nil && !in.filters.warned[h.WebhookID] {
				in.filters.warned[h.WebhookID] = true
				in.log.Warn("webhook filter failed on an event; the event is not sent to the webhook",
					"webhook_id", h.WebhookID, "event_type", e.Type, "commit_lsn", e.CommitLSN.String(), "err", err)
			}
			if !ok {
				out.Excluded = append(out.Excluded, store.Exclusion{CommitLSN: e.CommitLSN, Seq: e.Seq, WebhookID: h.WebhookID})
			}
		}
	}
	return out, nil
}

// retryFilters runs write, deciding events' filtering anew and running it
// again while the store says the filters changed since they were read.
// write gets the filtering and whether this is a retry.
func (in *Ingester) retryFilters(ctx context.Context, events []event.Event, write func(store.Filtering, bool) error) error {
	for try := 0; ; try++ {
		f, err := in.filtering(ctx, events)
		if err != nil {
			return err
		}
		err = write(f, try > 0)
		if !errors.Is(err, store.ErrFiltersChanged) || try+1 >= maxFilterTries {
			return err
		}
		in.filters = nil
		in.log.Debug("webhook filters changed since they were read; deciding the write again")
	}
}
