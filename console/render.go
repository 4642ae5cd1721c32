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
	"unicode"
	"unicode/utf8"

	"github.com/smartmaintenance/relay/config"
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
		"maxDescription": func() int { return config.MaxDescriptionChars },
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

// visibleControls shows the characters that change how a text reads
// without being seen, so that what a tenant or a receiver chose reads as
// what it is: html/template escapes markup but passes them through. C0
// controls (terminal escapes among them) and DEL are shown as their Unicode
// pictures, e.g. ESC as ␛; C1 controls (U+009B is a terminal's CSI) and the
// bidirectional controls, which have no pictures and would reorder the
// text around them ("\u202egnp.exe" reads as "exe.png"), as their code
// point in the CLI's notation, e.g. \u202e. The page's own markup has none
// besides tab and newline.
func visibleControls(b []byte) []byte {
	i := nextHidden(b)
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+64)
	for ; i >= 0; i = nextHidden(b) {
		r, size := utf8.DecodeRune(b[i:])
		out = appendVisible(append(out, b[:i]...), r)
		b = b[i+size:]
	}
	return append(out, b...)
}

// nextHidden is the index in b of the first character visibleControls
// shows differently, or -1. It runs over every page, so it looks at bytes
// and decodes only at the lead bytes of C1 (0xc2) and bidirectional
// controls (0xd8, 0xe2), which no other byte of UTF-8 can be mistaken for.
func nextHidden(b []byte) int {
	for i, c := range b {
		switch {
		case c < 0x20 && c != '\t' && c != '\n' && c != '\r', c == 0x7f:
			return i
		case c == 0xc2, c == 0xd8, c == 0xe2:
			if r, _ := utf8.DecodeRune(b[i:]); hidden(r) {
				return i
			}
		}
	}
	return -1
}

// hidden reports whether r is a control (C0 but tab and line breaks, DEL,
// C1) or a bidirectional control (Unicode's Bidi_Control: U+061C, U+200E,
// U+200F, U+202A to U+202E, U+2066 to U+2069).
func hidden(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case r < 0x20 || r >= 0x7f && r <= 0x9f:
		return true
	}
	return unicode.Is(unicode.Bidi_Control, r)
}

// appendVisible appends how the page shows the hidden character r.
func appendVisible(out []byte, r rune) []byte {
	switch {
	case r == 0x7f:
		return append(out, "\u2421"...) // ␡
	case r < 0x20:
		return utf8.AppendRune(out, 0x2400+r) // ␀ to ␟
	}
	return fmt.Appendf(out, `\u%04x`, r)
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
