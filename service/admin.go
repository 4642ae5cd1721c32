package service

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/console"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/store"
)

// newAdmin builds the admin API server. The returned func releases what it
// holds once the server has stopped.
func newAdmin(ctx context.Context, cfg *config.Config, st *store.Store, cat Catalogue, policy *egress.Policy,
	notify func(), log *slog.Logger) (*admin.Server, func(), error) {
	fields := dataFields(mapper.Merge(mapper.DefaultRules(), cfg.Mapping.Rules, cfg.Mapping.ReplaceDefaults))
	// Test events name the company as real ones do: read it from the
	// platform database on demand, through a pool of its own.
	pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: database.url: %v", ErrConfig, err)
	}
	pcfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: admin API: %w", ErrDatabase, err)
	}
	companies := pgx.Identifier{"public", mapperCompanies(cfg)}.Sanitize()
	company := func(ctx context.Context, id int64) (admin.Company, error) {
		var row map[string]any
		err := pool.QueryRow(ctx, `SELECT to_jsonb(c) FROM `+companies+` c WHERE c.id = $1`, id).Scan(&row)
		if err != nil {
			return admin.Company{}, fmt.Errorf("read company %d: %w", id, err)
		}
		c := admin.Company{Location: time.UTC}
		c.Name, _ = row["name"].(string)
		if tz, _ := row["time_zone"].(string); tz != "" && tz != "Local" {
			if loc, err := time.LoadLocation(tz); err == nil {
				c.Location = loc
			}
		} else if loc, err := time.LoadLocation(cfg.Payload.DefaultTimeZone); err == nil {
			c.Location = loc
		}
		return c, nil
	}
	m, err := NewMapper(cfg)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	sample := sampler{pool: pool, m: m}
	sender := relay.NewSender(relay.SenderOptions{Timeout: cfg.Delivery.Timeout, UserAgent: cfg.Delivery.UserAgent,
		SnippetBytes: cfg.Delivery.ResponseSnippetBytes, Egress: policy, HTTPSOnly: cfg.Production,
		Messages: messageRenderer(cfg), Logger: log.With("component", "admin")})
	srv := admin.New(admin.Options{
		Store:      st,
		Tokens:     cfg.Admin.Tokens,
		Events:     cat.Available,
		Fields:     fields,
		Sample:     sample.data,
		Production: cfg.Production,
		Egress:     policy,
		Sender:     sender,
		Company:    company,
		Notify:     notify,
		Logger:     log,

		ReplayWindow:       max(cfg.Retention.Delivered, cfg.Retention.Failed),
		MaxWebhooks:        cfg.Admin.MaxWebhooksPerCompany,
		MaxConcurrentTests: cfg.Admin.MaxConcurrentTests,
	})
	// The Webhooks page in a browser, on the same listener under /ui/.
	con, err := console.New(console.Options{Admin: srv, Logger: log.With("component", "console")})
	if err != nil {
		sender.Close()
		pool.Close()
		return nil, nil, err
	}
	srv.Handle(con.Prefix(), con)
	return srv, func() { sender.Close(); pool.Close() }, nil
}

func mapperCompanies(cfg *config.Config) string {
	m, err := NewMapper(cfg)
	if err != nil || m.CompaniesTable() == "" {
		return "companies"
	}
	return m.CompaniesTable()
}
