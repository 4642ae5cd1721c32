package config

import (
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
)

// source is where Load read a configuration from, so that the running
// relay can read it again.
type source struct {
	path    string
	environ []string
	// state is the file's state (fileState) right after it was read.
	state string
}

// remember records where c was read from and gives it the level variable
// that loggers built from it follow.
func (c *Config) remember(path string, environ []string) {
	c.source = &source{path: path, environ: slices.Clone(environ)}
	if path != "" {
		c.source.state = fileState(path)
	}
	c.level = new(slog.LevelVar)
	_ = c.level.UnmarshalText([]byte(c.Log.Level)) // Validate checked it
}

// Path returns the file Load read c from; "" if none, or if c was not
// loaded by Load.
func (c *Config) Path() string {
	if c.source == nil {
		return ""
	}
	return c.source.path
}

// Reloadable reports whether c came from Load, so that Reload can read it
// again.
func (c *Config) Reloadable() bool { return c.source != nil }

// Reload reads the configuration again from the same file and the same
// environment as c, with Load's checks. The result shares c's log level
// variable; ApplyLogLevel sets it.
func (c *Config) Reload() (*Config, error) {
	if c.source == nil {
		return nil, fmt.Errorf("the configuration was not loaded from a file and the environment")
	}
	next, err := Load(c.source.path, c.source.environ)
	if err != nil {
		return nil, err
	}
	next.level = c.level
	return next, nil
}

// LogLevel returns the level a logger built from c should follow. For a
// configuration from Load it is a variable that a reload changes (see
// ApplyLogLevel); otherwise it is fixed at log.level.
func (c *Config) LogLevel() slog.Leveler {
	if c.level != nil {
		return c.level
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Log.Level))
	return l
}

// ApplyLogLevel sets the level that loggers built from c follow to
// c.Log.Level. It does nothing for a configuration not from Load.
func (c *Config) ApplyLogLevel() {
	if c.level != nil {
		_ = c.level.UnmarshalText([]byte(c.Log.Level))
	}
}

// Keys that a running relay applies without a restart. Every other key
// is read once, at start.
const (
	KeyAdminTokens      = "admin.tokens"
	KeyWebhookEndpoints = "webhooks.endpoints"
	KeyLogLevel         = "log.level"
)

// Changes says how one configuration differs from another, naming keys,
// tokens and webhooks but never a value that could be a secret.
type Changes struct {
	// Admin tokens by name: new names, names gone, and names whose hash,
	// company or operator flag changed.
	TokensAdded, TokensRemoved, TokensChanged []string
	// File webhooks as `company N "name"`.
	WebhooksAdded, WebhooksRemoved, WebhooksChanged []string
	// LogLevel is "old -> new" when log.level changed.
	LogLevel string
	// Restart lists the other keys that changed; they apply only after a
	// restart.
	Restart []string
}

// Tokens reports whether admin.tokens changed.
func (ch Changes) Tokens() bool {
	return len(ch.TokensAdded)+len(ch.TokensRemoved)+len(ch.TokensChanged) > 0
}

// Webhooks reports whether webhooks.endpoints changed.
func (ch Changes) Webhooks() bool {
	return len(ch.WebhooksAdded)+len(ch.WebhooksRemoved)+len(ch.WebhooksChanged) > 0
}

// Empty reports whether nothing changed.
func (ch Changes) Empty() bool {
	return !ch.Tokens() && !ch.Webhooks() && ch.LogLevel == "" && len(ch.Restart) == 0
}

// Applied describes the changes a running relay applies, e.g.
// "admin.tokens: 1 removed (ops-laptop), 0 added; log.level: info -> debug",
// or "no changes".
func (ch Changes) Applied() string {
	var parts []string
	if ch.Tokens() {
		parts = append(parts, KeyAdminTokens+": "+counted(ch.TokensRemoved, ch.TokensAdded, ch.TokensChanged))
	}
	if ch.Webhooks() {
		parts = append(parts, KeyWebhookEndpoints+": "+counted(ch.WebhooksRemoved, ch.WebhooksAdded, ch.WebhooksChanged))
	}
	if ch.LogLevel != "" {
		parts = append(parts, KeyLogLevel+": "+ch.LogLevel)
	}
	if len(parts) == 0 {
		return "no changes"
	}
	return strings.Join(parts, "; ")
}

func counted(removed, added, changed []string) string {
	list := func(n []string) string {
		if len(n) == 0 {
			return ""
		}
		return " (" + strings.Join(n, ", ") + ")"
	}
	s := fmt.Sprintf("%d removed%s, %d added%s", len(removed), list(removed), len(added), list(added))
	if len(changed) > 0 {
		s += fmt.Sprintf(", %d changed%s", len(changed), list(changed))
	}
	return s
}

// Compare returns the changes from old to next.
func Compare(old, next *Config) Changes {
	var ch Changes
	ch.TokensAdded, ch.TokensRemoved, ch.TokensChanged = diffByName(old.Admin.Tokens, next.Admin.Tokens,
		func(t AdminToken) string { return t.Name })
	ch.WebhooksAdded, ch.WebhooksRemoved, ch.WebhooksChanged = diffByName(old.Webhooks.Endpoints, next.Webhooks.Endpoints,
		func(w Webhook) string { return fmt.Sprintf("company %d %q", w.CompanyID, w.Name) })
	if old.Log.Level != next.Log.Level {
		ch.LogLevel = old.Log.Level + " -> " + next.Log.Level
	}
	reloadable := map[string]bool{KeyAdminTokens: true, KeyWebhookEndpoints: true, KeyLogLevel: true}
	changedKeys(reflect.ValueOf(*old), reflect.ValueOf(*next), "", reloadable, &ch.Restart)
	return ch
}

// diffByName pairs the items of two lists by name.
func diffByName[T any](old, next []T, name func(T) string) (added, removed, changed []string) {
	before := make(map[string]T, len(old))
	for _, o := range old {
		before[name(o)] = o
	}
	seen := make(map[string]bool, len(next))
	for _, n := range next {
		k := name(n)
		seen[k] = true
		o, ok := before[k]
		switch {
		case !ok:
			added = append(added, k)
		case !reflect.DeepEqual(o, n):
			changed = append(changed, k)
		}
	}
	for _, o := range old {
		if k := name(o); !seen[k] {
			removed = append(removed, k)
		}
	}
	return added, removed, changed
}

// changedKeys appends the keys whose values differ, descending into
// sections; keys added to Config later are covered without a change here.
func changedKeys(old, next reflect.Value, path string, skip map[string]bool, out *[]string) {
	t := old.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if !f.IsExported() || name == "" {
			continue
		}
		key := joinKey(path, name)
		if skip[key] {
			continue
		}
		a, b := old.Field(i), next.Field(i)
		if f.Type.Kind() == reflect.Struct {
			changedKeys(a, b, key, skip, out)
			continue
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, key)
		}
	}
}
