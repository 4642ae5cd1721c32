package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/store"
)

// ignoreConfigFile turns off watching the config file, leaving SIGHUP as
// the only reload trigger; tests of SIGHUP set it.
var ignoreConfigFile atomic.Bool

// reloader applies a changed configuration to the running relay: admin
// tokens, file webhooks and the log level (config.KeyAdminTokens,
// config.KeyWebhookEndpoints, config.KeyLogLevel). Every other key is read
// once at start; a change of one is logged as needing a restart.
type reloader struct {
	// running is the configuration in effect: the start configuration
	// with the reloadable keys as last applied.
	running *config.Config
	events  []string // the mapper's event types, for webhooks' events
	cat     Catalogue
	st      *store.Store
	admin   *admin.Server // nil when the admin API is off
	log     *slog.Logger
}

// run reloads on SIGHUP and, when the configuration came from a file, on
// changes of the file, until ctx is done.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal, fileChanged <-chan struct{}) {
	if fileChanged != nil {
		r.log.Info("config: reloaded on SIGHUP and when the file changes", "file", r.running.Path())
	} else {
		r.log.Info("config: reloaded on SIGHUP")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, "SIGHUP")
		case <-fileChanged:
			r.reload(ctx, "file changed")
		}
	}
}

// reload reads the configuration again and applies what can change at run
// time. A configuration that does not load or validate changes nothing.
func (r *reloader) reload(ctx context.Context, trigger string) {
	next, err := r.running.Reload()
	if err == nil {
		err = startable(r.running, next)
	}
	if err == nil {
		// Webhooks may only subscribe to events of the running rules.
		err = next.CheckEvents(r.events)
	}
	if err == nil {
		// Their filters may only read data fields of the running rules.
		err = next.CheckFilterFields(dataFields(mapper.Merge(mapper.DefaultRules(), r.running.Mapping.Rules, r.running.Mapping.ReplaceDefaults)))
	}
	if err != nil {
		r.log.Error("config reload failed, keeping the last good config: "+oneLine(err), "trigger", trigger)
		return
	}
	ch := config.Compare(r.running, next)
	applied := *r.running
	applied.Admin.Tokens = next.Admin.Tokens
	applied.Log.Level = next.Log.Level
	if ch.Webhooks() && r.running.Webhooks.Source != config.SourceFile {
		// Endpoints in the file only count once webhooks.source is file,
		// which changes at a restart.
		ch.WebhooksAdded, ch.WebhooksRemoved, ch.WebhooksChanged = nil, nil, nil
		ch.Restart = append(ch.Restart, config.KeyWebhookEndpoints)
	}
	if ch.Webhooks() {
		// Synced under the running webhooks.source.
		sync := applied
		sync.Webhooks.Endpoints = next.Webhooks.Endpoints
		if err := syncWebhooks(ctx, &sync, r.st, r.cat, r.log); err != nil {
			// The sync is one transaction: the previous webhooks stay, and
			// the next reload tries again.
			r.log.Error("config reload: webhooks.endpoints not applied, keeping the previous webhooks: "+oneLine(err), "trigger", trigger)
			ch.WebhooksAdded, ch.WebhooksRemoved, ch.WebhooksChanged = nil, nil, nil
		} else {
			applied.Webhooks.Endpoints = next.Webhooks.Endpoints
		}
	}
	if ch.Tokens() && r.admin != nil {
		r.admin.SetTokens(applied.Admin.Tokens)
	}
	applied.ApplyLogLevel()
	for _, w := range next.Warnings() {
		if !slices.Contains(r.running.Warnings(), w) {
			r.log.Warn("config: " + w)
		}
	}
	r.running = &applied
	applies := ch.Applied()
	if applies == "no changes" && len(ch.Restart) > 0 {
		applies = "nothing it can apply while running"
	}
	r.log.Info("config reloaded: "+applies, "trigger", trigger)
	if len(ch.Restart) > 0 {
		them := "them"
		if len(ch.Restart) == 1 {
			them = "it"
		}
		r.log.Warn(fmt.Sprintf("config: %s changed; a restart is needed to apply %s", strings.Join(ch.Restart, ", "), them))
	}
}

// startable refuses a reloaded config that the relay could not start with
// or that would leave the running relay unusable, though Load takes it: a
// file emptied or cut short by an editor or a config tool still writing
// it. Load checks each file as it is, and in it admin.listen, a key read
// only at start, may be gone with the tokens: the running API would then
// answer 401 to everyone.
func startable(running, next *config.Config) error {
	var problems []string
	if next.Database.URL == "" {
		problems = append(problems, "database.url is required (or RELAY_DATABASE__URL); the relay could not start with this file")
	}
	if running.Admin.Listen != "" && len(next.Admin.Tokens) == 0 {
		problems = append(problems, "admin.tokens: the admin API is running (admin.listen) and no token is left; nobody could use it")
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "\n"))
}

// oneLine folds a multi-line error (config problems come one per line)
// into one line.
func oneLine(err error) string {
	var parts []string
	for p := range strings.SplitSeq(err.Error(), "\n") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

// startReloader runs r, and the watcher of the config file when there is
// one, in g.
func startReloader(g *errgroup.Group, ctx context.Context, hup <-chan os.Signal, r *reloader) {
	var fileChanged <-chan struct{}
	if w := r.running.WatchFile(0); w != nil && !ignoreConfigFile.Load() {
		fileChanged = w.Changed()
		g.Go(func() error {
			// Not fatal: SIGHUP still reloads.
			if err := w.Run(ctx); err != nil {
				r.log.Warn("config: the file is not watched; send SIGHUP to reload it", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		r.run(ctx, hup, fileChanged)
		return nil
	})
}
