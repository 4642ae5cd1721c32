// Package service assembles the relay from its configuration and runs it:
// the change feed, the ingester that turns changes into stored deliveries,
// the dispatcher that sends them, and the housekeeping around them. It owns
// every goroutine it starts and returns when all of them have stopped.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/ingest"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/message"
	"github.com/smartmaintenance/relay/relay"
	"github.com/smartmaintenance/relay/store"
	"github.com/smartmaintenance/relay/telemetry"
)

// ErrConfig marks problems with the configuration or the watched database's
// schema: the relay cannot start until an operator fixes them.
var ErrConfig = errors.New("configuration problem")

// ErrDatabase marks a database the relay cannot use as it is: unreachable,
// wrong credentials, wal_level, privileges.
var ErrDatabase = errors.New("cannot use the database")

// NewMapper builds the mapper that the configuration describes.
func NewMapper(cfg *config.Config) (*mapper.Mapper, error) {
	loc, err := time.LoadLocation(cfg.Payload.DefaultTimeZone)
	if err != nil {
		return nil, fmt.Errorf("%w: payload.default_time_zone: %v", ErrConfig, err)
	}
	rules := mapper.Merge(mapper.DefaultRules(), cfg.Mapping.Rules, cfg.Mapping.ReplaceDefaults)
	m, err := mapper.New(rules, mapper.Options{DefaultLocation: loc})
	if err != nil {
		return nil, fmt.Errorf("%w: mapping.rules: %v", ErrConfig, err)
	}
	if err := cfg.CheckEvents(m.EventTypes()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := cfg.CheckFilterFields(dataFields(rules)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return m, nil
}

// dataFields lists each event type's data fields, as the rules name them:
// what a webhook's filter may read.
func dataFields(rules []mapper.Rule) map[string][]string {
	fields := map[string][]string{}
	for _, r := range rules {
		for _, entry := range r.Data {
			for name := range entry {
				fields[r.Event] = append(fields[r.Event], name)
			}
		}
	}
	return fields
}

// Catalogue says which of the mapper's event types the watched database
// offers.
type Catalogue struct {
	// Tables are the watched tables that exist.
	Tables []string
	// Available and Unavailable partition the event types.
	Available   []string
	Unavailable map[string]string // event type -> why
	// Problems are rules that read columns their table lacks.
	Problems []string
}

// Inspect reads the watched database's schema and works out the catalogue.
func Inspect(ctx context.Context, conn *pgx.Conn, m *mapper.Mapper) (Catalogue, error) {
	specs := m.Tables()
	names := make([]string, 0, len(specs))
	for t := range specs {
		names = append(names, t)
	}
	cols, err := cdc.Columns(ctx, conn, names)
	if err != nil {
		return Catalogue{}, err
	}
	var cat Catalogue
	for _, t := range names {
		if _, ok := cols[t]; ok {
			cat.Tables = append(cat.Tables, t)
		}
	}
	slices.Sort(cat.Tables)
	cat.Available, cat.Problems = m.Available(cols)
	cat.Unavailable = map[string]string{}
	for _, ev := range m.EventTypes() {
		if !slices.Contains(cat.Available, ev) {
			cat.Unavailable[ev] = "its table does not exist in this database"
		}
	}
	return cat, nil
}

// Run runs the relay until ctx is done or a component fails for good. It
// exports traces and metrics as the OTEL_* environment variables say (see
// package telemetry) and serves the observability endpoints when
// observability.listen is set.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	tel, err := telemetry.Setup(ctx, telemetry.Options{Getenv: os.Getenv, Prometheus: cfg.Observability.Listen != "",
		Logger: log.With("component", "telemetry")})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	defer func() {
		// Flush the last spans and metrics.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry: flush on exit failed", "err", err)
		}
	}()
	return RunWith(ctx, cfg, log, Telemetry{TracerProvider: tel.Tracer, MeterProvider: tel.Meter, Metrics: tel.Metrics})
}

// RunWith is Run with the telemetry providers given by the caller.
//
// It reads as the relay starts: the catalogue of what the watched database
// offers, the store and its webhooks, then the three components one change
// travels through (the change feed, the ingester, the dispatcher) and the
// servers around them, all run together until one fails or ctx ends.
func RunWith(ctx context.Context, cfg *config.Config, log *slog.Logger, tel Telemetry) error {
	if cfg.Database.URL == "" {
		return fmt.Errorf("%w: database.url is required (or RELAY_DATABASE__URL)", ErrConfig)
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w)
	}
	var hup chan os.Signal
	if cfg.Reloadable() {
		// From here on, a SIGHUP during start-up waits for the reloader
		// instead of ending the process.
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	m, cat, err := catalogue(ctx, cfg, log)
	if err != nil {
		return err
	}
	policy, err := egress.NewPolicy(cfg.Delivery.AllowNetworks)
	if err != nil {
		return fmt.Errorf("%w: delivery.allow_networks: %v", ErrConfig, err)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := prepareWebhooks(ctx, cfg, st, cat, log); err != nil {
		return err
	}

	disp := relay.New(st, relayOptions(cfg, policy, tel, log))
	replays := relay.NewReplayer(st, relay.ReplayOptions{
		Rate:       cfg.Replay.Rate,
		PerWebhook: cfg.Replay.PerWebhook,
		Notify:     disp.Notify,
		Filter:     newReplayFilters(log.With("component", "replay")).keep,
		Logger:     log.With("component", "replay"),
	})
	in := ingest.New(st, m, ingest.Options{
		Slot:           cfg.Replication.Slot,
		Tables:         cat.Tables,
		CompaniesTable: m.CompaniesTable(),
		Handoff:        disp,
		Logger:         log.With("component", "ingest"),
		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
	})
	src := cdc.New(cdcConfig(cfg, cat, log))

	r := &running{cfg: cfg, log: log, st: st, cat: cat, src: src, in: in, disp: disp, replays: replays, hup: hup, events: m.EventTypes()}
	if cfg.Admin.Listen != "" {
		notify := func() { disp.Notify(); replays.Wake() }
		srv, closeAdmin, err := newAdmin(ctx, cfg, st, cat, policy, notify, log.With("component", "admin"))
		if err != nil {
			return err
		}
		defer closeAdmin()
		if r.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return fmt.Errorf("%w: admin.listen: %v", ErrConfig, err)
		}
		// Serve closes it; this closes it when a later step fails first.
		defer r.adminLn.Close()
		r.admin = srv
	}
	closeObs, err := r.observe(ctx, tel)
	if err != nil {
		return err
	}
	defer closeObs()
	return r.run(ctx)
}

// catalogue builds the mapper and works out which of its event types the
// watched database offers. A rule that reads a missing column, or a
// database with none of the watched tables, is a configuration problem.
func catalogue(ctx context.Context, cfg *config.Config, log *slog.Logger) (*mapper.Mapper, Catalogue, error) {
	m, err := NewMapper(cfg)
	if err != nil {
		return nil, Catalogue{}, err
	}
	cat, err := inspectDatabase(ctx, cfg, m)
	if err != nil {
		return nil, Catalogue{}, err
	}
	if len(cat.Problems) > 0 {
		return nil, Catalogue{}, fmt.Errorf("%w: %s", ErrConfig, strings.Join(cat.Problems, "; "))
	}
	if len(cat.Available) == 0 {
		return nil, Catalogue{}, fmt.Errorf("%w: none of the watched tables exists in this database (looked for %s)", ErrConfig, strings.Join(names(m), ", "))
	}
	log.Info("event types available", "events", cat.Available)
	if len(cat.Unavailable) > 0 {
		log.Info("event types not offered by this database", "events", keys(cat.Unavailable))
	}
	return m, cat, nil
}

// prepareWebhooks loads the config file's webhooks into the store (when the
// file is their source) and encrypts stored secrets and header values with
// the current secrets.key, warning about those no configured key can read.
func prepareWebhooks(ctx context.Context, cfg *config.Config, st *store.Store, cat Catalogue, log *slog.Logger) error {
	if err := syncWebhooks(ctx, cfg, st, cat, log); err != nil {
		return err
	}
	resealed, problems, err := st.ResealSecrets(ctx)
	if err != nil {
		return err
	}
	if resealed > 0 {
		log.Info("webhook secrets and header values encrypted with the current secrets.key", "webhooks", resealed)
	}
	for _, p := range problems {
		log.Warn("webhook secret or header value unreadable; its deliveries fail until the key that sealed it is configured (secrets.key or secrets.previous_keys) or the value is saved again: " + p)
	}
	return nil
}

// relayOptions are the dispatcher's options from the delivery section.
func relayOptions(cfg *config.Config, policy *egress.Policy, tel Telemetry, log *slog.Logger) relay.Options {
	return relay.Options{
		Egress:       policy,
		HTTPSOnly:    cfg.Production,
		Workers:      cfg.Delivery.Workers,
		PerWebhook:   cfg.Delivery.PerWebhook,
		Timeout:      cfg.Delivery.Timeout,
		Schedule:     relay.Schedule(cfg.Delivery.RetrySchedule),
		PollInterval: cfg.Delivery.PollInterval,
		SnippetBytes: cfg.Delivery.ResponseSnippetBytes,
		DrainTimeout: cfg.Delivery.DrainTimeout,
		UserAgent:    cfg.Delivery.UserAgent,
		Logger:       log.With("component", "relay"),

		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
		MetricHosts:    cfg.Observability.MetricHosts,

		Messages: messageRenderer(cfg),
	}
}

// messageRenderer renders the Slack and Teams messages of the formats
// section. Load has parsed its templates; nil (the defaults) is only for a
// configuration that did not pass Validate.
func messageRenderer(cfg *config.Config) *message.Renderer {
	r, err := message.New(cfg.Formats.MessageOptions())
	if err != nil {
		return nil
	}
	return r
}

// cdcConfig is the change feed's configuration from the replication
// section, for the watched tables that exist.
func cdcConfig(cfg *config.Config, cat Catalogue, log *slog.Logger) cdc.Config {
	return cdc.Config{
		URL:            cfg.Database.URL,
		Slot:           cfg.Replication.Slot,
		Publication:    cfg.Replication.Publication,
		Tables:         cat.Tables,
		StatusInterval: cfg.Replication.StatusInterval,
		MaxBackoff:     cfg.Replication.ReconnectMaxBackoff,
		SentGroupDelay: cfg.Replication.GroupDelay,
		Logger:         log.With("component", "cdc"),
		// Retained WAL is logged on every check; Source.RetainedWAL and
		// Config.OnSlotStatus expose it to metrics.
		HeartbeatInterval: cfg.Replication.HeartbeatInterval,
		WALCheckInterval:  cfg.Replication.WALCheckInterval,
		RetainedWALWarn:   int64(cfg.Replication.RetainedWALWarn),
	}
}

// running is the relay's set of components, built by RunWith and run
// together by run.
type running struct {
	cfg    *config.Config
	log    *slog.Logger
	st     *store.Store
	cat    Catalogue
	events []string // the mapper's event types, for the reloader

	src  *cdc.Source
	in   *ingest.Ingester
	disp *relay.Dispatcher
	// replays runs the replays admins ask for, beside the dispatcher.
	replays *relay.Replayer

	// admin serves adminLn when admin.listen is set; obs serves the
	// observability endpoints when observability.listen is set.
	admin   *admin.Server
	adminLn net.Listener
	obs     *telemetry.Server
	// hup carries SIGHUP to the reloader when the config is reloadable.
	hup chan os.Signal
}

// observe sets up what watches the relay from outside: a small pool on the
// platform database for readiness and the slot's gauges (it connects when
// first used), the database gauges, and the observability server when
// observability.listen is set. The returned func releases them.
func (r *running) observe(ctx context.Context, tel Telemetry) (func(), error) {
	platform, err := platformPool(ctx, r.cfg.Database.URL)
	if err != nil {
		return nil, err
	}
	closers := []func(){platform.Close}
	closeAll := func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}
	if tel.MeterProvider != nil {
		reg, err := observeState(tel.MeterProvider, r.st, platform, r.cfg.Replication.Slot, r.log.With("component", "metrics"))
		if err != nil {
			r.log.Warn("metrics: database gauges not available", "err", err)
		} else {
			closers = append(closers, func() { _ = reg.Unregister() })
		}
	}
	if r.cfg.Observability.Listen != "" {
		r.obs, err = telemetry.NewServer(r.cfg.Observability.Listen, tel.Metrics, readiness(platform, r.src, r.st), r.log.With("component", "observability"))
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		r.obs.Profiling = r.cfg.Observability.Pprof
	}
	return closeAll, nil
}

// run runs every component until one fails for good or ctx ends, and
// returns when all have stopped. The feed stops first on shutdown; the
// dispatcher drains in-flight attempts within its own deadline.
func (r *running) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	if r.obs != nil {
		// Stops with the other components, shutting down gracefully.
		g.Go(func() error { return r.obs.Run(gctx) })
	}
	g.Go(func() error {
		err := r.src.Run(gctx, r.in)
		// A stop in the middle of a source transaction leaves its store
		// transaction open; the store cannot close until it is rolled back.
		r.in.Close(ctx)
		if err != nil {
			return fmt.Errorf("change feed: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := r.disp.Run(gctx); err != nil {
			return fmt.Errorf("dispatcher: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := r.replays.Run(gctx); err != nil {
			return fmt.Errorf("replays: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		prune(gctx, r.st, r.cfg.Retention, r.log)
		return nil
	})
	if r.cfg.Webhooks.Source == config.SourceTable {
		g.Go(func() error {
			watchWebhooks(gctx, r.st, r.cfg, r.cat, r.log)
			return nil
		})
	}
	if r.admin != nil {
		g.Go(func() error { return r.admin.Serve(gctx, r.adminLn) })
	}
	if r.cfg.Reloadable() {
		startReloader(g, gctx, r.hup, &reloader{running: r.cfg, events: r.events, cat: r.cat, st: r.st, admin: r.admin,
			log: r.log.With("component", "config")})
	}
	return g.Wait()
}

func names(m *mapper.Mapper) []string {
	var out []string
	for t := range m.Tables() {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// syncWebhooks makes the store's file-managed webhooks match the file.
func syncWebhooks(ctx context.Context, cfg *config.Config, st *store.Store, cat Catalogue, log *slog.Logger) error {
	if cfg.Webhooks.Source != config.SourceFile {
		return nil
	}
	hooks := make([]store.Webhook, len(cfg.Webhooks.Endpoints))
	for i, w := range cfg.Webhooks.Endpoints {
		hooks[i] = store.Webhook{CompanyID: w.CompanyID, Name: w.Name, URL: w.URL, Events: w.Events,
			Secret: w.Secret, Headers: w.Headers, Description: w.Description, Format: w.Format, Filter: w.Filter, Active: w.Active,
			StandardWebhooks: w.StandardWebhooks, SecretOverlap: w.SecretOverlap}
		for _, ev := range w.Events {
			if _, missing := cat.Unavailable[ev]; missing {
				log.Warn("webhook subscribes to an event type this database does not offer",
					"webhook", w.Name, "company_id", w.CompanyID, "event", ev)
			}
		}
	}
	added, updated, removed, err := st.SyncFileWebhooks(ctx, hooks)
	if err != nil {
		return fmt.Errorf("load webhooks from the config file: %w", err)
	}
	log.Info("webhooks loaded from the config file", "total", len(hooks), "added", added, "updated", updated, "removed", removed)
	if n, err := st.FailDeletedWebhookDeliveries(ctx); err != nil {
		return err
	} else if n > 0 {
		log.Warn("pending deliveries of removed webhooks marked failed", "deliveries", n)
	}
	return nil
}

// prune deletes old deliveries on the retention schedule.
func prune(ctx context.Context, st *store.Store, r config.Retention, log *slog.Logger) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		n, err := st.Prune(ctx, r.Delivered, r.Failed)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("pruning old deliveries failed", "err", err)
		case n > 0:
			log.Info("pruned old deliveries", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// platformPool opens a pool of at most two connections on the platform
// database. It connects lazily.
func platformPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: parse database.url: %v", ErrConfig, err)
	}
	pcfg.MaxConns = 2
	pcfg.ConnConfig.RuntimeParams["application_name"] = "smtm-relay-observability"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return pool, nil
}
