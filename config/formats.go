package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/smartmaintenance/relay/message"
)

// checkWebhookFormat checks a webhook's payload format: "" (raw) or one
// of message.Formats.
func checkWebhookFormat(p *problems, format string) {
	if format != "" && !message.Known(format) {
		p.add("format", "%q is not a payload format; use one of %s", format, strings.Join(message.Formats, ", "))
	}
}

// validateFormats checks the formats section: an absolute platform URL, and
// templates of known event types, each listed once, that parse.
func (c *Config) validateFormats(p *problems) {
	f := c.Formats
	if f.PlatformURL != "" {
		u, err := url.Parse(f.PlatformURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("formats.platform_url", "%q is not an absolute http(s) URL (e.g. https://smartmaintenance.example.com)", f.PlatformURL)
		}
	}
	if strings.TrimSpace(f.LinkText) == "" {
		p.add("formats.link_text", "required (the label of a message's link)")
	} else if problem := checkText(f.LinkText, 75); problem != "" {
		p.add("formats.link_text", "%s", problem)
	}
	known := message.Events()
	for _, r := range c.Mapping.Rules {
		known = append(known, r.Event)
	}
	seen := map[string]int{}
	for i, t := range f.Templates {
		key := fmt.Sprintf("formats.templates[%d]", i)
		switch {
		case strings.TrimSpace(t.Event) == "":
			p.add(key+".event", "required (the event type whose messages the templates make)")
			continue
		case !slices.Contains(known, t.Event):
			slices.Sort(known)
			p.add(key+".event", "%q is not an event type of the rules; known: %s", t.Event, strings.Join(slices.Compact(known), ", "))
			continue
		}
		if first, dup := seen[t.Event]; dup {
			p.add(key+".event", "%q is already given by formats.templates[%d]", t.Event, first)
			continue
		}
		seen[t.Event] = i
		if t.Summary == "" && t.Link == "" {
			p.add(key, "neither summary nor link is set")
			continue
		}
		_, err := message.New(message.Options{Templates: []message.Template{t}})
		var te *message.TemplateError
		switch {
		case errors.As(err, &te):
			p.add(key+"."+te.Field, "%s", oneLineText(te.Err.Error()))
		case err != nil:
			p.add(key, "%s", oneLineText(err.Error()))
		}
	}
}

// oneLineText folds s onto one line.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }
