package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/smartmaintenance/relay/store"
)

// page is what every template gets.
type page struct {
	Title       string
	Nav         string
	Prefix      string
	Signed      bool
	CSRF        string
	ActorName   string
	Operator    bool
	CompanyName string
	CompanyID   int64
	Loc         *time.Location
	Now         time.Time
	Flash       []flash
	Data        any
}

func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		"asset":          func(name string) string { return c.assetURL[name] },
		"when":           when,
		"ago":            ago,
		"iso":            func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"overlapChoices": func() []overlapChoice { return overlapChoices },
		"rate": func(h store.WebhookStats) string {
			if h.Attempts24h == 0 {
				return "—"
			}
			return fmt.Sprintf("%.0f%%", 100*float64(h.Succeeded24h)/float64(h.Attempts24h))
		},
		"rateClass": func(h store.WebhookStats) string {
			if h.Attempts24h == 0 {
				return "muted"
			}
			r := float64(h.Succeeded24h) / float64(h.Attempts24h)
			switch {
			case r >= 0.95:
				return "good"
			case r >= 0.7:
				return "warn"
			}
			return "bad"
		},
		"codeClass": func(code int) string {
			switch {
			case code >= 200 && code < 300:
				return "good"
			case code == 0 || code >= 500:
				return "bad"
			}
			return "warn"
		},
		"ms": func(d time.Duration) string {
			if d < 10*time.Millisecond {
				return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
			}
			return fmt.Sprintf("%d ms", d.Milliseconds())
		},
		"sortedKeys": func(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) },
		"formatName": formatName,
		"exact":      exactBody,
		"has":        func(m map[string]bool, k string) bool { return m[k] },
		"join":       strings.Join,
		"add":        func(a, b int) int { return a + b },
		"short":      shortID,
		"isHTTP":     func(u string) bool { return strings.HasPrefix(strings.ToLower(strings.TrimSpace(u)), "http://") },
	}
}

func (c *Console) parseTemplates() error {
	layout, err := template.New("layout.html").Funcs(c.funcs()).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("console: parse layout: %w", err)
	}
	// Files named _*.html are parts that pages include ({{template}}),
	// not pages.
	parts, err := fs.Glob(templateFS, "templates/_*.html")
	if err != nil {
		return err
	}
	if len(parts) > 0 {
		if layout, err = layout.ParseFS(templateFS, parts...); err != nil {
			return fmt.Errorf("console: parse %v: %w", parts, err)
		}
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	c.pages = map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || strings.HasPrefix(base, "_") {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("console: parse %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return nil
}

// when is a time in the company's zone, e.g. "4 Dec 2026, 21:03:07 WIB".
func when(loc *time.Location, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(loc).Format("2 Jan 2006, 15:04:05 MST")
}

// shortID is the end of a delivery id, as the pages show it: the start is
// the commit time, which deliveries made within a minute share.
func shortID(s string) string { return s[max(0, len(s)-8):] }

// ago is a time relative to now, e.g. "3 min ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < 45*time.Second && future:
		return "in less than a minute"
	case d < 45*time.Second:
		return "just now"
	case d < 90*time.Minute:
		s = fmt.Sprintf("%d min", max(1, int(d.Round(time.Minute)/time.Minute)))
	case d < 36*time.Hour:
		s = fmt.Sprintf("%d h", int(d.Round(time.Hour)/time.Hour))
	default:
		s = fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// exactBody is a request body as it was sent, byte for byte (receivers sign
// and verify these bytes, so a re-indented copy would not verify), cut at
// 16 KiB.
func exactBody(b []byte) string {
	const limit = 16 << 10
	if len(b) > limit {
		return string(b[:limit]) + "\n… (cut)"
	}
	return string(b)
}

// render writes a page; pages are never cached (they may show a secret).
func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	t, ok := c.pages[name]
	if !ok {
		panic("console: no template " + name)
	}
	p.Prefix = c.o.Prefix
	if p.Loc == nil {
		p.Loc = time.UTC
	}
	if p.Now.IsZero() {
		p.Now = c.o.Now()
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("console: render", "page", name, "error", err)
		http.Error(w, "internal error; the relay's log has the cause", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(visibleControls(buf.Bytes()))
}

// visibleControls shows control characters (terminal escapes among them)
// as their Unicode pictures, e.g. ESC as ␛: html/template escapes markup
// but passes them through, and a page shows them as nothing. The page's own
// markup has none besides tab and newline.
func visibleControls(b []byte) []byte {
	clean := true
	for _, c := range b {
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+64)
	for _, c := range b {
		switch {
		case c == 0x7f:
			out = append(out, "\u2421"...)
		case c < 0x20 && c != '\t' && c != '\n' && c != '\r':
			out = utf8.AppendRune(out, rune(0x2400+int(c)))
		default:
			out = append(out, c)
		}
	}
	return out
}

// formatName says what a webhook's payload format sends.
func formatName(f string) string {
	switch f {
	case "slack":
		return "Slack message"
	case "teams":
		return "Microsoft Teams message"
	}
	return "Raw JSON (the event payload)"
}
