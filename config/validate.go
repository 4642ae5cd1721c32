package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/smartmaintenance/relay/egress"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/secrets"
)

// Limits checked by Validate.
const (
	// MinSecretBytes is the shortest webhook secret accepted.
	MinSecretBytes = 16
	// MaxResponseSnippetBytes bounds delivery.response_snippet_bytes.
	MaxResponseSnippetBytes = 64 << 10

	// Bounds of a webhook's fields, wherever it is defined. They keep one
	// tenant's webhook small in the relay's tables, logs and an operator's
	// terminal; each is far above what a real webhook needs.
	MaxWebhookNameChars  = 200
	MaxDescriptionChars  = 2000
	MaxSecretBytes       = 1024
	MaxURLBytes          = 2048
	MaxEvents            = 100
	MaxHeaders           = 50
	MaxHeaderNameBytes   = 256
	MaxHeaderValueBytes  = 8192
	MaxHeadersTotalBytes = 32 << 10
)

var (
	identifierRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	slotRE       = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
)

// reservedHeaders are set by the relay or by the HTTP transport; a webhook
// may not set them. Any header starting with "X-SMTM-" is reserved too.
var reservedHeaders = []string{
	"Connection",
	"Content-Encoding",
	"Content-Length",
	"Content-Type",
	"Host",
	"Traceparent", // W3C trace context: the relay's own trace
	"Tracestate",
	"Transfer-Encoding",
	"User-Agent",
}

// Validate checks every key and returns all problems joined, one line each,
// each starting with the key it is about, in the order of the sections.
func (c *Config) Validate() error {
	var p problems
	c.validateProcess(&p)
	c.validateDatabase(&p)
	c.validateReplication(&p)
	c.validateDelivery(&p)
	c.validateRetention(&p)
	c.validateReplay(&p)
	c.validatePayload(&p)
	c.validateRules(&p)
	c.validateWebhooks(&p)
	c.validateFormats(&p)
	c.validateAdmin(&p)
	c.validateSecrets(&p)
	return p.err()
}

// validateProcess checks the log, observability and runtime sections.
func (c *Config) validateProcess(p *problems) {
	oneOf(p, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(p, "log.format", c.Log.Format, "text", "json")

	checkListen(p, "observability.listen", c.Observability.Listen)
	if c.Observability.MetricHosts < 0 {
		p.add("observability.metric_hosts", "must be >= 0 (0 names no host), got %d", c.Observability.MetricHosts)
	}
	switch {
	case c.Runtime.GCPercent == -1 && c.Runtime.MemoryLimit == 0:
		p.add("runtime.gc_percent", "-1 (off) needs runtime.memory_limit, or the heap grows without bound")
	case c.Runtime.GCPercent != -1 && c.Runtime.GCPercent < 10:
		p.add("runtime.gc_percent", "%d is below 10 (collections would take most of the CPU); -1 turns it off", c.Runtime.GCPercent)
	}
	if c.Runtime.MemoryLimit != 0 && c.Runtime.MemoryLimit < 32<<20 {
		p.add("runtime.memory_limit", "%d bytes is below 32MB, less than the relay needs to work; 0 = no limit", c.Runtime.MemoryLimit)
	}
}

// validateDatabase checks the database section.
func (c *Config) validateDatabase(p *problems) {
	checkDatabaseURL(p, "database.url", c.Database.URL)
	checkDatabaseURL(p, "database.state_url", c.Database.StateURL)
	if !identifierRE.MatchString(c.Database.Schema) {
		p.add("database.schema", "%q is not a valid identifier (lower-case letters, digits and _, not starting with a digit, at most 63)", c.Database.Schema)
	}
}

// maxGroupDelay bounds replication.group_delay: stored events, and what
// the admin API shows of them, lag the deliveries by up to that long.
const maxGroupDelay = time.Second

// validateReplication checks the replication section.
func (c *Config) validateReplication(p *problems) {
	if !slotRE.MatchString(c.Replication.Slot) {
		p.add("replication.slot", "%q is not a valid slot name (1 to 63 of a-z, 0-9 and _)", c.Replication.Slot)
	}
	if !identifierRE.MatchString(c.Replication.Publication) {
		p.add("replication.publication", "%q is not a valid identifier (lower-case letters, digits and _, not starting with a digit, at most 63)", c.Replication.Publication)
	}
	positive(p, "replication.status_interval", c.Replication.StatusInterval)
	positive(p, "replication.reconnect_max_backoff", c.Replication.ReconnectMaxBackoff)
	positive(p, "replication.wal_check_interval", c.Replication.WALCheckInterval)
	if d := c.Replication.GroupDelay; d < time.Millisecond || d > maxGroupDelay {
		p.add("replication.group_delay", "must be between 1ms and %s, got %s", maxGroupDelay, d)
	}
	if c.Replication.HeartbeatInterval < 0 {
		p.add("replication.heartbeat_interval", "must be 0 (off) or positive, got %s", c.Replication.HeartbeatInterval)
	}
}

// validateDelivery checks the delivery section.
func (c *Config) validateDelivery(p *problems) {
	d := c.Delivery
	positive(p, "delivery.timeout", d.Timeout)
	for i, delay := range d.RetrySchedule {
		positive(p, fmt.Sprintf("delivery.retry_schedule[%d]", i), delay)
	}
	if d.Workers <= 0 {
		p.add("delivery.workers", "must be > 0, got %d", d.Workers)
	}
	switch {
	case d.PerWebhook <= 0:
		p.add("delivery.per_webhook", "must be > 0, got %d", d.PerWebhook)
	case d.Workers > 0 && d.PerWebhook > d.Workers:
		p.add("delivery.per_webhook", "%d is more than delivery.workers (%d)", d.PerWebhook, d.Workers)
	}
	positive(p, "delivery.poll_interval", d.PollInterval)
	if d.ResponseSnippetBytes < 0 || d.ResponseSnippetBytes > MaxResponseSnippetBytes {
		p.add("delivery.response_snippet_bytes", "must be between 0 and %d, got %d", MaxResponseSnippetBytes, d.ResponseSnippetBytes)
	}
	if d.DrainTimeout < 0 {
		p.add("delivery.drain_timeout", "must be >= 0, got %s", d.DrainTimeout)
	}
	switch {
	case strings.TrimSpace(d.UserAgent) == "":
		p.add("delivery.user_agent", "required")
	case !validHeaderValue(d.UserAgent):
		p.add("delivery.user_agent", "contains control characters")
	}

	for i, a := range d.AllowNetworks {
		if err := egress.ValidEntry(strings.TrimSpace(a)); err != nil {
			p.add(fmt.Sprintf("delivery.allow_networks[%d]", i), "%v", err)
		}
	}
}

// validateRetention checks the retention section.
func (c *Config) validateRetention(p *problems) {
	r := c.Retention
	positive(p, "retention.delivered", r.Delivered)
	positive(p, "retention.failed", r.Failed)
	if r.Delivered > 0 && r.Failed > 0 && r.Failed < r.Delivered {
		p.add("retention.failed", "%s is shorter than retention.delivered (%s); failed deliveries are the ones worth keeping", r.Failed, r.Delivered)
	}
	positive(p, "retention.interval", r.Interval)
}

// MaxReplayRate bounds replay.rate: a replay faster than that is a
// flood, not a catch-up.
const MaxReplayRate = 10000

// validateReplay checks the replay section.
func (c *Config) validateReplay(p *problems) {
	if r := c.Replay.Rate; r < 1 || r > MaxReplayRate {
		p.add("replay.rate", "must be between 1 and %d events a second, got %d", MaxReplayRate, r)
	}
	if c.Replay.PerWebhook < 1 {
		p.add("replay.per_webhook", "must be > 0, got %d", c.Replay.PerWebhook)
	}
}

// validatePayload checks the payload section.
func (c *Config) validatePayload(p *problems) {
	switch tz := c.Payload.DefaultTimeZone; {
	case tz == "":
		p.add("payload.default_time_zone", "required (an IANA name such as \"UTC\" or \"Asia/Jakarta\")")
	case tz == "Local":
		p.add("payload.default_time_zone", "\"Local\" depends on the host; use an IANA name such as \"Asia/Jakarta\"")
	default:
		if _, err := time.LoadLocation(tz); err != nil {
			p.add("payload.default_time_zone", "%q is not a known IANA time zone", tz)
		}
	}
}

// validateSecrets checks the secrets section.
func (c *Config) validateSecrets(p *problems) {
	if c.Secrets.Key != "" {
		if _, err := secrets.ParseKey(c.Secrets.Key); err != nil {
			p.add("secrets.key", "%v", err)
		}
	}
	for i, k := range c.Secrets.PreviousKeys {
		if _, err := secrets.ParseKey(k); err != nil {
			p.add(fmt.Sprintf("secrets.previous_keys[%d]", i), "%v", err)
		}
	}
	if c.Secrets.Key == "" && len(c.Secrets.PreviousKeys) > 0 {
		p.add("secrets.previous_keys", "set without secrets.key; previous keys only decrypt, the current key encrypts")
	}
}

var sha256HexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (c *Config) validateAdmin(p *problems) {
	a := c.Admin
	if a.Listen != "" {
		if _, _, err := net.SplitHostPort(a.Listen); err != nil {
			p.add("admin.listen", "%q is not host:port (e.g. \"127.0.0.1:8081\" or \":8081\")", a.Listen)
		}
		if len(a.Tokens) == 0 {
			p.add("admin.tokens", "admin.listen is set but no token is configured; nobody could use the API")
		}
	}
	if a.MaxWebhooksPerCompany < 0 {
		p.add("admin.max_webhooks_per_company", "must be >= 0 (0 = no limit), got %d", a.MaxWebhooksPerCompany)
	}
	if a.MaxConcurrentTests < 0 {
		p.add("admin.max_concurrent_tests", "must be >= 0 (0 = no limit), got %d", a.MaxConcurrentTests)
	}
	names := map[string]int{}
	hashes := map[string]int{}
	for i, t := range a.Tokens {
		key := fmt.Sprintf("admin.tokens[%d]", i)
		name := strings.TrimSpace(t.Name)
		if name == "" {
			p.add(key+".name", "required (it names who acted in the audit log)")
		} else if first, dup := names[name]; dup {
			p.add(key+".name", "%q is already used by admin.tokens[%d]", name, first)
		} else {
			names[name] = i
		}
		switch {
		case t.Operator && t.CompanyID != 0:
			p.add(key+".company_id", "must be absent for an operator token (operators see every company)")
		case !t.Operator && t.CompanyID <= 0:
			p.add(key+".company_id", "must be > 0 (the company the token may manage), or set operator: true")
		}
		h := strings.ToLower(strings.TrimSpace(t.TokenSHA256))
		switch {
		case !sha256HexRE.MatchString(h):
			p.add(key+".token_sha256", "must be 64 hex digits, the SHA-256 of the token (relay token prints a new token and its hash)")
		default:
			if first, dup := hashes[h]; dup {
				p.add(key+".token_sha256", "same token as admin.tokens[%d]", first)
			}
			hashes[h] = i
		}
	}
}

func (c *Config) validateRules(p *problems) {
	for i, r := range c.Mapping.Rules {
		key := fmt.Sprintf("mapping.rules[%d]", i)
		before := len(*p)
		if strings.TrimSpace(r.Event) == "" {
			p.add(key+".event", "required")
		}
		if strings.TrimSpace(r.Table) == "" {
			p.add(key+".table", "required")
		}
		seen := map[string]bool{}
		for j, op := range r.On {
			switch {
			case op != "insert" && op != "update" && op != "delete":
				p.add(fmt.Sprintf("%s.on[%d]", key, j), "%q is not one of insert, update, delete", op)
			case seen[op]:
				p.add(fmt.Sprintf("%s.on[%d]", key, j), "%q is listed twice", op)
			}
			seen[op] = true
		}
		fields := map[string]bool{}
		for j, entry := range r.Data {
			k := fmt.Sprintf("%s.data[%d]", key, j)
			if len(entry) != 1 {
				p.add(k, "want exactly one field (name: expression), got %d; write each field as its own list item", len(entry))
				continue
			}
			for name, expr := range entry {
				switch {
				case strings.TrimSpace(name) == "":
					p.add(k, "empty field name")
				case fields[name]:
					p.add(k, "field %q is listed twice", name)
				case strings.TrimSpace(expr) == "":
					p.add(k, "field %q has no expression", name)
				}
				fields[name] = true
			}
		}
		if len(*p) == before {
			checkRule(p, key, r)
		}
	}
}

// checkRule compiles a rule that passed the checks above, so that a table
// name that cannot be a table, an expression that does not compile and a
// when that cannot be true or false are reported under the rule's key, by
// Load and `relay check`, before the relay starts.
func checkRule(p *problems, key string, r mapper.Rule) {
	_, err := mapper.New([]mapper.Rule{r}, mapper.Options{})
	var re *mapper.RuleError
	switch {
	case err == nil:
	case errors.As(err, &re):
		p.add(key+"."+re.Field, "%v", re.Err)
	default:
		p.add(key, "%v", err)
	}
}

func (c *Config) validateWebhooks(p *problems) {
	w := c.Webhooks
	oneOf(p, "webhooks.source", w.Source, SourceFile, SourceTable)
	positive(p, "webhooks.reload_interval", w.ReloadInterval)
	if w.Source == SourceTable && len(w.Endpoints) > 0 {
		p.add("webhooks.endpoints", "only allowed with webhooks.source: file; with source: table, webhooks are managed in the relay's webhooks table")
	}

	type companyName struct {
		company int64
		name    string
	}
	names := map[companyName]int{}
	for i, e := range w.Endpoints {
		key := fmt.Sprintf("webhooks.endpoints[%d]", i)
		for _, problem := range CheckWebhook(e, c.Production) {
			*p = append(*p, key+"."+problem)
		}
		name := strings.TrimSpace(e.Name)
		if name == "" {
			continue
		}
		if first, dup := names[companyName{e.CompanyID, name}]; dup {
			p.add(key+".name", "%q is already used by webhooks.endpoints[%d] of company %d", name, first, e.CompanyID)
		} else {
			names[companyName{e.CompanyID, name}] = i
		}
	}
}

// CheckWebhook checks one webhook, wherever it is defined, by the rules
// Validate applies to webhooks.endpoints (except that names are unique per
// company, which needs the other webhooks). production refuses plain HTTP.
// Each problem starts with the field it is about, relative to the webhook,
// e.g. `url: "ftp://x" is not an http(s) URL`.
func CheckWebhook(w Webhook, production bool) []string {
	var p problems
	if w.CompanyID <= 0 {
		p.add("company_id", "must be > 0, got %d", w.CompanyID)
	}
	if strings.TrimSpace(w.Name) == "" {
		p.add("name", "required")
	} else if problem := checkText(w.Name, MaxWebhookNameChars); problem != "" {
		p.add("name", "%s", problem)
	} else if problem := checkNameRunes(w.Name); problem != "" {
		p.add("name", "%s", problem)
	}
	if problem := checkText(w.Description, MaxDescriptionChars); problem != "" {
		p.add("description", "%s", problem)
	}

	if u, problem := checkWebhookURL(w.URL); problem != "" {
		p.add("url", "%s", problem)
	} else if production && u.Scheme != "https" {
		p.add("url", "%q is not HTTPS; production: true refuses plain HTTP because payloads may contain personal data", w.URL)
	}

	checkWebhookEvents(&p, w.Events)
	checkWebhookFormat(&p, w.Format)
	checkWebhookFilter(&p, w.Filter)
	checkWebhookSecret(&p, w.Secret)
	checkStandardWebhooks(&p, w)
	checkWebhookHeaders(&p, w.Headers)
	checkSecretOverlap(&p, w.SecretOverlap)
	return p
}

// checkSecretOverlap checks a webhook's secret_overlap: from 0 (none) to
// MaxSecretOverlap, as the admin API allows for a rotation.
func checkSecretOverlap(p *problems, d time.Duration) {
	if d < 0 || d > MaxSecretOverlap {
		p.add("secret_overlap", "%v is out of range; from 0 (none) to %v (7 days)", d, MaxSecretOverlap)
	}
}

// checkWebhookEvents checks a webhook's event types: at least one, at most
// MaxEvents, none empty or listed twice.
func checkWebhookEvents(p *problems, events []string) {
	switch {
	case len(events) == 0:
		p.add("events", "at least one event type is required")
	case len(events) > MaxEvents:
		p.add("events", "%d event types is too many; at most %d", len(events), MaxEvents)
	}
	seen := map[string]bool{}
	for j, ev := range events {
		switch {
		case strings.TrimSpace(ev) == "":
			p.add(fmt.Sprintf("events[%d]", j), "empty event type")
		case seen[ev]:
			p.add(fmt.Sprintf("events[%d]", j), "%q is listed twice", ev)
		}
		seen[ev] = true
	}
}

// MaxFilterChars is the longest webhook filter accepted.
const MaxFilterChars = 2000

// checkWebhookFilter checks a webhook's filter: empty, or a condition that
// compiles. Whether the data fields it reads exist depends on the rules:
// CheckFilterFields checks that, as the admin API does.
func checkWebhookFilter(p *problems, filter string) {
	switch {
	case filter == "":
	case utf8.RuneCountInString(filter) > MaxFilterChars:
		p.add("filter", "%d characters is too long; at most %d", utf8.RuneCountInString(filter), MaxFilterChars)
	default:
		if _, err := mapper.CompileFilter(filter, nil); err != nil {
			p.add("filter", "%v", err)
		}
	}
}

// checkWebhookSecret checks a webhook's signing secret: none, or printable
// UTF-8 text of MinSecretBytes to MaxSecretBytes.
func checkWebhookSecret(p *problems, secret string) {
	// Problems never quote the secret.
	switch {
	case secret == "":
	case len(secret) < MinSecretBytes:
		p.add("secret", "%d bytes is too short; use at least %d (or none)", len(secret), MinSecretBytes)
	case len(secret) > MaxSecretBytes:
		p.add("secret", "%d bytes is too long; at most %d", len(secret), MaxSecretBytes)
	case !utf8.ValidString(secret):
		p.add("secret", "is not valid UTF-8 text")
	case strings.ContainsFunc(secret, unicode.IsControl):
		p.add("secret", "contains control characters (such as NUL or a line break); use printable characters")
	}
}

// checkWebhookHeaders checks a webhook's custom headers: their number and
// total size, and each name and value, in name order.
func checkWebhookHeaders(p *problems, headers map[string]string) {
	if len(headers) > MaxHeaders {
		p.add("headers", "%d headers is too many; at most %d", len(headers), MaxHeaders)
	}
	total := 0
	for h, v := range headers {
		total += len(h) + len(v)
	}
	if total > MaxHeadersTotalBytes {
		p.add("headers", "%d bytes of names and values is too large; at most %d", total, MaxHeadersTotalBytes)
	}
	canonical := map[string]string{}
	for _, h := range slices.Sorted(maps.Keys(headers)) {
		hk := fmt.Sprintf("headers[%s]", h)
		ch := http.CanonicalHeaderKey(h)
		switch {
		case len(h) > MaxHeaderNameBytes:
			hk = fmt.Sprintf("headers[%.40s...]", h)
			p.add(hk, "name of %d bytes is too long; at most %d", len(h), MaxHeaderNameBytes)
		case !validHeaderName(h):
			if strings.ContainsFunc(h, unsafeRune) {
				hk = fmt.Sprintf("headers[%q]", h) // never a raw control character in a problem
			}
			p.add(hk, "%q is not a valid header name (letters, digits and !#$%%&'*+-.^_`|~)", h)
		case slices.Contains(reservedHeaders, ch) || strings.HasPrefix(ch, "X-Smtm-"):
			p.add(hk, "%s is set by the relay and cannot be overridden", ch)
		case canonical[ch] != "":
			p.add(hk, "same header as %q (header names are case-insensitive)", canonical[ch])
		case !validHeaderValue(headers[h]):
			p.add(hk, "value contains control characters (such as a line break)")
		case len(headers[h]) > MaxHeaderValueBytes:
			p.add(hk, "value of %d bytes is too long; at most %d", len(headers[h]), MaxHeaderValueBytes)
		case !utf8.ValidString(headers[h]):
			p.add(hk, "value is not valid UTF-8 text")
		}
		if canonical[ch] == "" {
			canonical[ch] = h
		}
	}
}

// checkWebhookURL returns the parsed URL, or a problem description.
func checkWebhookURL(raw string) (*url.URL, string) {
	if raw == "" {
		return nil, "required"
	}
	if len(raw) > MaxURLBytes {
		return nil, fmt.Sprintf("%d bytes is too long; at most %d", len(raw), MaxURLBytes)
	}
	if problem := checkURLRunes(raw); problem != "" {
		return nil, problem
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" {
		return nil, fmt.Sprintf("%s is not an http(s) URL", shownURL(raw, u, err))
	}
	if u.Hostname() == "" {
		return nil, fmt.Sprintf("%s has no host", shownURL(raw, u, err))
	}
	if u.User != nil {
		return nil, "must not contain a user name or password; send credentials in headers (e.g. Authorization)"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Sprintf("port %q is not a number from 1 to 65535", port)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, "empty port; give a number from 1 to 65535 or leave out the colon"
	}
	if problem := checkHostName(u.Hostname()); problem != "" {
		return nil, problem
	}
	return u, ""
}

// checkURLRunes refuses the characters that make a URL read differently
// from where it points, where it is shown (the Webhooks page, the CLI, a
// log): controls (C0, DEL, C1) and the Unicode bidirectional controls
// (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069), with which
// "https://example.com/\u202egnp.exe" reads as ".../exe.png". A receiver
// that needs such bytes gets them percent-encoded, which reads as what it
// is. It returns the problem, or "".
func checkURLRunes(raw string) string {
	for i, r := range raw {
		var kind string
		switch {
		case unicode.IsControl(r):
			kind = "control character"
		case unicode.Is(unicode.Bidi_Control, r):
			kind = "bidirectional control character"
		}
		if kind != "" {
			return fmt.Sprintf("contains the %s %U at byte %d; percent-encode it (%s) if the receiver needs it",
				kind, r, i, url.PathEscape(string(r)))
		}
	}
	return ""
}

// shownURL is a webhook URL as problems quote it: with the password of its
// user info masked; one that does not parse is not quoted when it may hold
// user info, since where its password ends cannot be told.
func shownURL(raw string, u *url.URL, parseErr error) string {
	switch {
	case parseErr != nil && strings.Contains(raw, "@"):
		return "the URL (not shown: it may hold a password)"
	case parseErr != nil:
		return strconv.Quote(raw)
	}
	if _, has := u.User.Password(); has {
		return strconv.Quote(u.Redacted())
	}
	return strconv.Quote(raw)
}

// checkHostName checks the form of a host name that is not an address
// literal: what DNS can carry (RFC 1035: labels of 1 to 63 bytes, 253 in
// all) and only letters, digits, '-' and '_' (non-ASCII letters are
// allowed: the HTTP client sends them as IDNA).
func checkHostName(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 {
		return fmt.Sprintf("host name of %d bytes is too long; at most 253", len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return fmt.Sprintf("host name %q has an empty label", host)
		case len(label) > 63:
			return fmt.Sprintf("host name label %.20q... of %d bytes is too long; at most 63", label, len(label))
		}
		for _, r := range label {
			if r < utf8.RuneSelf && !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("host name %q contains %q; use letters, digits, '-' and '.'", host, r)
			}
			if r >= utf8.RuneSelf && !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r) {
				return fmt.Sprintf("host name %q contains %U; use letters, digits, '-' and '.'", host, r)
			}
		}
	}
	return ""
}

// checkText checks a single-line text a tenant chooses (a webhook's name
// or description), which the relay shows in tables, logs and terminals:
// valid UTF-8, at most max characters, and no character that could change
// how it or what follows it is displayed: C0 controls (NUL, line breaks,
// ESC starting terminal sequences), DEL, C1 controls, and the Unicode
// bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E,
// U+2066 to U+2069) that make a text read differently from its bytes.
// It returns the problem, or "".
func checkText(s string, max int) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8 text"
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fmt.Sprintf("%d characters is too long; at most %d", n, max)
	}
	for i, r := range s {
		if unsafeRune(r) {
			kind := "control character"
			if unicode.Is(unicode.Bidi_Control, r) {
				kind = "bidirectional control character"
			}
			return fmt.Sprintf("contains the %s %U at byte %d; use plain single-line text", kind, r, i)
		}
	}
	return ""
}

// checkNameRunes refuses, in a name checkText took, the characters that
// do not show: format characters (U+200B ZERO WIDTH SPACE, U+2060 WORD
// JOINER, U+FEFF, U+00AD SOFT HYPHEN, ...) but the joiners that scripts
// and emoji sequences need (U+200C, U+200D), and spaces other than the
// plain one and the ideographic one (U+00A0 NO-BREAK SPACE, U+2000 to
// U+200A, ...). A company's names are told apart by what shows: "My
// receiver" with a no-break space or a zero-width space reads as "My
// receiver", which the name's uniqueness would not catch. It returns the
// problem, or "".
func checkNameRunes(s string) string {
	for i, r := range s {
		switch {
		case r == 0x200c || r == 0x200d:
		case unicode.Is(unicode.Cf, r):
			return fmt.Sprintf("contains the invisible character %U at byte %d; use only characters that show", r, i)
		case (unicode.IsSpace(r) || unicode.Is(unicode.Zs, r)) && r != ' ' && r != 0x3000:
			return fmt.Sprintf("contains the space character %U at byte %d; use plain spaces", r, i)
		}
	}
	return ""
}

func unsafeRune(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || unicode.Is(unicode.Bidi_Control, r)
}

// checkDatabaseURL accepts a postgres:// URL or a key=value connection
// string. Problems never quote the value, which may hold a password.
func checkDatabaseURL(p *problems, key, s string) {
	if s == "" {
		return
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			p.add(key, "cannot be parsed as a URL")
			return
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			p.add(key, "scheme %q is not postgres or postgresql", u.Scheme)
		}
		return
	}
	if !strings.Contains(s, "=") {
		p.add(key, "not a PostgreSQL URL (postgres://user:password@host:5432/db) or key=value connection string")
	}
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// Warnings returns problems that do not stop the relay but deserve
// attention, one line each, starting with the key.
func (c *Config) Warnings() []string {
	var w []string
	for i, e := range c.Webhooks.Endpoints {
		key := fmt.Sprintf("webhooks.endpoints[%d]", i)
		if u, problem := checkWebhookURL(e.URL); problem == "" && u.Scheme == "http" && !c.Production {
			w = append(w, fmt.Sprintf("%s.url: %s is not HTTPS; payloads may contain personal data", key, e.URL))
		}
		if e.Secret == "" {
			w = append(w, fmt.Sprintf("%s: no secret; receivers cannot verify requests", key))
		}
	}
	if c.Webhooks.Source == SourceFile && len(c.Webhooks.Endpoints) == 0 {
		if c.Admin.Listen != "" {
			w = append(w, "webhooks.endpoints: none configured; events go only to webhooks created through the admin API")
		} else {
			w = append(w, "webhooks.endpoints: none configured and the admin API is off; no webhook takes an event, so none is delivered or stored")
		}
	}
	if c.Admin.Listen != "" && c.Secrets.Key == "" {
		w = append(w, "secrets.key: not set; webhook secrets are stored in plain text in the relay's schema (set RELAY_SECRETS__KEY to encrypt them)")
	}
	if c.Mapping.ReplaceDefaults && len(c.Mapping.Rules) == 0 {
		w = append(w, "mapping.rules: empty while mapping.replace_defaults is true; no events will be produced")
	}
	return append(w, c.envWarnings...)
}

// CheckEvents reports webhook event types that are not in known, the event
// types the mapping rules produce. Each problem names the endpoint, the
// unknown type and the known types.
func (c *Config) CheckEvents(known []string) error {
	set := make(map[string]bool, len(known))
	for _, k := range known {
		set[k] = true
	}
	knownText := strings.Join(slices.Sorted(maps.Keys(set)), ", ")
	if knownText == "" {
		knownText = "none"
	}
	var p problems
	for i, e := range c.Webhooks.Endpoints {
		for j, ev := range e.Events {
			if !set[ev] {
				p.add(fmt.Sprintf("webhooks.endpoints[%d].events[%d]", i, j),
					"unknown event type %q for webhook %q of company %d; known types: %s", ev, e.Name, e.CompanyID, knownText)
			}
		}
	}
	return p.err()
}

// CheckFilterFields reports webhook filters that read a data field none of
// the webhook's event types has, as the admin API refuses them: such a
// filter could never pass. fields gives each event type's data fields, from
// the rules.
func (c *Config) CheckFilterFields(fields map[string][]string) error {
	var p problems
	for i, e := range c.Webhooks.Endpoints {
		if e.Filter == "" {
			continue
		}
		sub := make(map[string][]string, len(e.Events))
		for _, ev := range e.Events {
			sub[ev] = fields[ev]
		}
		if _, err := mapper.CompileFilter(e.Filter, sub); err != nil {
			p.add(fmt.Sprintf("webhooks.endpoints[%d].filter", i), "%v", err)
		}
	}
	return p.err()
}

// problems collects "key: problem" lines.
type problems []string

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, key+": "+fmt.Sprintf(format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return joinLines(p)
}

func oneOf(p *problems, key, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		p.add(key, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
}

func positive(p *problems, key string, d time.Duration) {
	if d <= 0 {
		p.add(key, "must be > 0, got %s", d)
	}
}

// checkListen accepts "" (off) or a host:port with a numeric port, such as
// ":9464" or "127.0.0.1:9464".
func checkListen(p *problems, key, addr string) {
	if addr == "" {
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(key, "%q is not host:port (for example \":9464\" or \"127.0.0.1:9464\"; \"\" turns the endpoints off)", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(key, "%q: port %q is not a number from 0 to 65535", addr, port)
	}
}

// checkStandardWebhooks checks standard_webhooks: it needs a secret (the
// signatures are keyed with it), and the webhook's own headers may not
// name the Standard Webhooks headers the relay then sets.
func checkStandardWebhooks(p *problems, w Webhook) {
	if !w.StandardWebhooks {
		return
	}
	if w.Secret == "" {
		p.add("standard_webhooks", "needs a secret: Standard Webhooks signatures are keyed with it")
	}
	for _, name := range slices.Sorted(maps.Keys(w.Headers)) {
		switch strings.ToLower(name) {
		case "webhook-id", "webhook-timestamp", "webhook-signature":
			p.add("headers["+name+"]", "set by the relay when standard_webhooks is on")
		}
	}
}
