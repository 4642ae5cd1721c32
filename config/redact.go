package config

import (
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/smartmaintenance/relay/mapper"
)

// Mask replaces secret values in Redacted.
const Mask = "xxxxx"

// Redacted returns a deep copy of c that is safe to print: webhook secrets,
// webhook header values (they usually carry credentials) and database
// passwords are replaced by Mask. Empty secrets stay empty, so the copy
// still shows which webhooks have none.
func (c *Config) Redacted() *Config {
	r := *c
	r.Database.URL = redactDatabaseURL(c.Database.URL)
	r.Database.StateURL = redactDatabaseURL(c.Database.StateURL)
	r.Delivery.RetrySchedule = slices.Clone(c.Delivery.RetrySchedule)
	r.envWarnings = slices.Clone(c.envWarnings)
	r.Delivery.AllowNetworks = slices.Clone(c.Delivery.AllowNetworks)
	r.Admin.Tokens = slices.Clone(c.Admin.Tokens)
	if r.Secrets.Key != "" {
		r.Secrets.Key = Mask
	}
	r.Secrets.PreviousKeys = make([]string, len(c.Secrets.PreviousKeys))
	for i := range r.Secrets.PreviousKeys {
		r.Secrets.PreviousKeys[i] = Mask
	}

	if c.Mapping.Rules != nil {
		r.Mapping.Rules = make([]mapper.Rule, len(c.Mapping.Rules))
		for i, rule := range c.Mapping.Rules {
			rule.On = slices.Clone(rule.On)
			if rule.Data != nil {
				data := make([]map[string]string, len(rule.Data))
				for j, entry := range rule.Data {
					data[j] = maps.Clone(entry)
				}
				rule.Data = data
			}
			r.Mapping.Rules[i] = rule
		}
	}

	if c.Webhooks.Endpoints != nil {
		r.Webhooks.Endpoints = make([]Webhook, len(c.Webhooks.Endpoints))
		for i, e := range c.Webhooks.Endpoints {
			e.Events = slices.Clone(e.Events)
			if e.Secret != "" {
				e.Secret = Mask
			}
			if e.Headers != nil {
				h := make(map[string]string, len(e.Headers))
				for name := range e.Headers {
					h[name] = Mask
				}
				e.Headers = h
			}
			r.Webhooks.Endpoints[i] = e
		}
	}
	return &r
}

// keywordPasswordRE finds password=... in a key=value connection string,
// quoted ('...' with \' escapes) or not.
var keywordPasswordRE = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)

// redactDatabaseURL masks the password of a postgres:// URL (in the user
// info and in a password query parameter) or of a key=value string.
func redactDatabaseURL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil && strings.Contains(s, "://") {
		// Cannot tell where the password is; hide everything.
		return Mask
	}
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return keywordPasswordRE.ReplaceAllString(s, "${1}"+Mask)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", Mask)
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// SecretKey reports whether key (as problems name it: "secrets.key",
// "webhooks.endpoints[0].headers[Authorization]") is or is inside a field
// tagged secret:"true", whose values no message may print.
func SecretKey(key string) bool {
	t := configType
	for _, seg := range keySegments(key) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := fieldByKey(t, seg)
			if !ok {
				return false
			}
			if f.Tag.Get("secret") == "true" {
				return true
			}
			t = f.Type
		case reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem() // seg is an index or a map key
		default:
			return false
		}
	}
	return false
}

// keySegments splits "a.b[0].c[X.Y]" into a, b, 0, c, X.Y: dots separate
// fields, brackets hold list indexes and map keys (which may hold dots).
func keySegments(key string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '.':
			flush()
		case '[':
			flush()
			end := strings.IndexByte(key[i:], ']')
			if end < 0 {
				end = len(key) - i
			}
			out = append(out, key[i+1:i+end])
			i += end
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}
