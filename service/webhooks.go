package service

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/internal/outage"
	"github.com/smartmaintenance/relay/store"
)

// watchWebhooks reports edits of the webhooks table. Edits need no reload to
// take effect: deliveries are fanned out against the table inside the store
// transaction of each source transaction, and every attempt reads the
// webhook's current URL, secret and headers. What the watcher adds is a
// clear log line for every webhook an admin saved that cannot work.
func watchWebhooks(ctx context.Context, st *store.Store, cfg *config.Config, cat Catalogue, log *slog.Logger) {
	seen := map[int64]time.Time{}
	t := time.NewTicker(cfg.Webhooks.ReloadInterval)
	defer t.Stop()
	// Each step runs every second by default: while the store is down, one
	// line per outage each, not one a second.
	reading := outage.New(log, slog.LevelWarn, "reading the webhooks table")
	forgetting := outage.New(log, slog.LevelWarn, "forgetting the previous secrets of ended rotations")
	ending := outage.New(log, slog.LevelWarn, "ending deliveries of deleted webhooks")
	for {
		if hooks, err := st.Webhooks(ctx); reading.Step(ctx, err) {
			reportWebhookEdits(hooks, seen, cfg.Production, cat, log)
		}
		if n, err := st.ForgetExpiredSecrets(ctx); forgetting.Step(ctx, err) && n > 0 {
			log.Info("previous secrets forgotten: their overlap windows have ended", "webhooks", n)
		}
		if n, err := st.FailDeletedWebhookDeliveries(ctx); ending.Step(ctx, err) && n > 0 {
			log.Warn("pending deliveries of deleted webhooks marked failed", "deliveries", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func reportWebhookEdits(hooks []store.Webhook, seen map[int64]time.Time, production bool, cat Catalogue, log *slog.Logger) {
	present := make(map[int64]bool, len(hooks))
	changed := 0
	for _, h := range hooks {
		present[h.ID] = true
		if at, ok := seen[h.ID]; ok && at.Equal(h.UpdatedAt) {
			continue
		}
		seen[h.ID] = h.UpdatedAt
		changed++
		for _, p := range webhookProblems(h, production, cat) {
			log.Warn("webhook "+p, "webhook_id", h.ID, "company_id", h.CompanyID, "name", h.Name)
		}
	}
	removed := 0
	for id := range seen {
		if !present[id] {
			delete(seen, id)
			removed++
		}
	}
	if changed > 0 || removed > 0 {
		log.Info("webhooks table read", "webhooks", len(hooks), "new_or_changed", changed, "removed", removed)
	}
}

// webhookProblems checks a webhook from the table with the same rules as a
// webhook from the config file.
func webhookProblems(h store.Webhook, production bool, cat Catalogue) []string {
	w := config.Webhook{CompanyID: h.CompanyID, Name: h.Name, URL: h.URL, Events: h.Events, Secret: h.Secret,
		Headers: h.Headers, Description: h.Description, Format: h.Format, Filter: h.Filter, Active: h.Active,
		StandardWebhooks: h.StandardWebhooks && h.SecretError == ""}
	problems := config.CheckWebhook(w, production)
	if h.SecretError != "" {
		problems = append(problems, "secret: "+h.SecretError+"; its deliveries fail until the key is configured or a new secret is saved")
	}
	if h.HeaderError != "" {
		problems = append(problems, "headers: "+h.HeaderError+"; its deliveries fail until the key is configured or the headers are saved again")
	}
	for _, ev := range h.Events {
		if !slices.Contains(cat.Available, ev) {
			problems = append(problems, fmt.Sprintf("events: %q is not offered by this database", ev))
		}
	}
	return problems
}
