// Package config loads the relay's configuration: built-in defaults, then a
// YAML file, then RELAY_* environment variables, each overriding the one
// before.
//
// Loading is strict. An unknown key, a value of the wrong type or a duration
// without a unit is an error that names the key, so a typo never silently
// falls back to a default. Load validates what it decoded and returns every
// problem at once, one line per problem, each starting with the key.
//
// Environment variables: RELAY_ followed by the key path in upper case, with
// "__" between levels and "_" kept inside names: RELAY_DATABASE__URL sets
// database.url, RELAY_DELIVERY__PER_WEBHOOK sets delivery.per_webhook.
// Lists (delivery.retry_schedule) are comma-separated. Webhook endpoints and
// mapping rules cannot be set from the environment.
//
// docs/CONFIG.md describes every key; config/example.yaml sets every key.
package config

import (
	"log/slog"
	"time"

	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/message"
)

// Config is the relay's configuration. A field tagged secret:"true" holds
// a secret (or, for a map, secret values): no error message ever prints its
// value, only its key and what was expected.
type Config struct {
	// Production refuses non-HTTPS webhook URLs.
	Production  bool        `koanf:"production"`
	Log         Log         `koanf:"log"`
	Database    Database    `koanf:"database"`
	Replication Replication `koanf:"replication"`
	Delivery    Delivery    `koanf:"delivery"`
	Retention   Retention   `koanf:"retention"`
	Replay      Replay      `koanf:"replay"`
	Payload     Payload     `koanf:"payload"`
	Mapping     Mapping     `koanf:"mapping"`
	Webhooks    Webhooks    `koanf:"webhooks"`
	// Formats configures the Slack and Teams messages of webhooks whose
	// format is not raw.
	Formats Formats `koanf:"formats"`
	Admin   Admin   `koanf:"admin"`
	Secrets Secrets `koanf:"secrets"`
	// Observability configures the metrics and health endpoints.
	Observability Observability `koanf:"observability"`
	// Runtime tunes Go's garbage collector.
	Runtime Runtime `koanf:"runtime"`

	// envWarnings are RELAY_* variables that Load ignored.
	envWarnings []string
	// source and level are set by Load; see reload.go.
	source *source
	level  *slog.LevelVar
}

// Log configures the relay's own logs.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn or error
	Format string `koanf:"format"` // text or json
}

// Database names the databases the relay connects to.
type Database struct {
	// URL is the platform database, the replication source. Required to run.
	URL string `koanf:"url" secret:"true"`
	// StateURL is the database holding the relay's own tables; empty means URL.
	StateURL string `koanf:"state_url" secret:"true"`
	// Schema is the schema of the relay's own tables.
	Schema string `koanf:"schema"`
}

// StateDatabaseURL returns StateURL, or URL when StateURL is empty.
func (d Database) StateDatabaseURL() string {
	if d.StateURL != "" {
		return d.StateURL
	}
	return d.URL
}

// Replication configures the change feed.
type Replication struct {
	Slot                string        `koanf:"slot"`
	Publication         string        `koanf:"publication"`
	StatusInterval      time.Duration `koanf:"status_interval"`
	ReconnectMaxBackoff time.Duration `koanf:"reconnect_max_backoff"`
	// GroupDelay is the longest that source transactions whose deliveries
	// have all started gather before the relay stores them in one write
	// (cdc.Config.SentGroupDelay). Shorter: smaller, smoother writes that
	// the platform's own commits wait less behind, at a higher CPU cost
	// per event on the database (docs/CONFIG.md).
	GroupDelay time.Duration `koanf:"group_delay"`
	// HeartbeatInterval, when positive, makes the relay write a small
	// logical message into the WAL this often, so a database whose watched
	// tables (and everything else) stay idle still moves the slot. 0 = off.
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval"`
	// RetainedWALWarn is the amount of WAL held by the slot above which the
	// relay logs a warning. 0 = never warn.
	RetainedWALWarn ByteSize `koanf:"retained_wal_warn"`
	// WALCheckInterval is how often the slot's retained WAL is read.
	WALCheckInterval time.Duration `koanf:"wal_check_interval"`
}

// ByteSize is an amount of bytes. In files and the environment it is a
// whole number of bytes or a number with a unit: "512MB", "1GB" (units of
// 1024: kB, MB, GB, TB).
type ByteSize int64

// Delivery configures how webhook requests are sent.
type Delivery struct {
	// Timeout bounds one attempt, until the response headers arrive.
	Timeout time.Duration `koanf:"timeout"`
	// RetrySchedule holds the delay after each failed attempt; its length
	// is the number of retries.
	RetrySchedule []time.Duration `koanf:"retry_schedule"`
	// Workers is the number of attempts in flight across all webhooks.
	Workers int `koanf:"workers"`
	// PerWebhook is the number of attempts in flight for one webhook.
	PerWebhook int `koanf:"per_webhook"`
	// PollInterval is how often due retries are looked for.
	PollInterval time.Duration `koanf:"poll_interval"`
	// ResponseSnippetBytes is how much of a response body is recorded.
	ResponseSnippetBytes int `koanf:"response_snippet_bytes"`
	// DrainTimeout is how long in-flight attempts may finish on shutdown.
	DrainTimeout time.Duration `koanf:"drain_timeout"`
	UserAgent    string        `koanf:"user_agent"`
	// AllowNetworks opens internal destinations (CIDR, address or host
	// name) that the relay otherwise refuses to call: loopback, private,
	// link-local, CGNAT, unique-local, multicast.
	AllowNetworks []string `koanf:"allow_networks"`
}

// Admin configures the admin HTTP API.
type Admin struct {
	// Listen is the API's address, e.g. "127.0.0.1:8081"; "" turns it off.
	Listen string `koanf:"listen"`
	// Tokens are the bearer tokens the API accepts.
	Tokens []AdminToken `koanf:"tokens"`
	// MaxWebhooksPerCompany is the most webhooks a company may have; the
	// API refuses to create one more. 0 = no limit.
	MaxWebhooksPerCompany int `koanf:"max_webhooks_per_company"`
	// MaxConcurrentTests is the most test events of one company in flight
	// at once; the API answers 429 to one more. 0 = no limit.
	MaxConcurrentTests int `koanf:"max_concurrent_tests"`
}

// AdminToken is one bearer token, known only by its SHA-256.
type AdminToken struct {
	// Name says whose token it is; it is written to the audit log.
	Name string `koanf:"name"`
	// CompanyID is the one company the token may see and change.
	CompanyID int64 `koanf:"company_id"`
	// Operator tokens see and change every company (CompanyID must be 0).
	Operator bool `koanf:"operator"`
	// TokenSHA256 is the hex SHA-256 of the token.
	TokenSHA256 string `koanf:"token_sha256" secret:"true"`
}

// Secrets configures encryption of webhook secrets and header values at
// rest.
type Secrets struct {
	// Key is a base64 AES-256 key (32 bytes); "" stores secrets in plain
	// text.
	Key string `koanf:"key" secret:"true"`
	// PreviousKeys still decrypt secrets sealed before a key rotation.
	PreviousKeys []string `koanf:"previous_keys" secret:"true"`
}

// Retention says how long finished deliveries are kept.
type Retention struct {
	Delivered time.Duration `koanf:"delivered"`
	Failed    time.Duration `koanf:"failed"`
	Interval  time.Duration `koanf:"interval"`
}

// Replay paces the replays admins ask for (the stored events of a time
// range delivered again to one webhook).
type Replay struct {
	// Rate is the most events per second one replay sends again.
	Rate int `koanf:"rate"`
	// PerWebhook is the most deliveries of one replay pending or retrying
	// at once: the webhook's live deliveries never queue behind more.
	PerWebhook int `koanf:"per_webhook"`
}

// Payload configures the JSON sent to webhooks.
type Payload struct {
	// DefaultTimeZone is the IANA zone for timestamps of companies that
	// have none.
	DefaultTimeZone string `koanf:"default_time_zone"`
}

// Mapping adds rules to, or replaces, the built-in rules.
type Mapping struct {
	ReplaceDefaults bool          `koanf:"replace_defaults"`
	Rules           []mapper.Rule `koanf:"rules"`
}

// Webhooks says where webhooks are defined.
type Webhooks struct {
	// Source is "file" (Endpoints below) or "table" (the relay's webhooks
	// table, edited through the admin API).
	Source string `koanf:"source"`
	// ReloadInterval is how often the table source is looked over for
	// webhooks that cannot work, ended rotations and deleted webhooks'
	// deliveries; edits take effect without it.
	ReloadInterval time.Duration `koanf:"reload_interval"`
	// Endpoints are the webhooks when Source is "file".
	Endpoints []Webhook `koanf:"endpoints"`
}

// Formats configures the messages sent to webhooks whose payload format is
// slack or teams (see package message).
type Formats struct {
	// PlatformURL is the platform's base URL; messages link to the event's
	// page below it. "" shows no links.
	PlatformURL string `koanf:"platform_url"`
	// LinkText labels the link.
	LinkText string `koanf:"link_text"`
	// Templates override the default summary and link templates, one
	// entry per event type.
	Templates []message.Template `koanf:"templates"`
}

// MessageOptions are the options of the renderer that f configures.
func (f Formats) MessageOptions() message.Options {
	return message.Options{PlatformURL: f.PlatformURL, Templates: f.Templates, LinkText: f.LinkText}
}

// Observability configures the HTTP listener for /metrics, /healthz and
// /readyz. Traces and OTLP metrics are configured by the standard OTEL_*
// environment variables, not here.
type Observability struct {
	// Listen is the host:port of the listener; "" serves nothing.
	Listen string `koanf:"listen"`
	// Pprof also serves Go's runtime profiles under /debug/pprof/ on Listen.
	Pprof bool `koanf:"pprof"`
	// MetricHosts is how many receiver hosts the HTTP client metrics name
	// (server.address); the requests to any further host are counted under
	// "other". 0 names none.
	MetricHosts int `koanf:"metric_hosts"`
}

// Runtime tunes Go's garbage collector for the relay's process. GOGC and
// GOMEMLIMIT in the environment, which Go reads itself, take precedence.
type Runtime struct {
	// GCPercent is GOGC: how far the heap grows past what the last
	// collection kept before the next one starts; -1 turns the percentage
	// off, leaving MemoryLimit alone to start collections.
	GCPercent int `koanf:"gc_percent"`
	// MemoryLimit is GOMEMLIMIT: a soft limit on the memory of Go's runtime;
	// as the heap nears it, collections start sooner. 0 = no limit.
	MemoryLimit ByteSize `koanf:"memory_limit"`
	// OneThreadWhenQuiet runs the relay's Go code on one thread
	// (GOMAXPROCS=1) while the relay uses under half a core, and on Go's
	// default number again as soon as its goroutines queue for that one
	// thread (internal/procs). It is off when GOMAXPROCS is set in the
	// environment.
	OneThreadWhenQuiet bool `koanf:"one_thread_when_quiet"`
	// SysmonTicking starts `relay run` again at once, in place of itself,
	// with GODEBUG=schedtrace=2147483647, which keeps Go's system monitor
	// thread on its 10 ms tick instead of a deep sleep that nearly every
	// system call of a quiet relay interrupts (internal/procs). Go then
	// prints one line about its scheduler to stderr every 24.8 days of the
	// host's uptime. It is off when GODEBUG sets schedtrace.
	SysmonTicking bool `koanf:"sysmon_ticking"`
}

// Webhook sources.
const (
	SourceFile  = "file"
	SourceTable = "table"
)

// Webhook is one registered endpoint.
type Webhook struct {
	CompanyID   int64             `koanf:"company_id"`
	Name        string            `koanf:"name"`
	URL         string            `koanf:"url"`
	Events      []string          `koanf:"events"`
	Secret      string            `koanf:"secret" secret:"true"`
	Headers     map[string]string `koanf:"headers" secret:"true"`
	Description string            `koanf:"description"`
	// Format is the payload format: raw (the default, also for ""),
	// slack or teams.
	Format string `koanf:"format"`
	// Filter is a condition over the event (mapper.CompileFilter) that an
	// event must meet to be sent; empty sends every subscribed event.
	Filter string `koanf:"filter"`
	// Active is true unless the file says "active: false".
	Active bool `koanf:"active"`
	// StandardWebhooks adds the Standard Webhooks headers; it needs a
	// secret.
	StandardWebhooks bool `koanf:"standard_webhooks"`
	// SecretOverlap is how long a secret that an edit of the file replaces
	// keeps signing beside the new one (0: not at all), at most
	// MaxSecretOverlap. Load makes it DefaultSecretOverlap when the file
	// does not say; a Webhook built in Go has 0 unless set.
	SecretOverlap time.Duration `koanf:"secret_overlap"`
}

// Bounds of webhooks.endpoints[].secret_overlap, as for a rotation through
// the admin API.
const (
	DefaultSecretOverlap = 24 * time.Hour
	MaxSecretOverlap     = 7 * 24 * time.Hour
)

// Default returns the configuration used when neither the file nor the
// environment sets a key.
func Default() *Config {
	return &Config{
		Log: Log{Level: "info", Format: "text"},
		Database: Database{
			Schema: "relay",
		},
		Replication: Replication{
			Slot:                "smtm_relay",
			Publication:         "smtm_relay",
			StatusInterval:      10 * time.Second,
			ReconnectMaxBackoff: 5 * time.Second,
			GroupDelay:          100 * time.Millisecond,
			RetainedWALWarn:     1 << 30,
			WALCheckInterval:    time.Minute,
		},
		Delivery: Delivery{
			Timeout: 30 * time.Second,
			RetrySchedule: []time.Duration{
				1 * time.Second, 5 * time.Second, 25 * time.Second, 125 * time.Second, 625 * time.Second,
			},
			Workers:              128,
			PerWebhook:           16,
			PollInterval:         500 * time.Millisecond,
			ResponseSnippetBytes: 1024,
			DrainTimeout:         15 * time.Second,
			UserAgent:            "SmartMaintenance/1.0",
			AllowNetworks:        []string{},
		},
		Retention: Retention{
			Delivered: 7 * 24 * time.Hour,
			Failed:    30 * 24 * time.Hour,
			Interval:  time.Hour,
		},
		Replay:  Replay{Rate: 100, PerWebhook: 8},
		Payload: Payload{DefaultTimeZone: "UTC"},
		Mapping: Mapping{Rules: []mapper.Rule{}},
		Webhooks: Webhooks{
			Source:         SourceFile,
			ReloadInterval: time.Second,
			Endpoints:      []Webhook{},
		},
		Formats: Formats{LinkText: message.DefaultLinkText, Templates: []message.Template{}},
		Admin:   Admin{Tokens: []AdminToken{}, MaxWebhooksPerCompany: 100, MaxConcurrentTests: 4},
		Secrets: Secrets{PreviousKeys: []string{}},
		Runtime: Runtime{GCPercent: 200, MemoryLimit: 64 << 20, OneThreadWhenQuiet: true, SysmonTicking: true},
		Observability: Observability{
			MetricHosts: 20,
		},
	}
}
